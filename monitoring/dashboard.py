"""The monitoring report as one HTML page (figures embedded), for ZenML's dashboard and a file."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import pandas as pd


def figure_png(traffic: pd.DataFrame, reference: pd.DataFrame, buckets: pd.DataFrame) -> bytes:
    """Four panels: requests, p95 latency and 5xx errors over time, and served against training prompt lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    (requests, latency), (errors, lengths) = axes
    if len(buckets):
        minutes = buckets.attrs.get("bucket_minutes", 60)
        width = 0.8 * minutes / 1440  # matplotlib's date axis counts days
        starts = buckets["bucket"].dt.tz_localize(None)
        requests.bar(starts, buckets["requests"], width=width, align="edge")
        latency.plot(starts + pd.Timedelta(minutes=minutes / 2), buckets["p95_ms"], marker="o")
        errors.bar(starts, buckets["errors"], color="tab:red", width=width, align="edge")
        span = (starts.min() - pd.Timedelta(minutes=minutes), starts.max() + pd.Timedelta(minutes=2 * minutes))
        for axis in (requests, latency, errors):
            axis.set_xlim(*span)
        errors.set_ylim(bottom=0, top=max(1, int(buckets["errors"].max()) + 1))
    requests.set_title("requests per bucket")
    latency.set_title("p95 latency of served requests (ms)")
    errors.set_title("5xx answers per bucket")
    for axis in (requests, latency, errors):
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    if len(reference):
        lengths.hist(reference["prompt"].str.len(), bins=30, alpha=0.5, density=True, label="training/evaluation")
    if len(traffic):
        lengths.hist(traffic["prompt_chars"], bins=30, alpha=0.5, density=True, label="served")
    lengths.set_title("prompt length (characters)")
    lengths.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(summary: dict[str, Any], png: bytes) -> str:
    """The page: breaches first, then the overview, per-model feedback, the comparison, drift and the figure."""
    view, moved = summary["overview"], summary["drift"]
    parts = ["<h2>Served traffic</h2>"]
    if not view["requests"]:
        parts.append("<p><b>No traffic in this window.</b> Serve the champion (python run.py --pipeline deployment) "
                     "and send requests; then run the monitoring pipeline again.</p>")
    if summary["breaches"]:
        parts.append("<div style='color:#a00'><b>Thresholds breached:</b><ul>" + "".join(
            f"<li>{html.escape(b)}</li>" for b in summary["breaches"]) + "</ul></div>")
    elif view["requests"] and not summary["judged"]:
        parts.append(f"<p>Thresholds not judged: {view['requests']} requests, fewer than "
                     f"thresholds.min_requests {summary['thresholds']['min_requests']}.</p>")
    else:
        parts.append("<p>No threshold breached.</p>" if view["requests"] else "")
    window = summary["window"]
    parts.append(f"<p>Window: {html.escape(window['first'] or '-')} to {html.escape(window['last'] or '-')}"
                 f"{' (since ' + html.escape(window['since']) + ')' if window['since'] else ''}.</p>")
    overview_rows = [{"measure": k, "value": v} for k, v in view.items()]
    parts.append(_table(overview_rows, ["measure", "value"]))
    parts.append("<h3>Per model version</h3>")
    parts.append(_table(summary["models"], ["model_version", "alias", "requests", "error_rate", "latency_median_ms",
                                            "latency_ci_ms", "verdicts", "positive_rate", "positive_ci", "kinds"]))
    if summary["comparison"]:
        comparison = summary["comparison"]
        parts.append("<h3>Challenger against champion</h3>")
        parts.append(_table([comparison], ["challenger", "champion", "positive_rate_diff", "positive_rate_diff_ci",
                                           "latency_median_diff_ms", "latency_median_diff_ci_ms", "ahead"]))
    parts.append("<h3>Drift of served prompts against training and evaluation prompts</h3>")
    parts.append(_table([{"measure": k, "value": v} for k, v in moved.items()], ["measure", "value"]))
    parts.append(f"<img alt='traffic over time' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>")
    style = ("<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style>")
    return f"<html><head><meta charset='utf-8'>{style}</head><body>{''.join(parts)}</body></html>"
