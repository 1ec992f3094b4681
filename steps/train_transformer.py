"""Step: fine-tune the pretrained base (LoRA) or train GPT-2 from scratch, log it to MLflow, return its directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType

from infra.zenml_utils import log_step_metadata
from steps.tracking import tracked


@step(**tracked())
def train_transformer(
    split: pd.DataFrame,
    tokenizer: Path,
    model: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
) -> tuple[
    Annotated[Path, ArtifactConfig(name="transformer_model", artifact_type=ArtifactType.MODEL)],
    Annotated[pd.DataFrame, "transformer_history"],
    Annotated[Image.Image, "transformer_curves"],
]:
    """Trains with the Hugging Face ``Trainer`` (early stopping on validation), logs to the stack's MLflow run.

    Args:
        split: The split corpus.
        tokenizer: The shared tokenizer directory (from scratch; a ``base_model`` brings its own).
        model: ``TransformerConfig`` fields (base_model spec, adapter, lora_*, or n_layer/n_embd/... from scratch).
        train_config: ``TransformerTrainConfig`` fields (epochs, batch_size, lr, time_budget_s, torch_threads, ...).

    Returns:
        The saved model directory, the per-epoch history and the training curves.
    """
    import mlflow

    from models.mlflow_logging import finish_training, log_training_params
    from models.tokenizer import load_tokenizer
    from models.transformer import TransformerConfig, build_transformer, parameter_count
    from training.transformer import TransformerTrainConfig
    from training.transformer_ddp import train

    train_part, val_part = split[split["split"] == "train"], split[split["split"] == "validation"]
    writer = build_transformer(load_tokenizer(tokenizer), TransformerConfig(**(model or {})),
                               forms=sorted(train_part["form"].unique()), genres=sorted(train_part["genre"].unique()))
    cfg = TransformerTrainConfig(**(train_config or {}))
    log_training_params("transformer", writer.config, cfg)  # every setting, defaults included
    base = writer.metadata.get("base") or {}
    total = parameter_count(writer.model)
    mlflow.log_params({"parameters": total, "layout": "chat" if writer.chat else "control",
                       "trainable_parameters": writer.metadata.get("trainable_parameters", total),
                       **{f"base.{k}": v for k, v in base.items() if k != "path"}})
    history = train(writer, train_part, val_part, cfg, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e))
    model_dir, curves, model_uri = finish_training(writer, history, "transformer")
    log_step_metadata({"best_val_ppl_word": writer.metadata["val_ppl_word"], "epochs": len(history),
                       "parameters": parameter_count(writer.model), "mlflow_model_uri": model_uri,
                       "base_model": base.get("spec", ""), "base_license": base.get("license", "")},
                      artifact_name="transformer_model")
    return model_dir, history, curves
