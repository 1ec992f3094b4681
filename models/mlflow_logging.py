"""Logging a saved model directory to MLflow as a pyfunc with a params schema."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from models.contract import GenerationSettings

PYFUNC_CODE = Path(__file__).with_name("mlflow_pyfunc.py")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def signature() -> Any:
    """Input: a ``prompt`` string column; output: the text; params: every generation setting.

    MLflow passes params to ``predict`` only when the signature declares them (and drops unknown ones).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    kinds = {int: "long", float: "double", str: "string", bool: "boolean"}
    defaults = GenerationSettings()
    params = [ParamSpec(f.name, kinds[type(getattr(defaults, f.name))], getattr(defaults, f.name))
              for f in fields(GenerationSettings)]
    return ModelSignature(inputs=Schema([ColSpec("string", "prompt")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema(params))


def log_pyfunc(model_dir: Path, name: str = "model") -> Any:
    """Logs ``model_dir`` as a "models from code" pyfunc to the active MLflow run.

    Args:
        model_dir: A saved model directory (any family).
        name: The logged model's name.

    Returns:
        MLflow's ``ModelInfo`` (its ``model_uri`` is what the registry takes).
    """
    import mlflow

    return mlflow.pyfunc.log_model(
        name=name, python_model=str(PYFUNC_CODE), artifacts={"model_dir": str(model_dir)}, signature=signature(),
        code_paths=[str(PROJECT_ROOT / "models")], pip_requirements=str(PROJECT_ROOT / "requirements.txt"),
    )
