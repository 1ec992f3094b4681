"""Promotion through the MLflow model registry: candidates become versions, the alias ``champion`` moves on merit.

Every candidate becomes a version of the registered model (default ``creative-writer``), tagged with its
family, the ZenML run id, the data and test-split fingerprints and its metrics. The selected winner is
compared with the current ``@champion`` on the *same* test set: the champion's tagged per-word
perplexity is reused when its test fingerprint matches, and the champion is re-scored otherwise. The
alias moves only when the winner is strictly better; the replaced version then gets
``previous-champion``. Aliases, not the stages MLflow deprecated. The alias is only ever set to a
version that has just been created or read back from the registry, so it never points at a missing one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

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


def metric_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """``metric.<name>`` tags of the numeric metrics."""
    return {f"metric.{k}": f"{v:.6g}" for k, v in metrics.items() if isinstance(v, int | float)
            and not isinstance(v, bool)}


def register_candidates(name: str, model_uris: dict[str, str], tags: dict[str, dict[str, str]]) -> dict[str, str]:
    """Registers each candidate's logged model as a new version; returns ``candidate -> version``."""
    import mlflow

    versions = {}
    for candidate, uri in model_uris.items():
        mv = mlflow.register_model(uri, name, tags=tags.get(candidate, {}))
        versions[candidate] = str(mv.version)
        log.info("registered %s as %s version %s", candidate, name, mv.version)
    return versions


def decide(client: Any, name: str, winner: str | None, why: str, winner_ppl: float | None, versions: dict[str, str],
           test_fingerprint: str, rescore: Callable[[str], float]) -> Decision:
    """Compares the winner with the current champion and moves the aliases when it is better.

    Args:
        client: An ``MlflowClient``.
        name: The registered model.
        winner: The selected candidate, or None when none passed the gates.
        why: The selection's reason (kept in the decision).
        winner_ppl: The winner's per-word perplexity on this test split.
        versions: ``candidate -> registry version`` of this run.
        test_fingerprint: Fingerprint of this run's test split.
        rescore: Per-word perplexity of a registry version on this test split (used when the champion was
            measured on a different test split).

    Returns:
        The decision (also written as tags on the winner's version).
    """
    champion = current_champion(client, name)
    before = str(champion.version) if champion is not None else None
    if winner is None:
        return Decision(False, f"nothing promoted: {why}", champion_before=before, champion_after=before,
                        versions=versions)
    version = versions[winner]
    champ_ppl = None
    if champion is not None:
        tags = champion.tags or {}
        if tags.get("test_fingerprint") == test_fingerprint and "metric.ppl_word" in tags:
            champ_ppl = float(tags["metric.ppl_word"])
            how = "its recorded score on this test split"
        else:
            champ_ppl = rescore(before)
            how = "re-scored on this test split (it was measured on another)"
        if not winner_ppl < champ_ppl:
            decision = Decision(False, f"{winner} (v{version}, per-word perplexity {winner_ppl:.3f}) is not better "
                                f"than champion v{before} ({champ_ppl:.3f}, {how}); the champion stays", winner,
                                version, before, champ_ppl, before, versions)
            _tag(client, name, version, decision)
            return decision
        client.set_registered_model_alias(name, PREVIOUS, before)
        reason = (f"{why}; it beats champion v{before} ({champ_ppl:.3f}, {how}) and becomes the champion; "
                  f"v{before} is now '{PREVIOUS}'")
    else:
        reason = f"{why}; first champion of '{name}'"
    client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(True, reason, winner, version, before, champ_ppl, version, versions)
    _tag(client, name, version, decision)
    return decision


def _tag(client: Any, name: str, version: str, decision: Decision) -> None:
    client.set_model_version_tag(name, version, "promotion", "promoted" if decision.promoted else "not promoted")
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason[:5000])


def decision_json(decision: Decision) -> str:
    """The decision as pretty JSON (logged to MLflow)."""
    return json.dumps(decision.as_dict(), indent=2)
