"""Step: adversarial fine-tuning of the seq2seq generator (the GAN family), with the MLE-vs-GAN comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType

from infra.zenml_utils import log_step_metadata
from models.configs import DiscriminatorConfig, GanConfig, Seq2SeqShape
from steps.tracking import tracked
from training.config import TrainConfig


@step(**tracked())
def train_gan(
    split: pd.DataFrame,
    tokenizer: Path,
    seq2seq_model: Path,
    gan: GanConfig | None = None,
    discriminator: DiscriminatorConfig | None = None,
    generator: Seq2SeqShape | None = None,
    pretrain: TrainConfig | None = None,
    temperatures: list[float] | None = None,
    comparison_prompts: int = 40,
) -> tuple[
    Annotated[Path, ArtifactConfig(name="gan_model", artifact_type=ArtifactType.MODEL)],
    Annotated[pd.DataFrame, "gan_history"],
    Annotated[pd.DataFrame, "gan_comparison"],
    Annotated[Image.Image, "gan_tradeoff"],
]:
    """Trains the GAN, compares it with its MLE start at several temperatures, logs everything to MLflow.

    Args:
        split: The split corpus.
        tokenizer: The shared tokenizer directory (for a generator pre-trained here).
        seq2seq_model: The trained seq2seq model (the starting generator when ``start_from: seq2seq``).
        gan: The adversarial-training settings (reward, rollouts, rounds, learning rates, ...).
        discriminator: The discriminator's size.
        generator: The size of a generator pre-trained here (``start_from: scratch``).
        pretrain: That MLE pre-training's settings (its epochs are ``pretrain_epochs``).
        temperatures: The sweep of the comparison.
        comparison_prompts: Validation prompts of the comparison.

    Returns:
        The GAN model directory, per-round history, the comparison table and the trade-off plot.
    """
    from dataclasses import asdict

    import mlflow

    from registry.mlflow_model import log_pyfunc
    from training.gan_study import run_gan_study

    gan_cfg, disc_cfg = gan or GanConfig(), discriminator or DiscriminatorConfig()
    result = run_gan_study(split, tokenizer, seq2seq_model, gan_cfg, disc_cfg, generator or Seq2SeqShape(),
                           pretrain or TrainConfig(), temperatures or [0.7, 0.85, 1.0, 1.2], comparison_prompts,
                           on_round=lambda r, m: mlflow.log_metrics(m, step=r))
    mlflow.log_params({"family": "gan", **{f"gan.{k}": v for k, v in asdict(gan_cfg).items()},  # defaults too
                       **{f"discriminator.{k}": v for k, v in asdict(disc_cfg).items()}})
    mlflow.log_table(result.comparison, "gan_comparison.json")
    mlflow.log_image(result.plot, "gan_tradeoff.png")
    model_uri = log_pyfunc(result.model_dir).model_uri
    log_step_metadata({**result.summary, "mlflow_model_uri": model_uri}, artifact_name="gan_model")
    return result.model_dir, result.history, result.comparison, result.plot
