"""The training pipeline: data in, the shared tokenizer, three model families, evaluation and promotion."""

from __future__ import annotations

from zenml import pipeline

from steps import (
    clean_data,
    data_report,
    evaluate,
    evaluation_report,
    ingest_data,
    load_preferences,
    load_real_tests,
    promote,
    split_data,
    train_gan,
    train_seq2seq,
    train_tokenizer,
    train_transformer,
)


@pipeline(name="training_pipeline")
def training_pipeline(dataset: list[str], source_fingerprint: str = "", real_tests: list[str] | None = None,
                      real_tests_fingerprint: str = "", feedback_state: str = "") -> None:
    """Raw data to a promoted champion.

    ingest_data → clean_data → split_data → data_report (and load_real_tests); train_tokenizer →
    train_seq2seq → train_gan and train_transformer (which also saves its untuned base, and runs DPO on the
    writers' preference pairs that ``load_preferences`` builds from their feedback, when there are enough) → evaluate →
    promote → evaluation_report. The trainers read the split and the shared tokenizer; the GAN fine-tunes
    the trained seq2seq adversarially (so GAN vs MLE compares one network before and after). ``evaluate``
    checks its story-quality measures on known-order pairs, then scores the three families and the
    untuned base on the test split and the open prompts (a fine-tune has to beat its own base);
    ``promote`` registers them in the MLflow registry and moves ``@champion`` when the winner beats it.
    Real test sets, when named, are loaded by ``load_real_tests`` (cleaned like the training data, and
    stopped there if they share a piece with the training or validation split) and measured by ``evaluate``.

    Args:
        dataset: Source specs (see ``corpus.loaders``).
        source_fingerprint: Fingerprint of the files behind the specs (cache key for edited files).
        real_tests: Source specs of held-out real test sets (none by default).
        real_tests_fingerprint: Fingerprint of the files behind them (cache key for edited files).
        feedback_state: Fingerprint of the writers' feedback in the workspace database (cache key: new
            feedback builds the pairs and trains again; ``run.py`` sets it).
    """
    raw = ingest_data(dataset=dataset, source_fingerprint=source_fingerprint)
    clean, stats = clean_data(corpus=raw)
    split = split_data(corpus=clean)
    data_report(raw=raw, clean=clean, stats=stats, split=split)
    real = (load_real_tests(split=split, specs=real_tests, source_fingerprint=real_tests_fingerprint)
            if real_tests else None)
    tokenizer = train_tokenizer(split=split)
    seq2seq_model, _, _ = train_seq2seq(split=split, tokenizer=tokenizer)
    gan_model, _, _, _ = train_gan(split=split, tokenizer=tokenizer, seq2seq_model=seq2seq_model)
    preferences = load_preferences(feedback_state=feedback_state)
    transformer_model, base_model, _, _, _ = train_transformer(split=split, tokenizer=tokenizer,
                                                               preferences=preferences)
    models = {"seq2seq_model": seq2seq_model, "transformer_model": transformer_model, "gan_model": gan_model,
              "base_model": base_model}
    metrics, samples, open_samples, real_metrics, selection, measure_check = evaluate(split=split, real_tests=real,
                                                                                      **models)
    promotion, champion_samples = promote(split=split, metrics=metrics, selection=selection, samples=samples,
                                          open_samples=open_samples, **models)
    evaluation_report(metrics=metrics, samples=samples, selection=selection, promotion=promotion,
                      champion_samples=champion_samples, open_samples=open_samples, real_metrics=real_metrics,
                      measure_check=measure_check)
