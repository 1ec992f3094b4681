"""The training pipeline: data in, (later issues: models trained, evaluated and promoted)."""

from __future__ import annotations

from zenml import pipeline

from steps import clean_data, data_report, ingest_data, split_data


@pipeline(name="training_pipeline")
def training_pipeline(dataset: list[str], source_fingerprint: str = "") -> None:
    """ingest_data → clean_data → split_data → data_report.

    Args:
        dataset: Source specs (see ``corpus.loaders``).
        source_fingerprint: Fingerprint of the files behind the specs (cache key for edited files).
    """
    raw = ingest_data(dataset=dataset, source_fingerprint=source_fingerprint)
    clean, stats = clean_data(corpus=raw)
    split = split_data(corpus=clean)
    data_report(raw=raw, clean=clean, stats=stats, split=split)
