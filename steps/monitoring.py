"""Steps of the monitoring pipeline: read the request log, report on it, check the thresholds."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from zenml import step
from zenml.types import HTMLString

from infra.zenml_utils import log_step_metadata
from monitoring.config import Thresholds
from steps.tracking import tracked


@step(enable_cache=False)  # the log grows between runs: always read it
def load_traffic(since: str = "7d", database_url: str = "") -> tuple[
    Annotated[pd.DataFrame, "served_traffic"],
    Annotated[pd.DataFrame, "served_feedback"],
    Annotated[int, "log_rows_lost"],
]:
    """The request log, writers' feedback and the count of log rows lost, from ``since`` on.

    Args:
        since: ``30m``, ``24h``, ``7d``, ``2w``, an ISO date, or '' for everything kept.
        database_url: The workspace database ('' = ``$CW_DATABASE_URL``, else ``.state/workspace.db``).

    Raises:
        LookupError: When the database cannot be read (the reason said).
    """
    from monitoring.config import parse_since
    from workspace.db import connect, migrate
    from workspace.db import database_url as resolve_url
    from workspace.traffic import read_feedback, read_gaps, read_traffic

    start = parse_since(since)
    engine = connect(resolve_url(database_url))
    migrate(engine)
    traffic, feedback, lost = read_traffic(engine, start), read_feedback(engine, start), read_gaps(engine, start)
    log_step_metadata({"requests": len(traffic), "since": since}, artifact_name="served_traffic")
    return traffic.drop(columns=["output_text"]), feedback, lost  # outputs are not reported on


@step(**tracked())
def monitoring_report(traffic: pd.DataFrame, feedback: pd.DataFrame, lost: int, since: str = "7d",
                      thresholds: Thresholds | None = None) -> tuple[
    Annotated[dict[str, Any], "monitoring_summary"],
    Annotated[HTMLString, "monitoring_dashboard"],
]:
    """Traffic, latency, errors, tokens/s, feedback per model version, champion vs challenger, drift.

    Logs the figures to MLflow (one run per report, so they form time series) and saves the page.
    """
    import mlflow

    from monitoring.analysis import metrics, summarize, timeline
    from monitoring.config import parse_since
    from monitoring.dashboard import figure_png, render
    from monitoring.reference import reference_prompts

    limits = thresholds or Thresholds()
    reference, origin = reference_prompts()
    summary = summarize(traffic, feedback, lost, reference, limits, parse_since(since))
    summary["drift"]["reference"] = origin
    mlflow.log_metrics(metrics(summary))
    page = render(summary, figure_png(traffic, reference, timeline(traffic)))
    mlflow.log_text(page, "monitoring_report.html")
    log_step_metadata({"requests": summary["overview"]["requests"], "breaches": summary["breaches"]},
                      artifact_name="monitoring_summary")
    return summary, HTMLString(page)


@step(enable_cache=False)
def check_thresholds(summary: dict[str, Any], thresholds: Thresholds | None = None) -> None:
    """Fails with the breaches named (after the report is saved); with an alerter in the stack, posts them instead.

    Raises:
        RuntimeError: When a threshold is breached, ``fail_on_breach`` is true and no alerter is configured.
    """
    from zenml.client import Client

    limits = thresholds or Thresholds()
    if not summary["breaches"]:
        return
    message = "monitoring: " + "; ".join(summary["breaches"])
    alerter = Client().active_stack.alerter
    if alerter is not None:
        alerter.post(message)
        return
    if limits.fail_on_breach:
        raise RuntimeError(message + " (set monitoring_report.thresholds in configs/monitoring.yaml, or add a ZenML "
                                     "alerter to the stack to be told instead)")
