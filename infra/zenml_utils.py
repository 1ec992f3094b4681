"""Small helpers around ZenML used by the steps."""

from __future__ import annotations

import logging
from typing import Any


def log_step_metadata(metadata: dict[str, Any], artifact_name: str | None = None) -> bool:
    """Logs metadata onto the running step's output artifact; a no-op outside a pipeline run.

    Steps call this so that they also run through ``step.entrypoint()`` in unit tests.

    Args:
        metadata: JSON-serialisable values.
        artifact_name: The output to attach to (needed when the step has several outputs).

    Returns:
        Whether anything was logged.
    """
    from zenml import get_step_context, log_metadata

    try:
        get_step_context()
    except RuntimeError:
        return False
    log_metadata(metadata, artifact_name=artifact_name, infer_artifact=True)
    return True


# Integrations whose materializers the pipelines need. ZenML (0.98) imports every installed integration
# before each run (torch, scikit-learn and bentoml alone cost ~5 s here), even when every step is cached.
NEEDED_INTEGRATIONS: dict[str, tuple[str, ...]] = {
    "training": ("pandas", "numpy", "pillow"),
    "inference": ("pandas", "numpy"),
    "deployment": ("bentoml",),
    "monitoring": ("pandas", "numpy"),
}


def limit_eager_integrations(pipeline: str) -> bool:
    """Makes ZenML eagerly activate only the integrations ``pipeline`` needs.

    Other integrations still load on demand (a flavor or materializer is imported when it is used);
    only the up-front import of all of them is skipped. Touches ZenML's integration registry, so it
    checks the attribute it relies on and leaves ZenML alone when that changed.

    Args:
        pipeline: A key of :data:`NEEDED_INTEGRATIONS`; unknown pipelines keep ZenML's behaviour.

    Returns:
        Whether activation was limited.
    """
    keep = NEEDED_INTEGRATIONS.get(pipeline)
    if keep is None:
        return False
    from zenml.integrations.registry import integration_registry

    registry = integration_registry
    if not callable(getattr(registry, "_initialize", None)) or not hasattr(registry, "_integrations"):
        return False

    def activate_needed() -> None:
        registry._initialize()
        for name in keep:
            integration = registry._integrations.get(name)
            if integration is not None and integration.check_installation():
                integration.activate()

    registry.activate_integrations = activate_needed  # instance attribute shadows the method
    return True


# The frameworks ZenML's MLflow tracker switches autologging off for after every step (ZenML 0.98).
AUTOLOG_FRAMEWORKS = ("tensorflow", "xgboost", "lightgbm", "statsmodels", "spark", "sklearn", "fastai", "pytorch")


def disable_only_active_autologging() -> bool:
    """Makes ZenML's MLflow tracker switch autologging off only for the frameworks whose flavor was imported.

    After every tracked step ZenML (0.98) calls ``autolog(disable=True)`` for eight frameworks, importing
    each flavor to do it: ``mlflow.pytorch`` imports torch, which cost the ``promote`` step of a cached rerun
    2.8 s of its 4.7 s. Autologging for a framework can only be on once its flavor module was imported
    (``mlflow.autolog`` imports it when it enables it), so the frameworks whose flavor is not in
    ``sys.modules`` are skipped: nothing that was on stays on. Checks the method it replaces and leaves ZenML
    alone when that changed.

    Returns:
        Whether ZenML's tracker was changed.
    """
    import sys

    from zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker import MLFlowExperimentTracker

    original = getattr(MLFlowExperimentTracker, "disable_autologging", None)
    if getattr(original, "_only_active", False):
        return True
    named: set[Any] = set()
    for const in getattr(getattr(original, "__code__", None), "co_consts", ()):
        named.update(const if isinstance(const, tuple) else (const,))
    if not set(AUTOLOG_FRAMEWORKS) <= named:  # not the method this replaces: ZenML is left as it is
        return False

    def disable_autologging(self: Any) -> None:  # ZenML's signature
        for framework in AUTOLOG_FRAMEWORKS:
            flavor = sys.modules.get(f"mlflow.{framework}")
            if flavor is None:  # never imported: its autologging was never on
                continue
            try:
                flavor.autolog(disable=True)
            except Exception as exc:  # as ZenML: said, and the step's clean-up goes on
                logging.getLogger(__name__).warning("could not switch MLflow autologging off for %s: %s",
                                                    framework, exc)

    disable_autologging._only_active = True  # type: ignore[attr-defined]
    MLFlowExperimentTracker.disable_autologging = disable_autologging  # type: ignore[method-assign]
    return True


def update_model_version(metadata: dict[str, Any], production: bool) -> bool:
    """Logs metadata onto the run's ZenML model version and, if ``production``, sets its stage.

    A no-op outside a pipeline run or when the pipeline has no ``model:``.

    Returns:
        Whether a model version was updated.
    """
    from zenml import get_step_context, log_metadata

    try:
        context = get_step_context()
        model = context.model
    except Exception:  # no step context (RuntimeError), or a pipeline without a model
        return False
    log_metadata(metadata, model_name=model.name, model_version=model.version)
    if production:
        model.set_stage("production", force=True)
    return True
