"""The evaluate and promote steps' logic, kept apart from ZenML so that it is tested without a stack."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.threads import configure_threads
from corpus.split import split_fingerprint
from evaluation.real_tests import REAL_COLUMNS, held_out_sets
from evaluation.selection import SelectionRule, select
from evaluation.suite import (
    SuiteConfig,
    evaluate_candidate,
    open_prompts,
    real_test_metrics,
    suite_dict,
)
from evaluation.writing import ReferenceModel, prompts_fingerprint
from models.families import load_model, runtime_of

log = logging.getLogger(__name__)


def test_part(split: pd.DataFrame) -> pd.DataFrame:
    """The test rows of a split corpus, indexed from 0.

    Raises:
        ValueError: If there are none.
    """
    test = split[split["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise ValueError("the split has no test pieces to evaluate on")
    return test


def evaluation_fingerprint(test_fingerprint: str, suite: SuiteConfig, prompts: pd.DataFrame) -> str:
    """What makes two candidates' scores comparable: the test split, the suite's settings and the open prompts.

    The real-test sizes are left out: real tests are reported, never scored, so they do not change it.
    """
    settings = {k: v for k, v in suite_dict(suite).items() if not k.startswith("real_")}
    payload = json.dumps({"test": test_fingerprint, "suite": settings, "open": prompts_fingerprint(prompts)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def reference_model(suite: SuiteConfig) -> ReferenceModel | None:
    """The fluency judge named by the suite (None when it names none)."""
    if not suite.reference_model:
        return None
    log.info("fluency judge: %s", suite.reference_model)
    return ReferenceModel(suite.reference_model)


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate step hands on.

    Attributes:
        metrics: The gated metrics, one row per candidate.
        samples: ``prompt, form, genre, reference`` + one column per candidate (the fixed test prompts).
        open_samples: ``id, form, genre, prompt`` + per candidate its text and ``<candidate>_matched``
            (the prompt words it used).
        real_metrics: One row per candidate and real test set (``REAL_COLUMNS``; empty without real tests).
        selection: ``winner``, ``why``, ``rule``, ``suite``, ``reference_model``, sizes, fingerprints and,
            per real test set, its size, fingerprint and held-out check (``real_tests``).
    """

    metrics: pd.DataFrame
    samples: pd.DataFrame
    open_samples: pd.DataFrame
    real_metrics: pd.DataFrame
    selection: dict[str, Any]


def evaluate_candidates(model_dirs: dict[str, Path], split: pd.DataFrame, suite: SuiteConfig,
                        rule: SelectionRule, real: pd.DataFrame | None = None) -> Evaluation:
    """Runs the suite on every candidate (and every real test set) and applies the selection rule.

    Args:
        model_dirs: ``candidate -> saved model directory``.
        split: The split corpus (its test rows are the in-domain test).
        suite: Sizes and sampling settings.
        rule: Gates and ranking.
        real: Real test sets (``evaluation.real_tests``), checked to be held out before any model runs.

    Raises:
        ValueError: If there is no candidate or no test piece.
        corpus.schema.DataError: If a real test set shares a piece with the training data.
    """
    if not model_dirs:
        raise ValueError("evaluation needs at least one candidate model")
    has_real = real is not None and not real.empty
    real_sets = held_out_sets(real, split) if has_real else {}
    configure_threads(suite.torch_threads)
    test = test_part(split)
    opened = open_prompts(suite)
    reference = reference_model(suite)
    rows, columns, open_columns, real_rows = [], {}, {}, []
    for name, directory in model_dirs.items():
        model = load_model(Path(directory))
        exported = bool((getattr(model, "metadata", None) or {}).get("gguf"))  # a Transformer with a GGUF export
        writer = load_model(Path(directory), suite.runtime, suite.torch_threads) if exported and \
            suite.runtime != runtime_of(model) else model
        row, samples, open_texts, matched = evaluate_candidate(name, model, Path(directory), test, suite, reference,
                                                               writer)
        row["runtime"] = runtime_of(writer)
        log.info("%s: per-word ppl %.3f, ranking %.2f, open use %.2f, coverage %.2f, complete %.2f", name,
                 row["ppl_word"], row["ranking_acc"], row["open_use"], row["open_coverage"], row["open_complete"])
        for real_row in real_test_metrics(name, model, real, suite) if has_real else []:
            log.info("%s on %s: per-word ppl %.1f, ranking %.2f", name, real_row["test_set"], real_row["ppl_word"],
                     real_row["ranking_acc"])
            real_rows.append(real_row)
        rows.append(row)
        columns[name] = samples
        open_columns[name] = open_texts
        open_columns[f"{name}_matched"] = [", ".join(w) for w in matched]
    gated, winner, why = select(pd.DataFrame(rows), rule, suite.chance)
    prompts = test.head(suite.sample_prompts)
    samples_frame = pd.DataFrame({"prompt": prompts["prompt"], "form": prompts["form"], "genre": prompts["genre"],
                                  "reference": prompts["text"], **columns})
    open_frame = pd.DataFrame({**{c: list(opened[c]) for c in ("id", "form", "genre", "prompt")}, **open_columns})
    test_fp = split_fingerprint(split, "test")
    selection = {"winner": winner, "why": why, "rule": rule.describe(suite.chance), "rule_settings": asdict(rule),
                 "suite": suite_dict(suite), "test_fingerprint": test_fp,
                 "data_fingerprint": split_fingerprint(split, "train"),
                 "evaluation_fingerprint": evaluation_fingerprint(test_fp, suite, opened),
                 "reference_model": reference.checkpoint.as_dict() if reference is not None else None,
                 "sizes": {"test_pieces": len(test), "ppl_pieces": min(len(test), suite.ppl_pieces or len(test)),
                           "ranking_trials": min(len(test), suite.ranking_pieces), "open_prompts": len(opened),
                           "fluency_samples": min(len(opened), suite.fluency_samples or len(opened))},
                 "real_tests": real_sets}
    if real_sets:
        selection["sizes"].update(real_pieces_per_set=suite.real_pieces, real_ranking_trials=suite.real_ranking_pieces)
    real_metrics = pd.DataFrame(real_rows, columns=list(REAL_COLUMNS))
    return Evaluation(gated, samples_frame, open_frame, real_metrics, selection)
