"""The training pipeline: data in, the shared tokenizer, the model families (evaluation/promotion: issue #6)."""

from __future__ import annotations

from zenml import pipeline

from steps import clean_data, data_report, ingest_data, split_data, train_seq2seq, train_tokenizer, train_transformer


@pipeline(name="training_pipeline")
def training_pipeline(dataset: list[str], source_fingerprint: str = "") -> None:
    """ingest_data → clean_data → split_data → data_report; train_tokenizer → train_seq2seq, train_transformer
    (both read the split and the shared tokenizer, so they run in either order).

    Args:
        dataset: Source specs (see ``corpus.loaders``).
        source_fingerprint: Fingerprint of the files behind the specs (cache key for edited files).
    """
    raw = ingest_data(dataset=dataset, source_fingerprint=source_fingerprint)
    clean, stats = clean_data(corpus=raw)
    split = split_data(corpus=clean)
    data_report(raw=raw, clean=clean, stats=stats, split=split)
    tokenizer = train_tokenizer(split=split)
    train_seq2seq(split=split, tokenizer=tokenizer)
    train_transformer(split=split, tokenizer=tokenizer)
