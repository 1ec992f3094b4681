"""Step: train the attention seq2seq, log it to MLflow, return its directory as a model artifact."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType

from infra.zenml_utils import log_step_metadata


@step
def train_seq2seq(
    split: pd.DataFrame,
    tokenizer: Path,
    model: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
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
        model: ``Seq2SeqConfig`` fields (emb_dim, hidden, layers, attention, dropout, ...).
        train_config: ``TrainConfig`` fields (epochs, batch_size, lr, bf16, ...).
        heatmap_prompts: Validation prompts shown in the attention heatmap.

    Returns:
        The saved model directory, the per-epoch history and the attention heatmap.
    """
    # torch, transformers and mlflow load here, not at import: a fully cached run never pays for them.
    import mlflow

    from models.contract import GenerationSettings
    from models.mlflow_logging import log_pyfunc
    from models.plots import attention_heatmaps, training_curves
    from models.seq2seq import build_writer
    from models.tokenizer import load_tokenizer
    from models.training import TrainConfig, train

    writer = build_writer(load_tokenizer(tokenizer), **(model or {}))
    cfg = TrainConfig(**(train_config or {}))
    train_part, val_part = split[split["split"] == "train"], split[split["split"] == "validation"]
    mlflow.log_params({"family": "seq2seq", **{f"model.{k}": v for k, v in (model or {}).items()},
                       **{f"train.{k}": v for k, v in (train_config or {}).items()}})
    history = train(writer, train_part, val_part, cfg, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e))
    best = history.loc[history["val_loss"].idxmin()]
    writer.metadata = {"val_ppl_word": float(best["val_ppl_word"]), "val_loss": float(best["val_loss"])}
    model_dir = writer.save(Path(tempfile.mkdtemp(prefix="seq2seq-")))
    mlflow.log_image(training_curves(history, "seq2seq"), "training_curves.png")
    maps = []
    if writer.net.attention is not None:
        for _, row in val_part.head(heatmap_prompts).iterrows():
            settings = GenerationSettings(max_new_tokens=40, form=row["form"], genre=row["genre"], seed=0)
            maps.append((row["prompt"], *writer.attention_map(row["prompt"], settings)))
    heatmap = attention_heatmaps(maps) if maps else training_curves(history, "seq2seq (no attention)")
    mlflow.log_image(heatmap, "attention_heatmap.png")
    info = log_pyfunc(model_dir)
    log_step_metadata({"best_val_ppl_word": float(best["val_ppl_word"]), "epochs": len(history),
                       "mlflow_model_uri": info.model_uri}, artifact_name="seq2seq_model")
    return model_dir, history, heatmap
