import pandas as pd
import pytest
from pydantic import ValidationError

from corpus import cleaning
from corpus.cleaning import CleaningConfig, clean_corpus
from corpus.schema import DataError
from tests.conftest import STORY, frame, names

ONLY = {name: False for name in cleaning.RULE_NAMES if name != "blocklist"}


def only(rule: str, **kw) -> CleaningConfig:
    """A config with every rule off but ``rule``."""
    return CleaningConfig(**{**ONLY, rule: True, **kw}) if rule != "blocklist" else CleaningConfig(**ONLY, **kw)


def stat(stats: pd.DataFrame, rule: str) -> dict:
    return stats.set_index("rule").loc[rule].to_dict()


def test_unicode_rule_normalises_quotes_dashes_and_controls():
    df = frame([{"text": "\u201cHello\u201d \u2014 it\u2019s \ufb01ne\u2026\x07", "prompt": "Write a story\u00a0now."}])
    out, stats = clean_corpus(df, only("unicode"))
    assert out.loc[0, "text"] == '"Hello"  -  it\'s fine...'
    assert out.loc[0, "prompt"] == "Write a story now."
    assert stat(stats, "unicode")["changed"] == 1


def test_writingprompts_rule_fixes_newlines_tags_and_tokenisation():
    df = frame([{"source": "writingprompts", "prompt": "[ WP ] You ca n't sleep , so you walk .",
                 "text": "I did n't know . <newline> <newline> `` Who 's there ? '' I asked ( quietly ) ."}])
    out, stats = clean_corpus(df, only("writingprompts"))
    assert out.loc[0, "prompt"] == "You can't sleep, so you walk."
    assert out.loc[0, "text"] == "I didn't know.\n\n\"Who's there?\" I asked (quietly)."
    assert stat(stats, "writingprompts")["changed"] == 1


def test_writingprompts_rule_leaves_clean_rows_alone():
    df = frame([{"text": "It's fine, really. Nothing to fix here!"}])
    out, stats = clean_corpus(df, only("writingprompts"))
    assert out.loc[0, "text"] == "It's fine, really. Nothing to fix here!"
    assert stat(stats, "writingprompts")["changed"] == 0


def test_gutenberg_rule_drops_boilerplate_lines():
    text = "The fox ran.\nEnd of the Project Gutenberg EBook of Fables\nProduced by Someone\nThe end."
    out, _ = clean_corpus(frame([{"text": text}]), only("gutenberg"))
    assert out.loc[0, "text"] == "The fox ran.\nThe end."


def test_whitespace_rule():
    df = frame([{"text": "  Hello   world !!!!!  \n\n\n\n  Next  line ,  ok ?? \t"}])
    out, _ = clean_corpus(df, only("whitespace"))
    assert out.loc[0, "text"] == "Hello world!!!\n\nNext line, ok??"


def test_truncate_cuts_at_a_sentence_boundary_within_max_words():
    out, stats = clean_corpus(frame([{"text": STORY}]), only("truncate", max_words=30))
    text = out.loc[0, "text"]
    assert len(text.split()) <= 30
    assert text.endswith(".") and STORY.startswith(text)
    assert stat(stats, "truncate")["changed"] == 1
    short, _ = clean_corpus(frame([{"text": STORY}]), only("truncate", max_words=300))
    assert short.loc[0, "text"] == STORY


def test_truncate_cuts_a_single_overlong_sentence_by_words():
    assert cleaning.truncate_at_sentence("word " * 50, 10) == " ".join(["word"] * 10)


def test_length_filter_on_pieces_and_prompts():
    df = frame([{"text": "Too short."}, {"text": STORY}, {"text": STORY + " x", "prompt": "Hi"}])
    out, stats = clean_corpus(df, only("length", min_words=20, min_prompt_words=3))
    assert out["id"].tolist() == ["t-1"]
    assert stat(stats, "length")["removed"] == 2


def test_exact_duplicates_ignore_case_and_punctuation():
    df = frame([{"text": STORY}, {"text": STORY.upper().replace(".", "!")}, {"text": STORY + " The end."}])
    out, stats = clean_corpus(df, only("exact_dupes"))
    assert out["id"].tolist() == ["t-0", "t-2"]
    assert stat(stats, "exact_dupes")["removed"] == 1


