"""Step: fine-tune the pretrained base (LoRA) or train GPT-2 from scratch, log it to MLflow, return its directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType

from infra.zenml_utils import log_step_metadata
from models.configs import TransformerConfig
from steps.tracking import tracked
from training.config import DPOConfig, TransformerTrainConfig
from training.distill import DistillConfig

log = logging.getLogger(__name__)


@step(**tracked())
def train_transformer(
    split: pd.DataFrame,
    tokenizer: Path,
    model: TransformerConfig | None = None,
    train_config: TransformerTrainConfig | None = None,
    distill: DistillConfig | None = None,
    preferences: pd.DataFrame | None = None,
    dpo: DPOConfig | None = None,
) -> tuple[
    Annotated[Path, ArtifactConfig(name="transformer_model", artifact_type=ArtifactType.MODEL)],
    Annotated[Path, ArtifactConfig(name="transformer_base", artifact_type=ArtifactType.MODEL)],
    Annotated[pd.DataFrame, "transformer_history"],
    Annotated[Image.Image, "transformer_curves"],
    Annotated[pd.DataFrame, "distilled_pairs"],
]:
    """Trains with the Hugging Face ``Trainer`` (early stopping on validation), logs to the stack's MLflow run.

    Args:
        split: The split corpus.
        tokenizer: The shared tokenizer directory (from scratch; a ``base_model`` brings its own).
        model: The model settings (base_model spec, adapter, lora_*, or n_layer/n_embd/... from scratch).
        train_config: The optimisation settings (epochs, batch_size, lr, time_budget_s, processes, ...).
        distill: Best-of-K self-distillation (``k`` 0, the default: train on the corpus as it is; see
            ``training.distill``).
        preferences: Writers' preference pairs (the ``load_preferences`` step; None: none).
        dpo: DPO after supervised training (see ``training.dpo``): it runs when the writers' pairs, with the
            distilled pairs when distilling, number at least ``dpo.min_pairs``.

    Returns:
        The saved model directory, the untuned base saved the same way (the adapter before any step: the
        candidate a fine-tune has to beat), the per-epoch history, the training curves and, when distilling,
        each prompt's best and worst sampled piece (a preference pair; empty otherwise).
    """
    import mlflow

    from models.tokenizer import load_tokenizer
    from models.transformer import build_transformer, parameter_count
    from training.distill import PAIR_COLUMNS
    from training.tracking import finish_training, log_training_params, save_untuned
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
    base_dir = save_untuned(writer, "transformer-base")
    pairs = pd.DataFrame(columns=list(PAIR_COLUMNS))
    settings = distill or DistillConfig()
    if settings.k:
        train_part, pairs = distilled_training(split, train_part, base_dir, settings, writer.config.base_model,
                                               cfg.torch_threads)
    history = train(writer, train_part, val_part, cfg, on_epoch=lambda e, m: mlflow.log_metrics(m, step=e))
    dpo_stats = preference_training(writer, preferences, pairs, dpo or DPOConfig())
    model_dir, curves, model_uri = finish_training(writer, history, "transformer")
    log_step_metadata({"best_val_ppl_word": writer.metadata["val_ppl_word"], "epochs": len(history),
                       "parameters": parameter_count(writer.model), "mlflow_model_uri": model_uri,
                       "base_model": base.get("spec", ""), "base_license": base.get("license", ""),
                       "dpo_pairs": int(dpo_stats.get("pairs", 0)),
                       "writer_pairs": 0 if preferences is None else len(preferences)},
                      artifact_name="transformer_model")
    return model_dir, base_dir, history, curves, pairs


def preference_training(writer: Any, writers: pd.DataFrame | None, distilled: pd.DataFrame,
                        settings: DPOConfig) -> dict[str, float]:
    """DPO on the writers' (and distilled) pairs when there are enough; logs how many of each went in.

    Returns:
        The DPO statistics (empty when it did not run).
    """
    import mlflow

    from training.dpo import choose_pairs, train_dpo
    from training.preferences import PAIR_COLUMNS

    writers = writers if writers is not None else pd.DataFrame(columns=list(PAIR_COLUMNS))
    chosen = choose_pairs(writers, distilled, settings)
    counts = {"dpo.writer_pairs": int((chosen["origin"] == "writers").sum()),
              "dpo.distilled_pairs": int((chosen["origin"] == "distilled").sum())}
    runs = settings.enabled and len(chosen) >= settings.min_pairs
    mlflow.log_params({**counts, "dpo.ran": runs, "dpo.min_pairs": settings.min_pairs})
    if not runs:
        log.info("DPO skipped: %d pair(s) (%d from writers), %s", len(chosen), counts["dpo.writer_pairs"],
                 "dpo.enabled is false" if not settings.enabled else f"dpo.min_pairs is {settings.min_pairs}")
        return {}
    stats = train_dpo(writer, chosen, settings)
    mlflow.log_metrics({f"dpo.{k}": v for k, v in stats.items()})
    log.info("DPO on %d writers' and %d distilled pairs: %s", counts["dpo.writer_pairs"],
             counts["dpo.distilled_pairs"], stats)
    return stats


def distilled_training(split: pd.DataFrame, train_part: pd.DataFrame, base_dir: Path, settings: DistillConfig,
                       base_model: str, threads: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pieces to train on after best-of-K distillation, and its preference pairs; logs what it did.

    Raises:
        ValueError: If the model has no pretrained base (nothing to distil from).
    """
    import mlflow

    from training.distill import distill, training_pieces

    if not base_model:
        raise ValueError("train_transformer.distill.k > 0 needs a pretrained base_model to sample from; this model "
                         "trains from scratch (set distill.k: 0 or name a base_model)")
    made = distill(base_dir, train_part, split[split["split"] == "test"], settings, settings.judge or base_model,
                   threads)
    mlflow.log_params({f"distill.{k}": v for k, v in made.stats.items() if k in ("prompts", "k", "measures")})
    mlflow.log_metrics({f"distill.{k}": float(v) for k, v in made.stats.items()
                        if isinstance(v, int | float) and k not in ("prompts", "k")})
    if not settings.train_on_distilled:  # the corpus as it is; the distillation gives DPO its pairs
        return train_part, made.pairs
    return training_pieces(made, train_part, settings.keep_corpus, settings.seed), made.pairs
