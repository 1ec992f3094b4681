"""Reading the project's YAML files with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: Path, error: type[Exception], what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is ``{}``).

    Raises:
        error: If the file is missing, not YAML, or not a mapping (the message names the file).
    """
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level")
    return data
