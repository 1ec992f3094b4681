"""Logging a saved model directory to MLflow as a pyfunc with a params schema."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from core.paths import PROJECT_ROOT
from models.contract import GenerationSettings

PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")


def signature() -> Any:
    """Input: a ``prompt`` string column; output: the text; params: every generation setting MLflow can type.

    MLflow passes params to ``predict`` only when the signature declares them (and drops unknown ones). Its
    params are scalars or lists; a mapping (``logit_bias``) has no param type, so it is left out: the pyfunc
    writes without a logit bias (the HTTP API takes one).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    kinds = {int: "long", float: "double", str: "string", bool: "boolean"}
    defaults = GenerationSettings()
    params = []
    for name in GenerationSettings.model_fields:
        value = getattr(defaults, name)
        if isinstance(value, dict):  # no MLflow param type for a mapping
            continue
        if isinstance(value, tuple):  # a list of strings (stop)
            params.append(ParamSpec(name, "string", list(value), shape=(-1,)))
        else:
            params.append(ParamSpec(name, kinds[type(value)], value))
    return ModelSignature(inputs=Schema([ColSpec("string", "prompt")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema(params))


MLFLOW_ADVICE = ("Add type hints to the `predict` method", "An input example was not provided")


def log_pyfunc(model_dir: Path, name: str = "model") -> Any:
    """Logs ``model_dir`` as a "models from code" pyfunc to the active MLflow run.

    Args:
        model_dir: A saved model directory (any family).
        name: The logged model's name.

    Returns:
        MLflow's ``ModelInfo`` (its ``model_uri`` is what the registry takes).
    """
    import mlflow

    # the signature is given: MLflow's advice to add type hints, or an input example (which it would run through
    # the model, loading it, while logging), does not apply; both warnings carry colour codes into log files.
    # Caught and dropped here, every other warning shown again (MLflow sets its own filters while it logs).
    with warnings.catch_warnings(record=True) as caught:
        info = mlflow.pyfunc.log_model(
            name=name, python_model=str(PYFUNC_CODE), artifacts={"model_dir": str(model_dir)},
            signature=signature(),
            # what models/ imports (weights/tiny.py writes the tiny base from corpus/ when its cache is empty)
            code_paths=[str(PROJECT_ROOT / p) for p in ("models", "weights", "corpus", "core")],
            pip_requirements=str(PROJECT_ROOT / "requirements.txt"),
        )
    for warning in caught:
        if not any(advice in str(warning.message) for advice in MLFLOW_ADVICE):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return info


def saved_model_dir(mlflow_model: Path) -> Path:
    """The saved model directory inside a downloaded MLflow pyfunc (its ``model_dir`` artifact).

    Callers load that directory with *this* checkout's model code rather than through
    ``mlflow.pyfunc.load_model``, which would import the copy of ``models/`` frozen into the logged model
    (older code lacks methods that newer code relies on; the saved directory format is versioned in its
    manifest and stays loadable).

    Raises:
        ValueError: If the MLflow model has no ``model_dir`` artifact.
    """
    import yaml

    spec = yaml.safe_load((Path(mlflow_model) / "MLmodel").read_text())
    artifacts = (spec.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
    if "model_dir" not in artifacts:
        raise ValueError(f"{mlflow_model} is not a creative-writer pyfunc (no 'model_dir' artifact in MLmodel)")
    return Path(mlflow_model) / artifacts["model_dir"]["path"]
