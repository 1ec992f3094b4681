"""Step: load the configured data sources into one frame of the data contract."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step

from corpus.loaders import load_sources
from infra.zenml_utils import log_step_metadata


@step
def ingest_data(dataset: list[str], source_fingerprint: str = "") -> Annotated[pd.DataFrame, "raw_corpus"]:
    """Loads and concatenates the data sources.

    Args:
        dataset: Source specs (see ``corpus.loaders``), e.g. ``["builtin?n=6000"]``.
        source_fingerprint: Fingerprint of the files behind the specs, computed by ``run.py``; it is a
            parameter only so that ZenML's cache notices edited data files.

    Returns:
        The raw corpus.
    """
    frame = load_sources(dataset)
    log_step_metadata({"pieces": len(frame), "sources": sorted(frame["source"].unique().tolist()),
                       "megabytes": round(float(frame["text"].str.len().sum()) / 1e6, 3)})
    return frame
