"""Registering a run's candidates and deciding on the champion: the promote step's logic.

Torch is imported only when a model must be loaded or measured (the champion re-scored or sampled, a
new candidate logged): a fully cached rerun, whose models the registry already holds, only reads and
compares tags (importing torch alone took 3.2 s of its 3.7 s). Nor are its models unpacked: the step
hands each model over as a :class:`StoredModel` (its ZenML artifact version id and a way to load it), and a
version tagged with that artifact id is reused without loading the directory (unpacking the four archived
model directories took 3.7 s of a cached rerun's promote).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.paths import REGISTERED_NAME
from evaluation.promotion import (
    Decision,
    content_fingerprint,
    current_champion,
    decide,
    register_candidates,
    registered_with_fingerprint,
    registered_with_tag,
    update_tags,
)
from evaluation.selection import SelectionRule
from models.manifest import read_manifest
from registry.tags import metric_tags

log = logging.getLogger(__name__)
REGISTERED_MODEL = REGISTERED_NAME


ARTIFACT_TAG = "zenml_artifact_id"  # the ZenML artifact version a registered candidate came from


@dataclass
class StoredModel:
    """A candidate's saved model as a pipeline artifact: its id, and its directory loaded only when needed.

    Args:
        artifact_id: The ZenML artifact version id ('' when unknown: then the directory is read).
        load: Returns the saved model directory (unpacking the artifact).
    """

    artifact_id: str
    load: Callable[[], Path]
    _directory: Path | None = field(default=None, init=False, repr=False)

    def directory(self) -> Path:
        """The saved model directory (loaded once)."""
        if self._directory is None:
            self._directory = Path(self.load())
        return self._directory


def stored(model: Path | str | StoredModel) -> StoredModel:
    """``model`` as a :class:`StoredModel` (a plain directory has no artifact id)."""
    if isinstance(model, StoredModel):
        return model
    return StoredModel("", lambda: Path(model))


def promote_candidates(model_dirs: dict[str, Path | StoredModel], metrics: pd.DataFrame, selection: dict[str, Any],
                       split: pd.DataFrame, run_id: str, name: str = REGISTERED_MODEL,
                       samples: pd.DataFrame | None = None,
                       open_samples: pd.DataFrame | None = None) -> tuple[Decision, dict[str, list[str]]]:
    """Registers the candidates the registry does not hold yet, compares the winner with the champion, moves aliases.

    A candidate the registry holds (a version tagged with its artifact id, or else with its directory's
    content fingerprint: a cached rerun hands over the same model) is not logged or registered again: that
    version is reused, its metric tags brought up to this evaluation; a directory is read only when its
    artifact id is not found. Must run inside an active MLflow run (new candidates are logged into it
    before registration).

    Args:
        model_dirs: ``candidate -> saved model directory`` (or a :class:`StoredModel`).
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

    client = MlflowClient()
    rule = SelectionRule(**selection.get("rule_settings", {}))
    by_name = metrics.set_index("candidate")
    models = {c: stored(m) for c, m in model_dirs.items()}
    shared = {"zenml_run_id": run_id, "data_fingerprint": selection["data_fingerprint"],
              "test_fingerprint": selection["test_fingerprint"],
              "evaluation_fingerprint": selection.get("evaluation_fingerprint", "")}
    versions: dict[str, str] = {}
    tags: dict[str, dict[str, str]] = {}
    for candidate, model in models.items():
        measured = {"passed_gates": str(bool(by_name.loc[candidate, "passed"])),
                    **metric_tags(by_name.loc[candidate].to_dict())}
        known = registered_with_tag(client, name, ARTIFACT_TAG, model.artifact_id) if model.artifact_id else None
        fingerprint = ""
        if known is None:  # not seen as this artifact: read the directory and look for its content
            fingerprint = content_fingerprint(model.directory())
            known = registered_with_fingerprint(client, name, fingerprint)
        wanted = {k: shared[k] for k in ("evaluation_fingerprint", "test_fingerprint")}
        wanted.update({ARTIFACT_TAG: model.artifact_id} if model.artifact_id else {})
        if known is not None:
            versions[candidate] = str(known.version)
            changed = update_tags(client, name, known, {**wanted, **measured})
            log.info("%s is already registered as %s v%s (same %s): reused, %d tag(s) updated", candidate, name,
                     known.version, "content" if fingerprint else "artifact", changed)
            continue
        tags[candidate] = {"family": str(by_name.loc[candidate, "family"]), **shared, **wanted,
                           "content_fingerprint": fingerprint, **measured, **base_tags(model.directory())}
    if tags:
        from registry.mlflow_model import log_pyfunc

        new = {c: log_pyfunc(models[c].directory(), name=c).model_uri for c in tags}
        versions.update(register_candidates(name, new, tags))
    champion = current_champion(client, name)
    champion_samples: dict[str, list[str]] = {"test": [], "open": []}
    champion_model = None
    own = {v: c for c, v in versions.items()}
    winner = selection["winner"]
    winner_row = by_name.loc[winner].to_dict() if winner else None
    # the champion is one of this run's models: its samples exist
    sampled = champion is not None and str(champion.version) in own and samples is not None \
        and open_samples is not None
    compared = champion is not None and str(champion.version) != versions.get(winner or "")
    suite = None
    if compared or (champion is not None and not sampled):  # the suite (and torch with it) is needed
        from evaluation.config import SuiteConfig  # not evaluation.suite: that imports torch

        suite = SuiteConfig(**selection["suite"])
    if sampled:
        same = own[str(champion.version)]
        champion_samples = {"test": list(samples[same]), "open": list(open_samples[same])}
    elif champion is not None:
        def sample_champion() -> dict[str, list[str]]:
            # imported only to sample: the suite imports torch (2.2 s), and the samples are usually cached
            from evaluation.candidates import test_part
            from evaluation.suite import generate_samples, open_prompts
            from evaluation.suite import open_samples as open_samples_of

            nonlocal champion_model
            champion_model = load_registered(name, str(champion.version))
            return {"test": generate_samples(champion_model, test_part(split).head(suite.sample_prompts), suite)[0],
                    "open": open_samples_of(champion_model, open_prompts(suite), suite)[0]}

        champion_samples = cached_samples(name, str(champion.version), selection, sample_champion)

    def rescore(version: str) -> dict[str, Any]:
        from evaluation.candidates import reference_model, story_scores, test_part
        from evaluation.quality import Judge
        from evaluation.suite import evaluate_candidate, open_prompts

        model = champion_model if champion_model is not None and version == str(champion.version) else \
            load_registered(name, version)
        reference = reference_model(suite)
        row, _, open_texts, _ = evaluate_candidate(f"v{version}", model, Path("."), test_part(split), suite, reference)
        trust = list((selection.get("quality") or {}).get("trusted") or [])
        quality, _ = story_scores(Judge(reference) if reference is not None else None, trust, open_prompts(suite),
                                  open_texts, suite.seed)
        return {**row, **quality}

    fingerprint = selection.get("evaluation_fingerprint", selection["test_fingerprint"])
    decision = decide(client, name, winner, selection["why"], winner_row, versions, fingerprint, rescore, rule,
                      suite.chance if suite is not None else 0.0)  # chance only matters when compared
    log.info("promotion: %s", decision.reason)
    return decision, champion_samples


