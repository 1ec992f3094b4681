"""Small helpers around ZenML used by the steps."""

from __future__ import annotations

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
