"""The monitoring pipeline: the served traffic and writers' feedback, reported and checked."""

from __future__ import annotations

from zenml import pipeline

from monitoring.config import Thresholds
from steps import check_thresholds, load_traffic, monitoring_report


@pipeline(name="monitoring_pipeline", enable_cache=False)
def monitoring_pipeline(since: str = "7d", thresholds: Thresholds | None = None) -> None:
    """load_traffic → monitoring_report → check_thresholds.

    ``python run.py --pipeline monitoring [--since 24h]`` reads the request log the service writes into the
    workspace database, reports it (HTML in ZenML's dashboard, figures in MLflow) and fails with the
    breaches named when a threshold of ``configs/monitoring.yaml`` is crossed.

    Args:
        since: The window: ``30m``, ``24h``, ``7d``, ``2w``, an ISO date, or '' for everything kept.
        thresholds: What counts as a breach (None: the defaults of :class:`~monitoring.config.Thresholds`).
    """
    traffic, feedback, lost = load_traffic(since=since)
    summary, _ = monitoring_report(traffic=traffic, feedback=feedback, lost=lost, since=since, thresholds=thresholds)
    check_thresholds(summary=summary, thresholds=thresholds)
