"""Step: the HTML data report shown in the ZenML dashboard."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step
from zenml.types import HTMLString

from corpus.report import build_report


@step
def data_report(
    raw: pd.DataFrame, clean: pd.DataFrame, stats: pd.DataFrame, split: pd.DataFrame
) -> Annotated[HTMLString, "data_report"]:
    """Builds the data report: rules, split sizes, length histograms, frequent words, examples.

    Args:
        raw: The ingested corpus.
        clean: The cleaned corpus.
        stats: The cleaning stats.
        split: The split corpus.

    Returns:
        The report as HTML (rendered by the dashboard).
    """
    return HTMLString(build_report(raw, clean, stats, split))
