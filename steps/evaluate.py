"""Step: one metric suite on the test split for every candidate, and the selection rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from zenml import step

from evaluation.config import SuiteConfig
from evaluation.selection import SelectionRule
from infra.zenml_utils import log_step_metadata
from steps.tracking import tracked


@step(**tracked())
def evaluate(
    split: pd.DataFrame,
    seq2seq_model: Path,
    transformer_model: Path,
    gan_model: Path,
    base_model: Path | None = None,
    real_tests: pd.DataFrame | None = None,
    suite: SuiteConfig | None = None,
    rule: SelectionRule | None = None,
) -> tuple[
    Annotated[pd.DataFrame, "evaluation_metrics"],
    Annotated[pd.DataFrame, "evaluation_samples"],
    Annotated[pd.DataFrame, "open_prompt_samples"],
    Annotated[pd.DataFrame, "real_test_metrics"],
    Annotated[dict[str, Any], "selection"],
    Annotated[pd.DataFrame, "measure_check"],
]:
    """Scores the three families and the untuned base on the same test pieces, open prompts and seeds; ranks them.

    The story-quality measures are checked on known-order pairs from the test pieces first; only those
    that pass are scored (see ``evaluation.measure_check``).

    Args:
        split: The split corpus (its test rows are used).
        seq2seq_model: The attention seq2seq model directory.
        transformer_model: The Transformer model directory.
        gan_model: The GAN model directory.
        base_model: The untuned base the Transformer was fine-tuned from (``train_transformer``), a candidate
            too, so a fine-tune has to beat it; None leaves it out.
        real_tests: Real test sets (``load_real_tests``); checked to be held out, then measured per candidate.
        suite: The suite's settings (sample sizes, open prompts, reference model, sampling settings).
        rule: The selection rule (gate thresholds, quality weight, tie tolerance).

    Returns:
        The gated metrics, the test-prompt samples side by side, the open-prompt samples, the real-test
        metrics (empty without real tests), the selection and each quality measure's check.
    """
    import mlflow

    from evaluation.candidates import evaluate_candidates
    from evaluation.selection import NUMERIC

    candidates = {"seq2seq": seq2seq_model, "transformer": transformer_model, "gan": gan_model,
                  **({"base": base_model} if base_model is not None else {})}
    result = evaluate_candidates(candidates, split, suite or SuiteConfig(), rule or SelectionRule(),
                                 real_tests)
    metrics, selection = result.metrics, result.selection
    for _, row in metrics.iterrows():
        mlflow.log_metrics({f"{row['candidate']}.{k}": float(row[k]) for k in (*NUMERIC, "score", "open_quality",
                                                                                "story_quality") if k in row})
    for _, row in result.measure_check.iterrows():
        if row["accuracy"] == row["accuracy"]:
            mlflow.log_metric(f"measure_check.{row['measure']}.accuracy", float(row["accuracy"]))
    for _, row in result.real_metrics.iterrows():
        mlflow.log_metrics({f"{row['candidate']}.real.{row['test_set']}.{k}": float(row[k])
                            for k in ("ppl_word", "ranking_acc")})
    if selection["real_tests"]:
        mlflow.log_params({f"real_test.{name}.fingerprint": info["fingerprint"]
                           for name, info in selection["real_tests"].items()}
                          | {"train_fingerprint": selection["data_fingerprint"]})
    mlflow.log_dict(selection, "selection.json")
    log_step_metadata({"winner": selection["winner"] or "none", "why": selection["why"],
                       **{f"{r['candidate']}.ppl_word": float(r["ppl_word"]) for _, r in metrics.iterrows()},
                       **{f"{r['candidate']}.real.{r['test_set']}.ppl_word": float(r["ppl_word"])
                          for _, r in result.real_metrics.iterrows()}},
                      artifact_name="evaluation_metrics")
    return metrics, result.samples, result.open_samples, result.real_metrics, selection, result.measure_check
