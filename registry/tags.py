"""A registry version's metrics as tags (``metric.<name>``): the promotion writes them, it and the server read them.

Plain Python (no torch, no MLflow): a cached rerun compares the champion's recorded metrics without
importing the model code.
"""

from __future__ import annotations

from typing import Any

PREFIX = "metric."


def metric_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """``metric.<name>`` tags of the numeric metrics (booleans are not metrics)."""
    return {f"{PREFIX}{k}": f"{v:.6g}" for k, v in metrics.items() if isinstance(v, int | float)
            and not isinstance(v, bool)}


def tagged_metrics(tags: dict[str, str]) -> dict[str, float]:
    """The ``metric.<name>`` tags of a registry version as numbers (tags that are not numbers skipped)."""
    out = {}
    for key, value in tags.items():
        if key.startswith(PREFIX):
            try:
                out[key[len(PREFIX):]] = float(value)
            except ValueError:
                continue
    return out
