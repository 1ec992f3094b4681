"""Step: one metric suite on the test split for every candidate, and the selection rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from zenml import step

from infra.zenml_utils import log_step_metadata


@step
def evaluate(
    split: pd.DataFrame,
    seq2seq_model: Path,
    transformer_model: Path,
    gan_model: Path,
    suite: dict[str, Any] | None = None,
    rule: dict[str, Any] | None = None,
) -> tuple[
    Annotated[pd.DataFrame, "evaluation_metrics"],
    Annotated[pd.DataFrame, "evaluation_samples"],
    Annotated[pd.DataFrame, "open_prompt_samples"],
    Annotated[dict[str, Any], "selection"],
]:
    """Scores the three families on the same test pieces, open prompts and seeds; gates and ranks them.

    Args:
        split: The split corpus (its test rows are used).
        seq2seq_model: The attention seq2seq model directory.
        transformer_model: The Transformer model directory.
        gan_model: The GAN model directory.
        suite: ``SuiteConfig`` fields (sample sizes, open prompts, reference model, sampling settings).
        rule: ``SelectionRule`` fields (gate thresholds, quality weight, tie tolerance).

    Returns:
        The gated metrics, the test-prompt samples side by side, the open-prompt samples, and the selection.
    """
    import mlflow

    from evaluation.run import evaluate_candidates
    from evaluation.selection import NUMERIC, SelectionRule
    from evaluation.suite import SuiteConfig

    candidates = {"seq2seq": seq2seq_model, "transformer": transformer_model, "gan": gan_model}
    metrics, samples, open_samples, selection = evaluate_candidates(candidates, split, SuiteConfig(**(suite or {})),
                                                      SelectionRule(**(rule or {})))
    for _, row in metrics.iterrows():
        mlflow.log_metrics({f"{row['candidate']}.{k}": float(row[k]) for k in (*NUMERIC, "score", "open_quality")})
    mlflow.log_dict(selection, "selection.json")
    log_step_metadata({"winner": selection["winner"] or "none", "why": selection["why"],
                       **{f"{r['candidate']}.ppl_word": float(r["ppl_word"]) for _, r in metrics.iterrows()}},
                      artifact_name="evaluation_metrics")
    return metrics, samples, open_samples, selection