def test_near_duplicates_are_removed_and_distinct_pieces_kept():
    other = ("The robot woke up in a silent factory on the moon and wondered where everybody had gone. "
             "It rolled between the machines, calling out, until a small light blinked back at it from the dark.")
    near = STORY.replace("small fox", "little fox")
    out, stats = clean_corpus(frame([{"text": STORY}, {"text": near}, {"text": other}]),
                              only("near_dupes", near_dupe_threshold=0.7))
    assert out["id"].tolist() == ["t-0", "t-2"]
    assert stat(stats, "near_dupes")["removed"] == 1


def test_english_filter_uses_the_stop_word_ratio():
    german = "Der Fuchs lief schnell durch den dunklen Wald und suchte seine verlorenen Trauben im Schnee."
    out, _ = clean_corpus(frame([{"text": STORY}, {"text": german}]), only("english", min_stopword_ratio=0.25))
    assert out["id"].tolist() == ["t-0"]
    assert cleaning.stopword_ratio(STORY) > 0.4 > cleaning.stopword_ratio(german)


def test_blocklist_matches_whole_words_only_and_is_off_when_empty():
    df = frame([{"text": "A grim tale of darkness."}, {"text": "A pilgrimage to the sea."}])
    out, _ = clean_corpus(df, only("blocklist", blocklist=["grim"]))
    assert out["id"].tolist() == ["t-1"]
    _, off = clean_corpus(df, only("blocklist"))
    assert not stat(off, "blocklist")["enabled"]


def test_stats_cover_every_rule_in_order_and_add_up():
    df = frame([{"text": STORY}, {"text": STORY}, {"text": "short"}])
    out, stats = clean_corpus(df, CleaningConfig(min_words=10))
    assert stats["rule"].tolist() == list(cleaning.RULE_NAMES)
    assert (stats["rows_in"] - stats["removed"] == stats["rows_out"]).all()
    assert (stats["rows_out"].iloc[:-1].to_numpy() == stats["rows_in"].iloc[1:].to_numpy()).all()
    assert stats["rows_out"].iloc[-1] == len(out) == 1


def test_parallel_workers_give_the_same_result(monkeypatch):
    from corpus.builtin import generate_corpus

    df = generate_corpus(120, seed=9)
    monkeypatch.setattr(cleaning, "PARALLEL_MIN_CHARS", 0)
    one, stats1 = clean_corpus(df, CleaningConfig(workers=1))
    two, stats2 = clean_corpus(df, CleaningConfig(workers=2))
    assert one.equals(two)
    cols = ["rule", "rows_in", "rows_out", "removed", "changed"]
    assert stats1[cols].equals(stats2[cols])


def test_empty_result_names_the_rule():
    with pytest.raises(DataError, match=names("'length'")):
        clean_corpus(frame([{"text": "tiny"}]), CleaningConfig(min_words=50))


def test_unknown_or_out_of_range_settings_are_rejected():
    with pytest.raises(ValidationError, match="min_wrds"):
        CleaningConfig(min_wrds=3)
    with pytest.raises(ValidationError, match="near_dupe_threshold"):
        CleaningConfig(near_dupe_threshold=1.5)


def test_input_must_follow_the_contract():
    with pytest.raises(DataError, match=names("['prompt']")):
        clean_corpus(pd.DataFrame({"id": ["a"], "source": ["s"], "form": ["story"], "genre": [""], "text": ["x"]}))


@pytest.mark.shared_data
def test_real_writingprompts_come_out_clean(shared_datasets):
    from corpus.loaders import load_one

    raw = load_one(f"writingprompts:{shared_datasets}/writingprompts?limit=60")
    out, _ = clean_corpus(raw)
    joined = " ".join(out["text"]) + " ".join(out["prompt"])
    for artefact in ("<newline>", "[ WP ]", " n't", "``", " ,"):
        assert artefact not in joined
    assert (out["text"].str.split().str.len() <= 300).all()
