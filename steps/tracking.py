"""The experiment-tracker set-up of the steps that log to MLflow, written once for all of them."""

from __future__ import annotations

from typing import Any

from core.paths import TRACKER


def tracked(**options: Any) -> dict[str, Any]:
    """``@step`` options for a step that logs to the stack's MLflow tracker, as its own nested MLflow run.

    Args:
        options: Further ``@step`` options (e.g. ``enable_cache=False``).

    Returns:
        The options with the tracker (the component every stack names ``cw-mlflow-tracker``) and its
        ``nested`` setting; a run profile can still override either for one step.
    """
    return {"experiment_tracker": TRACKER, "settings": {"experiment_tracker": {"nested": True}}, **options}
