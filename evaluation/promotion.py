"""Promotion through the MLflow model registry: candidates become versions, the alias ``champion`` moves on merit.

Every candidate becomes a version of the registered model (default ``creative-writer``), tagged with its
family, the ZenML run id, the data, test-split and evaluation fingerprints, its base checkpoint (if any) and
its metrics. The selected winner is compared with the current ``@champion`` by the selection rule's score on
the *same* evaluation: the champion's tagged metrics are reused when its evaluation fingerprint matches (same
test split, suite settings and open prompts), and the champion is evaluated again otherwise (its tags then
record that evaluation, so the next run reuses it). The alias moves when the winner's score is strictly
better, or when the champion fails a gate the winner passes (a champion that ignores its prompts is replaced);
the replaced version then gets ``previous-champion``. Aliases, not the stages MLflow deprecated. The alias is
only ever set to a version that has just been created or read back from the registry, so it never points at a
missing one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from registry.tags import tagged_metrics

log = logging.getLogger(__name__)
CHAMPION, PREVIOUS = "champion", "previous-champion"


@dataclass
class Decision:
    """What the promotion did and why."""

    promoted: bool
    reason: str
    winner: str | None = None
    winner_version: str | None = None
    champion_before: str | None = None
    champion_before_ppl: float | None = None
    champion_after: str | None = None
    winner_score: float | None = None
    champion_before_score: float | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)


def current_champion(client: Any, name: str) -> Any | None:
    """The model version the ``champion`` alias points at, or None (no model, or no alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register_candidates(name: str, model_uris: dict[str, str], tags: dict[str, dict[str, str]]) -> dict[str, str]:
    """Registers each candidate's logged model as a new version; returns ``candidate -> version``."""
    import mlflow

    versions = {}
    for candidate, uri in model_uris.items():
        mv = mlflow.register_model(uri, name, tags=tags.get(candidate, {}))
        versions[candidate] = str(mv.version)
        log.info("registered %s as %s version %s", candidate, name, mv.version)
    return versions


def content_fingerprint(directory: Path) -> str:
    """SHA-256 (first 20 hex digits) of a saved model directory: every file's relative path and bytes.

    The same trained model (a cached training step hands over the same directory) gives the same
    fingerprint, so promotion can tell a model the registry already holds.
    """
    from weights.gguf import file_sha256

    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()[:20]


def registered_with_fingerprint(client: Any, name: str, fingerprint: str) -> Any | None:
    """The newest version (an MLflow ``ModelVersion``) of ``name`` tagged with this content fingerprint, or None."""
    return registered_with_tag(client, name, "content_fingerprint", fingerprint)


def registered_with_tag(client: Any, name: str, tag: str, value: str) -> Any | None:
    """The newest version (an MLflow ``ModelVersion``) of ``name`` whose tag ``tag`` is ``value``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{name}' and tags.{tag} = '{value}'")
    except MlflowException:  # no such registered model yet
        return None
    ready = [v for v in found if (v.tags or {}).get(tag) == value]
    return max(ready, key=lambda v: int(v.version)) if ready else None


def update_tags(client: Any, name: str, version: Any, wanted: dict[str, str]) -> int:
    """Sets the tags of ``version`` (a ``ModelVersion``) whose value differs from ``wanted``; returns how many.

    A cached rerun brings the same values: nothing is written (each write is a registry round trip).
    """
    current = dict(version.tags or {})
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    for key, value in changed.items():
        client.set_model_version_tag(name, str(version.version), key, value)
    return len(changed)


def decide(client: Any, name: str, winner: str | None, why: str, winner_row: dict[str, Any] | None,
           versions: dict[str, str], evaluation_fingerprint: str, rescore: Callable[[str], dict[str, Any]],
           rule: Any, chance: float = 0.1) -> Decision:
    """Compares the winner with the current champion by the rule's score and moves the aliases when it is better.

    Better means a score lower by more than the rule's ``tie_tolerance`` (recorded metrics are rounded
    tags, so an identical model must not win on rounding), or a champion that fails a gate the winner passes.

    Args:
        client: An ``MlflowClient``.
        name: The registered model.
        winner: The selected candidate, or None when none passed the gates.
        why: The selection's reason (kept in the decision).
        winner_row: The winner's metrics row (this run's evaluation).
        versions: ``candidate -> registry version`` of this run.
        evaluation_fingerprint: Fingerprint of this run's evaluation (test split, suite, open prompts).
        rescore: The metrics row of a registry version under this run's evaluation (used when the champion
            was evaluated differently).
        rule: The :class:`~evaluation.selection.SelectionRule` in force.
        chance: Prompt-ranking chance level (for the champion's gates).

    Returns:
        The decision (also written as tags on the winner's version).
    """
    import pandas as pd

    from evaluation.selection import GATES, QUALITY, apply_gates, score, story_scored

    champion = current_champion(client, name)
    before = str(champion.version) if champion is not None else None
    if winner is None or winner_row is None:
        return Decision(False, f"nothing promoted: {why}", champion_before=before, champion_after=before,
                        versions=versions)
    version = versions[winner]
    winner_score = score(winner_row, rule)
    champ_ppl = champ_score = None
    if champion is not None and before == version:
        reason = f"{why}; it is already the champion (v{version}: the same model as this run's {winner})"
        decision = Decision(False, reason, winner=winner, winner_version=version, champion_before=before,
                            champion_after=before, versions=versions, winner_score=winner_score,
                            champion_before_score=winner_score)
        _tag(client, name, version, decision)
        return decision
    if champion is not None:
        tags = dict(champion.tags or {})
        recorded = tagged_metrics(tags)
        needed = {"ppl_word", "ranking_acc", "distinct2", "repetition", "open_repetition", *QUALITY,
                  *(["story_quality"] if story_scored(winner_row) else [])}
        if tags.get("evaluation_fingerprint") == evaluation_fingerprint and needed <= set(recorded):
            champ_row, how = recorded, "its recorded metrics under this evaluation"
        else:
            champ_row, how = rescore(before), "evaluated again under this run's evaluation (it was measured otherwise)"
            _record(client, name, before, champ_row, evaluation_fingerprint)

        gated = apply_gates(pd.DataFrame([{"candidate": f"v{before}", "parameters": 0, **champ_row}]), rule, chance)
        champ_ppl, champ_score = float(champ_row["ppl_word"]), float(gated.iloc[0]["score"])
        champ_failed = [g for g in GATES if not bool(gated.iloc[0][f"gate_{g}"])]
        if not champ_failed and not winner_score < champ_score - rule.tie_tolerance:
            decision = Decision(False, f"{winner} (v{version}, score {winner_score:.3f}) is not better than champion "
                                f"v{before} (score {champ_score:.3f}, per-word perplexity {champ_ppl:.3f}; {how}) by "
                                f"more than the tie tolerance {rule.tie_tolerance:g}; the champion stays",
                                winner=winner, winner_version=version, champion_before=before,
                                champion_before_ppl=champ_ppl, champion_after=before, versions=versions,
                                winner_score=winner_score, champion_before_score=champ_score)
            _tag(client, name, version, decision)
            return decision
        client.set_registered_model_alias(name, PREVIOUS, before)
        beaten = (f"champion v{before} fails the gate(s) {', '.join(champ_failed)} ({how})" if champ_failed else
                  f"it beats champion v{before} (score {champ_score:.3f}, {how})")
        reason = f"{why}; {beaten} and becomes the champion; v{before} is now '{PREVIOUS}'"
    else:
        reason = f"{why}; first champion of '{name}'"
    client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(True, reason, winner=winner, winner_version=version, champion_before=before,
                        champion_before_ppl=champ_ppl, champion_after=version, versions=versions,
                        winner_score=winner_score, champion_before_score=champ_score)
    _tag(client, name, version, decision)
    return decision


def _record(client: Any, name: str, version: str, metrics: dict[str, Any], evaluation_fingerprint: str) -> None:
    """Tags ``version`` with its metrics under this evaluation, so the next run compares with them, not again.

    Without it, every run after an evaluation change (a cached rerun included) evaluated the champion again
    until another version was promoted: four minutes each time on the default profile.
    """
    from registry.tags import metric_tags

    for key, value in metric_tags(metrics).items():
        client.set_model_version_tag(name, version, key, value)
    client.set_model_version_tag(name, version, "evaluation_fingerprint", evaluation_fingerprint)


def _tag(client: Any, name: str, version: str, decision: Decision) -> None:
    client.set_model_version_tag(name, version, "promotion", "promoted" if decision.promoted else "not promoted")
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason[:5000])


def _every(search: Callable[..., Any], **query: Any) -> Iterator[Any]:
    """Every result of an MLflow ``search_*`` call, page after page."""
    token = None
    while True:
        page = search(page_token=token, **query)
        yield from page
        token = page.token
        if not token:
            return


def registry_state(client: Any, location: str = "") -> str:
    """A digest of what a promotion reads from the registry: every registered model and version, tags and aliases.

    The ``promote`` step's cache key holds it: a rerun whose inputs and registry are what the last promotion
    left is the same decision, so the step is a cache hit; a moved alias, a new, deleted or retagged version
    (by anyone) makes the step run. Left out: timestamps of changes, and the decision's own record (the
    ``promotion`` and ``promotion_reason`` tags), which the promotion writes and never reads. So the run after
    a change runs the step once more, writes only that record, and the run after it is a cache hit.

    Which registry it is counts too: its location, and its experiments' ids and creation times. Two
    checkouts share one ZenML store (and its cache) but each has its own MLflow store, and an MLflow store
    deleted and made again is a new, empty registry: neither may reuse a promotion made into another.

    Args:
        client: An ``MlflowClient`` on the registry.
        location: The registry's tracking URI.

    Returns:
        A hex SHA-256 of the registry's location, experiments, models, versions, statuses, sources, tags
        and aliases.
    """
    from mlflow.entities import ViewType

    state: list[Any] = [["location", location]]
    record = {"promotion", "promotion_reason"}
    state.extend(["experiment", e.experiment_id, e.name, e.creation_time]
                 for e in _every(client.search_experiments, view_type=ViewType.ALL, max_results=1000))
    state.extend(["model", model.name, model.creation_timestamp, sorted((model.tags or {}).items()),
                  sorted((model.aliases or {}).items())]
                 for model in _every(client.search_registered_models, max_results=100))
    state.extend(["version", version.name, str(version.version), str(version.status), version.source,
                  version.run_id, sorted((k, v) for k, v in (version.tags or {}).items() if k not in record),
                  sorted(version.aliases or [])]
                 for version in _every(client.search_model_versions, max_results=1000))
    return hashlib.sha256(json.dumps(sorted(state, key=json.dumps), default=str).encode()).hexdigest()


def decision_json(decision: Decision) -> str:
    """The decision as pretty JSON (logged to MLflow)."""
    return json.dumps(decision.as_dict(), indent=2)
