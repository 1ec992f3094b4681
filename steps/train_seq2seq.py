"""Step: train the attention seq2seq, log it to MLflow, return its directory as a model artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType

from infra.zenml_utils import log_step_metadata
from models.configs import Seq2SeqShape
from steps.tracking import tracked
from training.config import TrainConfig


@step(**tracked())
def train_seq2seq(
    split: pd.DataFrame,
    tokenizer: Path,
    model: Seq2SeqShape | None = None,
    train_config: TrainConfig | None = None,
    heatmap_prompts: int = 2,
) -> tuple[
    Annotated[Path, ArtifactConfig(name="seq2seq_model", artifact_type=ArtifactType.MODEL)],
    Annotated[pd.DataFrame, "seq2seq_history"],
    Annotated[Image.Image, "seq2seq_attention"],
]:
    """Trains on the train split, early-stops on validation, logs params/metrics/curves/model to MLflow.

    Args:
        split: The split corpus.
        tokenizer: The shared tokenizer directory.
        model: The network's size and attention (emb_dim, hidden, layers, attention, dropout, ...).
        train_config: The optimisation settings (epochs, batch_size, lr, bf16, ...).
        heatmap_prompts: Validation prompts shown in the attention heatmap.

    Returns:
        The saved model directory, the per-epoch history and the attention heatmap.
    """
    # torch, transformers and mlflow load here, not at import: a fully cached run never pays for them.
    from dataclasses import asdict

    import mlflow

    from models.contract import GenerationSettings
    from models.seq2seq import build_writer
    from models.tokenizer import load_tokenizer
    from training.plots import attention_heatmaps
    from training.seq2seq import train
    from training.tracking import finish_training, log_training_params

    writer = build_writer(load_tokenizer(tokenizer), **asdict(model or Seq2SeqShape()))
    train_part, val_part = split[split["split"] == "train"], split[split["split"] == "validation"]
    cfg = train_config or TrainConfig()
    log_training_params("seq2seq", writer.net.config, cfg)  # every setting, defaults included
    history = train(writer, train_part, val_part, cfg,
                    on_epoch=lambda e, m: mlflow.log_metrics(m, step=e))
    model_dir, curves, model_uri = finish_training(writer, history, "seq2seq")
    maps = []
    if writer.net.attention is not None:
        for _, row in val_part.head(heatmap_prompts).iterrows():
            settings = GenerationSettings(max_new_tokens=40, form=row["form"], genre=row["genre"], seed=0)
            maps.append((row["prompt"], *writer.attention_map(row["prompt"], settings)))
    heatmap = attention_heatmaps(maps) if maps else curves
    mlflow.log_image(heatmap, "attention_heatmap.png")
    log_step_metadata({"best_val_ppl_word": writer.metadata["val_ppl_word"], "epochs": len(history),
                       "mlflow_model_uri": model_uri}, artifact_name="seq2seq_model")
    return model_dir, history, heatmap
