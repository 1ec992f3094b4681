"""Where the project lives: its root, its MLflow store, and the name its models are registered under."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MLFLOW_DIRNAME = ".mlflow"
REGISTERED_NAME = "creative-writer"  # the MLflow registered model the champion is an alias of
TRACKER = "cw-mlflow-tracker"  # the experiment tracker's component name in every stack (stack_configs/*.yaml)


def mlflow_dir(root: Path = PROJECT_ROOT) -> Path:
    """The project's MLflow folder (SQLite tracking store, registry and artifacts)."""
    return root / MLFLOW_DIRNAME


def tracking_uri(root: Path = PROJECT_ROOT) -> str:
    """The MLflow tracking (and registry) URI of the project: ``sqlite:////abs/path/.mlflow/mlflow.db``."""
    return f"sqlite:///{mlflow_dir(root)}/mlflow.db"


def project_version(root: Path = PROJECT_ROOT) -> str:
    """The project's version: ``pyproject.toml``'s in a checkout, else the installed distribution's."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    from importlib.metadata import version

    return version(REGISTERED_NAME)
