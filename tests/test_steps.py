"""Steps called through .entrypoint(): no stack, no pipeline run."""

from corpus.cleaning import CleaningConfig
from steps import clean_data, data_report, ingest_data, split_data


def test_steps_chain_through_entrypoints():
    raw = ingest_data.entrypoint(dataset=["builtin?n=80&seed=2"])
    assert len(raw) == 80
    clean, stats = clean_data.entrypoint(corpus=raw, config=CleaningConfig(workers=1))
    assert len(stats) == 10 and len(clean) <= len(raw)
    split = split_data.entrypoint(corpus=clean, validation=0.2, test=0.2)
    assert set(split["split"]) == {"train", "validation", "test"}
    page = data_report.entrypoint(raw=raw, clean=clean, stats=stats, split=split)
    assert str(page).startswith("<!doctype html>")


def test_clean_step_defaults_its_config():
    raw = ingest_data.entrypoint(dataset=["builtin?n=20"])
    clean, _ = clean_data.entrypoint(corpus=raw)
    assert len(clean) == 20
