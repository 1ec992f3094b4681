"""The ``creative-writer`` console command: ``python run.py`` of the checkout it is run in.

``pip install .`` installs the project's packages and this command. The pipelines keep their state (the
ZenML repository, the MLflow store, ``configs/``, ``outputs/``) in a checkout, so the command finds the
checkout from the current directory upwards (a folder holding ``run.py``, ``configs/`` and
``pyproject.toml``), or takes it from ``$CW_PROJECT_ROOT``, and runs that checkout's ``run.py`` with the
checkout first on the import path. ``creative-writer --version`` works anywhere.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

ROOT_ENV = "CW_PROJECT_ROOT"
MARKERS = ("run.py", "configs", "pyproject.toml")


def find_checkout(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``run.py``, ``configs/`` and ``pyproject.toml``."""
    for folder in (start, *start.parents):
        if all((folder / marker).exists() for marker in MARKERS):
            return folder
    return None


def installed_version() -> str:
    """The installed distribution's version (what ``pip install .`` read from ``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("creative-writer")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Runs the checkout's ``run.py`` with ``argv`` (default: the command line); returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    given = os.environ.get(ROOT_ENV)
    root = Path(given).expanduser().resolve() if given else find_checkout(Path.cwd().resolve())
    if root is None or not all((root / marker).exists() for marker in MARKERS):
        if args == ["--version"]:
            print(f"creative-writer {installed_version()}")
            return 0
        where = f"${ROOT_ENV}={given}" if given else f"{Path.cwd()} or a folder above it"
        print(f"creative-writer: no checkout of the project at {where} (a folder with run.py, configs/ and "
              f"pyproject.toml): run it inside a clone, or set {ROOT_ENV}", file=sys.stderr)
        return 2
    os.chdir(root)
    sys.path.insert(0, str(root))
    sys.argv = [str(root / "run.py"), *args]
    try:
        runpy.run_path(str(root / "run.py"), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
