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
from evaluation.measure_check import cached_check, trusted
from evaluation.quality import LM_MEASURES, MEASURES, Judge, paired_bootstrap, score_pieces, story_quality
from evaluation.real_tests import REAL_COLUMNS, held_out_sets
from evaluation.selection import GATES, SelectionRule, apply_gates, select
from evaluation.suite import (
    SuiteConfig,
    evaluate_candidate,
    open_prompts,
    real_test_metrics,
    suite_dict,
)
from evaluation.writing import ReferenceModel, prompts_fingerprint
from models.families import load_model, runtime_of
from models.manifest import read_manifest

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


def check_pieces(test: pd.DataFrame, suite: SuiteConfig) -> tuple[pd.DataFrame, dict[str, str]]:
    """The real pieces the measures are checked on: the test split's and each ``check_sources`` set's.

    Pieces of 40–300 words are kept (shorter ones have too few sentences to perturb, longer ones outrun the
    judge's window), at most ``4 × check_pairs`` per source (seeded). A source whose file is absent is
    skipped.

    Returns:
        The pieces (``source, prompt, text``) and, per source spec, ``used`` or why it was not.
    """
    from corpus.loaders import load_sources

    frames, said = [test.assign(source="project")], {}
    for spec in suite.check_sources:
        path = Path(spec.split(":", 1)[-1].split("?", 1)[0])
        if not path.exists():
            log.warning("measure check: source %s is absent (%s): skipped", spec, path)
            said[spec] = f"absent ({path})"
            continue
        frames.append(load_sources([spec]).assign(source=path.stem))
        said[spec] = "used"
    kept = []
    for frame in frames:
        words = frame["text"].str.split().str.len()
        fit = frame[(words >= 40) & (words <= 300)]
        fit = fit if len(fit) >= 2 else frame
        kept.append(fit.sample(n=min(len(fit), 4 * max(1, suite.check_pairs)), random_state=suite.seed))
    return pd.concat(kept, ignore_index=True)[["source", "prompt", "text"]], said


def measure_check(test: pd.DataFrame, judge: Judge | None, reference: ReferenceModel | None,
                  suite: SuiteConfig) -> tuple[pd.DataFrame, dict[str, str]]:
    """Each story-quality measure's accuracy on known-order pairs (:func:`check_pieces`), cached on disk.

    With ``check_pairs`` 0 nothing is checked and the frame is empty.

    Returns:
        The check (one row per measure and the composite) and what became of each ``check_sources`` spec.
    """
    if not suite.check_pairs:
        return pd.DataFrame(columns=["measure", "perturbation", "pairs", "right", "accuracy", "trusted", "why"]), {}
    pieces, sources = check_pieces(test, suite)
    judge_id = json.dumps(reference.checkpoint.as_dict(), sort_keys=True, default=str) if reference else ""
    check = cached_check(pieces, judge, judge_id, suite.check_pairs, suite.check_min_accuracy,
                         suite.check_composite_pairs, suite.seed)
    for _, row in check.iterrows():
        log.info("measure %s: %s on %d pairs (%s): %s", row["measure"], "trusted" if row["trusted"] else
                 "not trusted", row["pairs"], row["perturbation"], row["why"])
    return check, sources


def story_scores(judge: Judge | None, trust: list[str], prompts: pd.DataFrame, texts: list[str],
                 seed: int) -> tuple[dict[str, float], list[float]]:
    """A candidate's story-quality figures on the open prompts, and each piece's story quality.

    Every trusted measure is scored, and the cheap text measures always (reported either way); the
    likelihood measures that were not trusted are skipped (their cost buys nothing).

    Returns:
        ``story_quality`` (mean over pieces; NaN when nothing is trusted) and ``q_<measure>`` (mean raw
        score per measure scored), and the per-piece story quality.
    """
    measures = [m for m in MEASURES if m in trust or m not in LM_MEASURES]
    scores = score_pieces(list(prompts["prompt"]), texts, judge if trust else None, measures, seed)
    per_piece = story_quality(scores, trust) if trust else [float("nan")] * len(texts)
    finite = [q for q in per_piece if q == q]
    out = {"story_quality": sum(finite) / len(finite) if finite else float("nan")}
    for measure, values in scores.raw.items():
        ok = [v for v in values if v == v]
        out[f"q_{measure}"] = sum(ok) / len(ok) if ok else float("nan")
    return out, per_piece


