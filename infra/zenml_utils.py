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
