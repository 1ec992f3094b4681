"""Step: register every candidate in the MLflow registry and move ``@champion`` to the winner if it is better."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from zenml import get_step_context, step
from zenml.artifacts.unmaterialized_artifact import UnmaterializedArtifact
from zenml.config import CachePolicy

from core.paths import REGISTERED_NAME
from infra.zenml_utils import update_model_version
from steps.tracking import tracked

log = logging.getLogger(__name__)


def registry_cache_key() -> str:
    """The ``promote`` step's cache function: the state of the active stack's MLflow registry.

    With it in the cache key, a rerun whose inputs are unchanged and whose registry is as the last promotion
    left it is a cache hit (the same decision); any change in the registry, by anyone, runs the step. When
    the registry cannot be read, a fresh value: the step runs and reports the real error.
    """
    try:
        from mlflow import MlflowClient
        from zenml.client import Client

        from evaluation.promotion import registry_state

        Client().active_stack.experiment_tracker.configure_mlflow()  # the stack's registry, as the step sees it
        client = MlflowClient()
        return registry_state(client, client.tracking_uri)
    except Exception as exc:  # a key that never matches is the safe answer
        log.warning("promote runs: the registry's state could not be read for its cache key (%s)", exc)
        return uuid.uuid4().hex


# named by its import path: resolving the function object needs ZenML's source root, which a fresh clone
# (no `zenml init` yet) imported from `python -c` or a test worker does not have
@step(**tracked(cache_policy=CachePolicy(cache_func="steps.promote.registry_cache_key")))
def promote(
    split: pd.DataFrame,
    metrics: pd.DataFrame,
    selection: dict[str, Any],
    samples: pd.DataFrame,
    open_samples: pd.DataFrame,
    seq2seq_model: UnmaterializedArtifact,
    transformer_model: UnmaterializedArtifact,
    gan_model: UnmaterializedArtifact,
    base_model: UnmaterializedArtifact,
    registered_model: str = REGISTERED_NAME,
) -> tuple[Annotated[dict[str, Any], "promotion"], Annotated[dict[str, list[str]], "champion_samples"]]:
    """Registers new candidates (tagged; a model the registry holds is reused), compares the winner with the champion.

    Args:
        split: The split corpus (the champion is re-scored on its test rows when needed).
        metrics: The gated metrics of this run's candidates.
        selection: The selection (winner, reasons, suite settings, fingerprints).
        samples: This run's test-prompt samples (the champion's, when it is one of this run's models).
        open_samples: This run's open-prompt samples (likewise).
        seq2seq_model: The attention seq2seq model directory's artifact (unpacked only if it must be registered).
        transformer_model: The Transformer model directory's artifact (likewise).
        gan_model: The GAN model directory's artifact (likewise).
        base_model: The untuned base's artifact (a candidate when the evaluation scored it).
        registered_model: The MLflow registered model's name.

    Returns:
        The decision (with reasons and versions) and the previous champion's samples for the report
        (``test`` and ``open`` prompts).
    """
    import mlflow

    from evaluation.champion import StoredModel, promote_candidates
    from evaluation.promotion import decision_json

    try:
        run_id = str(get_step_context().pipeline_run.id)
    except RuntimeError:  # called through .entrypoint() in tests
        run_id = "no-zenml-run"
    artifacts = {"seq2seq": seq2seq_model, "transformer": transformer_model, "gan": gan_model, "base": base_model}
    candidates = {c: StoredModel(str(a.id), lambda a=a: Path(a.load())) for c, a in artifacts.items()
                  if c in set(metrics["candidate"])}  # those evaluated
    decision, champion_samples = promote_candidates(candidates, metrics, selection, split, run_id, registered_model,
                                                    samples, open_samples)
    mlflow.log_text(decision_json(decision), "promotion.json")
    winner_metrics = metrics[metrics["candidate"] == decision.winner].to_dict("records")
    update_model_version({"decision": decision.as_dict(), "metrics": winner_metrics[0] if winner_metrics else {}},
                         production=decision.promoted)
    print(f"[promote] {decision.reason}")
    return decision.as_dict(), champion_samples
