"""The evaluate and promote steps' logic, kept apart from ZenML so that it is tested without a stack."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from corpus.split import split_fingerprint
from evaluation.promotion import Decision, current_champion, decide, metric_tags, register_candidates
from evaluation.selection import SelectionRule, select
from evaluation.suite import SuiteConfig, evaluate_candidate, generate_samples, per_word_perplexity, suite_dict
from models.contract import load_model

log = logging.getLogger(__name__)
REGISTERED_MODEL = "creative-writer"


def test_part(split: pd.DataFrame) -> pd.DataFrame:
    """The test rows of a split corpus, indexed from 0.

    Raises:
        ValueError: If there are none.
    """
    test = split[split["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise ValueError("the split has no test pieces to evaluate on")
    return test


def evaluate_candidates(model_dirs: dict[str, Path], split: pd.DataFrame, suite: SuiteConfig,
                        rule: SelectionRule) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Runs the suite on every candidate and applies the selection rule.

    Returns:
        The gated metrics frame, the samples frame (``prompt, form, genre, reference`` + one column per
        candidate) and the selection (``winner``, ``why``, ``rule``, ``suite``, fingerprints).
    """
    if not model_dirs:
        raise ValueError("evaluation needs at least one candidate model")
    test = test_part(split)
    rows, columns = [], {}
    for name, directory in model_dirs.items():
        row, samples = evaluate_candidate(name, load_model(Path(directory)), Path(directory), test, suite)
        log.info("%s: per-word ppl %.3f, ranking %.2f, distinct-2 %.2f, repetition %.3f", name, row["ppl_word"],
                 row["ranking_acc"], row["distinct2"], row["repetition"])
        rows.append(row)
        columns[name] = samples
    gated, winner, why = select(pd.DataFrame(rows), rule, suite.chance)
    prompts = test.head(suite.sample_prompts)
    samples_frame = pd.DataFrame({"prompt": prompts["prompt"], "form": prompts["form"], "genre": prompts["genre"],
                                  "reference": prompts["text"], **columns})
    selection = {"winner": winner, "why": why, "rule": rule.describe(suite.chance), "suite": suite_dict(suite),
                 "test_fingerprint": split_fingerprint(split, "test"),
                 "data_fingerprint": split_fingerprint(split, "train")}
    return gated, samples_frame, selection


def promote_candidates(model_dirs: dict[str, Path], metrics: pd.DataFrame, selection: dict[str, Any],
                       split: pd.DataFrame, run_id: str, name: str = REGISTERED_MODEL) -> tuple[Decision, list[str]]:
    """Logs and registers every candidate, compares the winner with the champion, moves the aliases.

    Must run inside an active MLflow run (the candidates are logged into it before registration).

    Returns:
        The decision and the previous champion's samples for the report's prompts (empty if none).
    """
    from mlflow import MlflowClient

    from models.mlflow_logging import log_pyfunc

    client = MlflowClient()
    suite = SuiteConfig(**selection["suite"])
    test = test_part(split)
    champion = current_champion(client, name)
    champion_samples: list[str] = []
    champion_model = None
    if champion is not None:
        champion_model = load_registered(name, str(champion.version))
        champion_samples = generate_samples(champion_model, test.head(suite.sample_prompts), suite)[0]
    by_name = metrics.set_index("candidate")
    tags = {c: {"family": str(by_name.loc[c, "family"]), "zenml_run_id": run_id,
                "data_fingerprint": selection["data_fingerprint"], "test_fingerprint": selection["test_fingerprint"],
                "passed_gates": str(bool(by_name.loc[c, "passed"])), **metric_tags(by_name.loc[c].to_dict())}
            for c in model_dirs}
    uris = {c: log_pyfunc(Path(d), name=c).model_uri for c, d in model_dirs.items()}
    versions = register_candidates(name, uris, tags)
    winner = selection["winner"]
    winner_ppl = float(by_name.loc[winner, "ppl_word"]) if winner else None

    def rescore(version: str) -> float:
        model = champion_model if champion is not None and version == str(champion.version) else \
            load_registered(name, version)
        return per_word_perplexity(model, test)

    decision = decide(client, name, winner, selection["why"], winner_ppl, versions, selection["test_fingerprint"],
                      rescore)
    log.info("promotion: %s", decision.reason)
    return decision, champion_samples


def load_registered(name: str, version: str) -> Any:
    """The model behind a registry version, as a model-contract object."""
    import mlflow

    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model().model
