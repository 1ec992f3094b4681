"""A saved model's ``manifest.json``: what family it is and what it was built on (no torch needed to read it).

Promotion reads it on every run to tag registry versions; importing :mod:`models.contract` for that
would import torch (seconds) in a step that usually loads no model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def read_manifest(directory: Path) -> dict[str, Any]:
    """Reads ``manifest.json``; raises FileNotFoundError naming the directory when absent."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved model (no {MANIFEST})")
    return json.loads(path.read_text())


def write_manifest(directory: Path, family: str, extra: dict[str, Any] | None = None) -> None:
    """Writes ``manifest.json`` (family, library versions and any extra fields)."""
    import tokenizers
    import torch
    import transformers

    data = {"family": family, "format": 1, "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, **(extra or {})}
    (Path(directory) / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))
