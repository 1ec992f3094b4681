"""What a training step logs to its MLflow run: the resolved settings, the curves and the saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from registry.mlflow_model import log_pyfunc


def log_training_params(family: str, model: Any, train_config: Any) -> None:
    """Logs a training step's family and its resolved settings to the active MLflow run (``model.*``, ``train.*``).

    Args:
        family: The model family.
        model: The model's config as built (a dataclass: every field, defaults included) or a dict.
        train_config: The training config as built (likewise).
    """
    import dataclasses

    import mlflow

    def fields(config: Any) -> dict[str, Any]:
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})

    mlflow.log_params({"family": family, **{f"model.{k}": v for k, v in fields(model).items()},
                       **{f"train.{k}": v for k, v in fields(train_config).items()}})


def finish_training(writer: Any, history: Any, prefix: str) -> tuple[Path, Any, str]:
    """Saves a trained writer and logs its curves and pyfunc to the active MLflow run.

    The best epoch's validation metrics go into the model's manifest, so they travel with it.

    Args:
        writer: A trained model of any family (``metadata`` dict, ``save(dir)``).
        history: The per-epoch history (``epoch, train_loss, val_loss, val_ppl_word, ...``).
        prefix: Name of the temporary model directory and title of the curves.

    Returns:
        The saved model directory, the training-curves image and the logged model's URI.
    """
    import tempfile

    import mlflow

    from training.plots import training_curves

    best = history.loc[history["val_loss"].idxmin()]
    writer.metadata = {**writer.metadata, "val_ppl_word": float(best["val_ppl_word"]),
                       "val_loss": float(best["val_loss"]), "epochs": len(history)}
    model_dir = writer.save(Path(tempfile.mkdtemp(prefix=f"{prefix}-")))
    curves = training_curves(history, prefix)
    mlflow.log_image(curves, "training_curves.png")
    return model_dir, curves, log_pyfunc(model_dir).model_uri


def save_untuned(writer: Any, prefix: str) -> Path:
    """Saves a writer before any training: the untuned-base candidate (a LoRA adapter starts as the identity).

    Its manifest says ``untuned: true``; the evaluation scores it beside the fine-tune, on the same prompts
    and seeds, so a fine-tune has to beat its own base.

    Args:
        writer: A freshly built writer (``metadata`` dict, ``save(dir)``).
        prefix: Name of the temporary model directory.

    Returns:
        The saved directory.
    """
    import tempfile

    before = dict(writer.metadata)
    writer.metadata = {**before, "untuned": True}
    try:
        return writer.save(Path(tempfile.mkdtemp(prefix=f"{prefix}-")))
    finally:
        writer.metadata = before
