from corpus.builtin import generate_corpus
from corpus.cleaning import CleaningConfig, clean_corpus
from corpus.report import build_report, top_words
from corpus.split import assign_splits


def test_report_has_every_section_and_escapes_text():
    raw = generate_corpus(120, seed=7)
    raw.loc[0, "prompt"] = "Write a story about <script>alert(1)</script> a cat."
    clean, stats = clean_corpus(raw, CleaningConfig(min_words=80))
    split = assign_splits(clean)
    page = build_report(raw, clean, stats, split)
    for section in ("Cleaning rules", "Splits", "Lengths", "Most frequent words", "Example pairs"):
        assert f"<h2>{section}" in page
    assert page.count("data:image/png;base64,") >= 1
    assert "<script>alert(1)</script>" not in page
    for rule in stats["rule"]:
        assert f"<td>{rule}</td>" in page
    assert f"{len(raw)} pieces in → {len(clean)} out" in page


def test_top_words_skips_stop_words():
    words = top_words(generate_corpus(50, seed=1), k=10)
    assert len(words) == 10
    assert not {"the", "and", "a"} & set(words["word"])
    assert words["count"].is_monotonic_decreasing
