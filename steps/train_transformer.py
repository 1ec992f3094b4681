"""Step: fine-tune the pretrained base (LoRA) or train GPT-2 from scratch, log it to MLflow, return its directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType

from infra.zenml_utils import log_step_metadata
from models.configs import TransformerConfig
from steps.tracking import tracked
from training.config import TransformerTrainConfig


@step(**tracked())
def train_transformer(
    split: pd.DataFrame,
    tokenizer: Path,
    model: TransformerConfig | None = None,
    train_config: TransformerTrainConfig | None = None,
) -> tuple[
    Annotated[Path, ArtifactConfig(name="transformer_model", artifact_type=ArtifactType.MODEL)],
    Annotated[pd.DataFrame, "transformer_history"],
    Annotated[Image.Image, "transformer_curves"],
]:
    """Trains with the Hugging Face ``Trainer`` (early stopping on validation), logs to the stack's MLflow run.

    Args:
        split: The split corpus.
        tokenizer: The shared tokenizer directory (from scratch; a ``base_model`` brings its own).
        model: The model settings (base_model spec, adapter, lora_*, or n_layer/n_embd/... from scratch).
        train_config: The optimisation settings (epochs, batch_size, lr, time_budget_s, processes, ...).

    Returns:
        The saved model directory, the per-epoch history and the training curves.
    """
    import mlflow

    from models.tokenizer import load_tokenizer
    from models.transformer import build_transformer, parameter_count
    from training.tracking import finish_training, log_training_params
    from training.transformer_ddp import train

    train_part, val_part = split[split["split"] == "train"], split[split["split"] == "validation"]
    writer = build_transformer(load_tokenizer(tokenizer), model or TransformerConfig(),
                               forms=sorted(train_part["form"].unique()), genres=sorted(train_part["genre"].unique()))
    cfg = train_config or TransformerTrainConfig()
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