def versus_base(open_frame: pd.DataFrame, candidates: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Each candidate's per-prompt story quality against the untuned base's, bootstrapped over prompts.

    Candidates without a story quality (they failed a gate) are left out.
    """
    if "base_quality" not in open_frame or open_frame["base_quality"].isna().all():
        return {}
    return {name: paired_bootstrap(list(open_frame[f"{name}_quality"]), list(open_frame["base_quality"]), seed=seed)
            for name in candidates if name != "base" and f"{name}_quality" in open_frame
            and open_frame[f"{name}_quality"].notna().any()}  # one that failed a gate has no story quality


def failed_gates(row: dict[str, Any], rule: SelectionRule, chance: float) -> list[str]:
    """The gates one candidate's metrics row fails (the rule's, before any story quality is scored)."""
    gated = apply_gates(pd.DataFrame([{"parameters": 0, **row}]), rule, chance).iloc[0]
    return [g for g in GATES if not bool(gated[f"gate_{g}"])]


def untuned_without_base(directory: Path) -> bool:
    """Whether a saved model is an untuned network with no pretrained base (a random one: not a candidate)."""
    manifest = read_manifest(Path(directory))
    return bool(manifest.get("untuned")) and not manifest.get("base_model")


@dataclass(frozen=True)
class Evaluation:
    """What the evaluate step hands on.

    Attributes:
        metrics: The gated metrics, one row per candidate.
        samples: ``prompt, form, genre, reference`` + one column per candidate (the fixed test prompts).
        open_samples: ``id, form, genre, prompt`` + per candidate its text and ``<candidate>_matched``
            (the prompt words it used).
        real_metrics: One row per candidate and real test set (``REAL_COLUMNS``; empty without real tests).
        selection: ``winner``, ``why``, ``rule``, ``suite``, ``reference_model``, sizes, fingerprints,
            per real test set its size, fingerprint and held-out check (``real_tests``), and ``quality``
            (the trusted measures and each candidate against the untuned base, ``versus_base``).
        measure_check: Each story-quality measure's accuracy on known-order pairs (``measure_check``).
    """

    metrics: pd.DataFrame
    samples: pd.DataFrame
    open_samples: pd.DataFrame
    real_metrics: pd.DataFrame
    selection: dict[str, Any]
    measure_check: pd.DataFrame


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
    judge = Judge(reference) if reference is not None else None
    check, check_sources = measure_check(test, judge, reference, suite)
    trust = trusted(check) if not check.empty else []
    rows, columns, open_columns, real_rows = [], {}, {}, []
    for name, directory in model_dirs.items():
        if untuned_without_base(Path(directory)):
            log.info("%s: an untuned network with no pretrained base (random weights): not a candidate", name)
            continue
        model = load_model(Path(directory))
        exported = bool((getattr(model, "metadata", None) or {}).get("gguf"))  # a Transformer with a GGUF export
        writer = load_model(Path(directory), suite.runtime, suite.torch_threads) if exported and \
            suite.runtime != runtime_of(model) else model
        row, samples, open_texts, matched = evaluate_candidate(name, model, Path(directory), test, suite, reference,
                                                               writer)
        row["runtime"] = runtime_of(writer)
        failed = failed_gates(row, rule, suite.chance)
        if failed:  # it cannot win: the likelihood measures (most of the cost) would buy a figure nobody ranks by
            log.info("%s fails the gate(s) %s: story quality not scored", name, ", ".join(failed))
            quality, per_piece = story_scores(None, [], opened, open_texts, suite.seed)
        else:
            quality, per_piece = story_scores(judge, trust, opened, open_texts, suite.seed)
        row.update(quality)
        open_columns[f"{name}_quality"] = per_piece
        log.info("%s: per-word ppl %.3f, ranking %.2f, open use %.2f, coverage %.2f, complete %.2f, story quality "
                 "%.3f", name, row["ppl_word"], row["ranking_acc"], row["open_use"], row["open_coverage"],
                 row["open_complete"], row["story_quality"])
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
                 "real_tests": real_sets,
                 "quality": {"trusted": trust, "min_accuracy": suite.check_min_accuracy, "check_sources": check_sources,
                             "versus_base": versus_base(open_frame, [str(r["candidate"]) for r in rows], suite.seed)}}
    if real_sets:
        selection["sizes"].update(real_pieces_per_set=suite.real_pieces, real_ranking_trials=suite.real_ranking_pieces)
    real_metrics = pd.DataFrame(real_rows, columns=list(REAL_COLUMNS))
    return Evaluation(gated, samples_frame, open_frame, real_metrics, selection, check)
