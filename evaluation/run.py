"""The evaluate and promote steps' logic, kept apart from ZenML so that it is tested without a stack."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from corpus.split import split_fingerprint
from evaluation.promotion import (
    Decision,
    content_fingerprint,
    current_champion,
    decide,
    metric_tags,
    register_candidates,
    registered_with_fingerprint,
    update_tags,
)
from evaluation.real_tests import REAL_COLUMNS, held_out_sets
from evaluation.selection import SelectionRule, select
from evaluation.suite import (
    SuiteConfig,
    evaluate_candidate,
    generate_samples,
    open_prompts,
    real_test_metrics,
    suite_dict,
)
from evaluation.suite import open_samples as open_samples_of
from evaluation.writing import ReferenceModel, prompts_fingerprint
from models.contract import load_model
from models.threads import configure_threads

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
        row, samples, open_texts, matched = evaluate_candidate(name, model, Path(directory), test, suite, reference)
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


def promote_candidates(model_dirs: dict[str, Path], metrics: pd.DataFrame, selection: dict[str, Any],
                       split: pd.DataFrame, run_id: str, name: str = REGISTERED_MODEL,
                       samples: pd.DataFrame | None = None,
                       open_samples: pd.DataFrame | None = None) -> tuple[Decision, dict[str, list[str]]]:
    """Registers the candidates the registry does not hold yet, compares the winner with the champion, moves aliases.

    A candidate whose saved directory has the content fingerprint of a registered version (a cached
    rerun hands over the same model) is not logged or registered again: that version is reused, its
    metric tags brought up to this evaluation. Must run inside an active MLflow run (new candidates are
    logged into it before registration).

    Args:
        model_dirs: ``candidate -> saved model directory``.
        metrics: The gated metrics of this run's candidates.
        selection: The selection (winner, reasons, suite and rule settings, fingerprints).
        split: The split corpus (the champion is evaluated on its test rows when needed).
        run_id: The ZenML run id (tagged on new versions).
        name: The registered model.
        samples: This run's test-prompt samples (reused when the champion is one of this run's models).
        open_samples: This run's open-prompt samples (likewise).

    Returns:
        The decision and the previous champion's samples for the report's ``test`` and ``open`` prompts
        (empty lists if there was no champion).
    """
    from mlflow import MlflowClient

    from models.mlflow_logging import log_pyfunc

    client = MlflowClient()
    suite = SuiteConfig(**selection["suite"])
    rule = SelectionRule(**selection.get("rule_settings", {}))
    test = test_part(split)
    by_name = metrics.set_index("candidate")
    fingerprints = {c: content_fingerprint(Path(d)) for c, d in model_dirs.items()}
    tags = {c: {"family": str(by_name.loc[c, "family"]), "zenml_run_id": run_id,
                "data_fingerprint": selection["data_fingerprint"], "test_fingerprint": selection["test_fingerprint"],
                "evaluation_fingerprint": selection.get("evaluation_fingerprint", ""),
                "content_fingerprint": fingerprints[c], "passed_gates": str(bool(by_name.loc[c, "passed"])),
                **base_tags(Path(model_dirs[c])), **metric_tags(by_name.loc[c].to_dict())}
            for c in model_dirs}
    versions: dict[str, str] = {}
    for candidate, fingerprint in fingerprints.items():
        known = registered_with_fingerprint(client, name, fingerprint)
        if known is not None:
            versions[candidate] = str(known.version)
            wanted = {k: tags[candidate][k] for k in ("evaluation_fingerprint", "test_fingerprint", "passed_gates")}
            changed = update_tags(client, name, known, {**wanted, **metric_tags(by_name.loc[candidate].to_dict())})
            log.info("%s is already registered as %s v%s (same content): reused, %d tag(s) updated", candidate, name,
                     known.version, changed)
    new = {c: log_pyfunc(Path(d), name=c).model_uri for c, d in model_dirs.items() if c not in versions}
    versions.update(register_candidates(name, new, tags))
    champion = current_champion(client, name)
    champion_samples: dict[str, list[str]] = {"test": [], "open": []}
    champion_model = None
    own = {v: c for c, v in versions.items()}
    if champion is not None and str(champion.version) in own and samples is not None and open_samples is not None:
        same = own[str(champion.version)]  # the champion is one of this run's models: its samples exist
        champion_samples = {"test": list(samples[same]), "open": list(open_samples[same])}
    elif champion is not None:
        champion_model = load_registered(name, str(champion.version))
        champion_samples = {"test": generate_samples(champion_model, test.head(suite.sample_prompts), suite)[0],
                            "open": open_samples_of(champion_model, open_prompts(suite), suite)[0]}
    winner = selection["winner"]
    winner_row = by_name.loc[winner].to_dict() if winner else None

    def rescore(version: str) -> dict[str, Any]:
        model = champion_model if champion_model is not None and version == str(champion.version) else \
            load_registered(name, version)
        return evaluate_candidate(f"v{version}", model, Path("."), test, suite, reference_model(suite))[0]

    fingerprint = selection.get("evaluation_fingerprint", selection["test_fingerprint"])
    decision = decide(client, name, winner, selection["why"], winner_row, versions, fingerprint, rescore, rule,
                      suite.chance)
    log.info("promotion: %s", decision.reason)
    return decision, champion_samples


def base_tags(model_dir: Path) -> dict[str, str]:
    """``base_model`` (the base's spec) and ``base_license`` tags of a model built on a pretrained base."""
    from models.contract import read_manifest

    manifest = read_manifest(model_dir)
    base = manifest.get("base") or {}
    if not manifest.get("base_model"):
        return {}
    return {"base_model": str(manifest["base_model"]), "base_license": str(base.get("license", "")),
            "base_attribution": str(base.get("attribution", ""))[:500]}


def load_registered(name: str, version: str) -> Any:
    """The model behind a registry version, as a model-contract object loaded with this checkout's code.

    See :func:`models.mlflow_logging.saved_model_dir` for why the pyfunc itself is not loaded.
    """
    import tempfile

    import mlflow

    from models.mlflow_logging import saved_model_dir

    with tempfile.TemporaryDirectory(prefix="cw-champion-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder))
        return load_model(saved_model_dir(local))