def cached_samples(name: str, version: str, selection: dict[str, Any],
                   make: Callable[[], dict[str, list[str]]]) -> dict[str, list[str]]:
    """The champion's samples for the report, written once per registry version and evaluation, then read again.

    A champion from another run (another profile) is not one of this run's models, so the report needs its
    samples written anew: 1.5 min on every otherwise cached rerun. A registry version's model never changes,
    so they are kept under a key of the registry (tracking URI), the version and the evaluation's
    fingerprints and suite (beside the checkpoint cache, as the measure check's results are).
    """
    import hashlib
    import json
    import os
    import tempfile

    import mlflow

    from weights.checkpoints import cache_root

    payload = json.dumps({"registry": mlflow.get_tracking_uri(), "name": name, "version": version,
                          "evaluation": selection.get("evaluation_fingerprint", ""),
                          "test": selection.get("test_fingerprint", ""), "suite": selection.get("suite", {})},
                         sort_keys=True, default=str)
    folder = cache_root().parent / "champion-samples"
    path = folder / f"{hashlib.sha256(payload.encode()).hexdigest()[:20]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    made = make()
    folder.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=folder, suffix=".part")
    with os.fdopen(fd, "w") as out:
        json.dump(made, out)
    os.replace(scratch, path)  # whole or not at all
    return made


def base_tags(model_dir: Path) -> dict[str, str]:
    """``base_model`` (the base's spec) and ``base_license`` tags of a model built on a pretrained base."""
    manifest = read_manifest(model_dir)
    base = manifest.get("base") or {}
    if not manifest.get("base_model"):
        return {}
    return {"base_model": str(manifest["base_model"]), "base_license": str(base.get("license", "")),
            "base_attribution": str(base.get("attribution", ""))[:500]}


def load_registered(name: str, version: str) -> Any:
    """The model behind a registry version, as a model-contract object loaded with this checkout's code.

    See :func:`registry.mlflow_model.saved_model_dir` for why the pyfunc itself is not loaded.
    """
    import tempfile

    import mlflow

    from models.families import load_model
    from registry.mlflow_model import saved_model_dir

    with tempfile.TemporaryDirectory(prefix="cw-champion-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder))
        return load_model(saved_model_dir(local))
