"""Step: the evaluation report (metrics, gates, charts, decision, samples side by side) for the dashboard."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from zenml import step
from zenml.types import HTMLString

from steps.tracking import tracked


@step(**tracked())
def evaluation_report(
    metrics: pd.DataFrame,
    samples: pd.DataFrame,
    selection: dict[str, Any],
    promotion: dict[str, Any],
    champion_samples: dict[str, list[str]],
    open_samples: pd.DataFrame,
    real_metrics: pd.DataFrame | None = None,
    measure_check: pd.DataFrame | None = None,
) -> Annotated[HTMLString, "evaluation_report"]:
    """Builds the one page that says which model won and why; also logs it to MLflow.

    Args:
        metrics: The gated metrics.
        samples: The candidates' samples for the same prompts.
        selection: The selection with its rule and reasons.
        promotion: The promotion decision.
        champion_samples: The previous champion's samples, ``test`` and ``open`` (empty when there was none).
        open_samples: Every candidate's open-prompt samples with the prompt words they use.
        real_metrics: Every candidate's figures on the real test sets (none when the profile names none).
        measure_check: Each story-quality measure's check on known-order pairs.

    Returns:
        The report as HTML.
    """
    import mlflow

    from evaluation.report import build_report

    page = build_report(metrics, samples, selection, promotion, champion_samples.get("test") or None, open_samples,
                        champion_samples.get("open") or None, real_metrics, measure_check)
    mlflow.log_text(page, "evaluation_report.html")
    return HTMLString(page)
