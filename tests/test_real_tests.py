"""Real test sets: names, loading with the training rules, the held-out check, per-set metrics, report, profile."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from corpus.cleaning import CleaningConfig
from corpus.schema import DataError
from evaluation.real_tests import check_held_out, describe_sets, load_real_tests, set_fingerprint, set_name, text_key
from evaluation.suite import SuiteConfig, real_test_metrics
from tests.conftest import frame, names
from tests.test_evaluation import PromptBlind, PromptMatcher

LOOSE = CleaningConfig(min_words=3, english=False, near_dupes=False, workers=1)


def write_stories(path: Path, stories: list[str]) -> Path:
    path.write_text("\n<|endoftext|>\n".join(stories) + "\n")
    return path


def numbered_sets(sizes: dict[str, int]) -> pd.DataFrame:
    """Pieces ``piece i piece i ...`` (10 words) under ``prompt number i``, grouped in named sets."""
    rows = [{"id": f"{name}/{i}", "source": name, "prompt": f"prompt number {i}", "text": f"piece {i} " * 5}
            for name, n in sizes.items() for i in range(n)]
    return frame(rows)


def test_set_names_are_short_and_metric_safe():
    assert set_name("tinystories:data/TinyStories-valid.txt?limit=5") == "tinystories-TinyStories-valid"
    assert set_name("writingprompts:data/wp?split=test") == "writingprompts-test"
    assert set_name("writingprompts:data/wp") == "writingprompts-train"
    assert set_name("text:books/grimm fairy tales.txt?split=titles") == "text-grimm_fairy_tales"


def test_sets_load_cleaned_by_the_given_rules_and_named_by_their_spec(tmp_path):
    file = write_stories(tmp_path / "valid.txt", [
        "The owl woke early. It flew over the  river\u2019s edge and sang to the moon for a while.",
        "A girl found a shell. She kept it.",  # 3 words after the prompt: kept with min_words=3, not with 10
        "Tom baked bread. He gave the warm loaf to his neighbour and they ate it together.",
    ])
    spec = f"tinystories:{file}"
    loose = load_real_tests([spec], LOOSE)
    assert list(loose["source"].unique()) == ["tinystories-valid"] and len(loose) == 3
    assert loose["id"].str.startswith("tinystories-valid/").all()
    assert "river's edge" in loose["text"].iloc[0]  # the unicode and whitespace rules ran
    strict = load_real_tests([spec], LOOSE.model_copy(update={"min_words": 10}))
    assert len(strict) == 2
    with pytest.raises(DataError, match=names("valid.txt'", "3 pieces", "cleaning")):
        load_real_tests([spec], LOOSE.model_copy(update={"min_words": 200}))
    with pytest.raises(DataError, match="both named 'tinystories-valid'"):
        load_real_tests([spec, f"{spec}?limit=1"], LOOSE)
    assert load_real_tests([], LOOSE).empty


def test_held_out_check_finds_a_training_piece_despite_case_and_punctuation():
    split = frame([{"id": "tr1", "text": "The Cat sat. On the mat!", "split": "train"},
                   {"id": "va1", "text": "A dog ran home.", "split": "validation"},
                   {"id": "te1", "text": "A bird sang.", "split": "test"}])
    real = frame([{"id": "r/1", "source": "books", "text": "the cat sat on the mat"},
                  {"id": "r/2", "source": "books", "text": "Something new."}])
    with pytest.raises(DataError, match=names("'books'", "1 of 2", "r/1", "tr1")):
        check_held_out(real, split)
    from_validation = frame([{"id": "v/1", "source": "other", "text": "a DOG ran home"}])
    with pytest.raises(DataError, match=names("1 of 1", "training")):
        check_held_out(from_validation, split)
    # a test-split piece is not training data; and distinct text passes
    fine = frame([{"id": "f/1", "source": "ok", "text": "A bird sang."}, {"id": "f/2", "source": "ok", "text": "x"}])
    assert check_held_out(fine, split) == {"ok": 2}
    assert text_key("It's  the END.") == "it s the end"


def test_set_fingerprints_ignore_order_and_see_content():
    real = numbered_sets({"a": 4})
    assert set_fingerprint(real) == set_fingerprint(real.iloc[::-1])
    changed = real.copy()
    changed.loc[0, "text"] = "another piece"
    assert set_fingerprint(changed) != set_fingerprint(real)
    described = describe_sets(real, {"a": 4})
    assert described["a"]["pieces"] == 4 and described["a"]["shared_with_training"] == 0
    assert described["a"]["fingerprint"] == set_fingerprint(real)


def test_real_metrics_per_set_with_known_answers():
    real = numbered_sets({"tiny": 8, "wp": 6})
    cfg = SuiteConfig(distractors=3, real_pieces=6, real_ranking_pieces=4)
    rows = real_test_metrics("matcher", PromptMatcher(), real, cfg)
    assert [(r["test_set"], r["pieces"], r["ranking_trials"]) for r in rows] == [("tiny", 6, 4), ("wp", 6, 4)]
    assert all(r["ranking_acc"] == 1.0 and r["chance"] == 0.25 for r in rows)
    assert rows[0]["ppl_word"] == pytest.approx(math.exp(1.0 / 10))  # NLL 1 over 10 words per piece
    blind = real_test_metrics("blind", PromptBlind(), real, cfg)
    assert all(r["ranking_acc"] == 0.0 for r in blind)  # ties are misses
    assert blind[0]["ppl_word"] == pytest.approx(math.exp(2.0 / 10))
    with pytest.raises(ValueError, match=r"real test 'few'.*raise real_pieces"):
        real_test_metrics("m", PromptMatcher(), numbered_sets({"few": 3}), cfg)


def test_evaluation_checks_real_sets_before_any_model_loads(tiny_corpus, tmp_path):
    from evaluation.candidates import evaluate_candidates
    from evaluation.selection import SelectionRule

    train = tiny_corpus[tiny_corpus["split"] == "train"].head(2)
    leaked = train.assign(source="leaky", id="leaky/" + train["id"]).drop(columns="split")
    with pytest.raises(DataError, match=names("'leaky'", "2 of 2")):
        evaluate_candidates({"seq2seq": tmp_path / "does-not-exist"}, tiny_corpus, SuiteConfig(), SelectionRule(),
                            leaked)


def test_evaluation_measures_every_candidate_on_every_set(tiny_corpus, tiny_tokenizer, tmp_path):
    from evaluation.candidates import evaluate_candidates
    from evaluation.report import build_report
    from evaluation.selection import SelectionRule
    from tests.conftest import tiny_writer

    dirs = {"a": tiny_writer(tiny_tokenizer).save(tmp_path / "a"),
            "b": tiny_writer(tiny_tokenizer, hidden=24).save(tmp_path / "b")}
    real = numbered_sets({"set-one": 6, "set-two": 7})
    suite = SuiteConfig(ranking_pieces=5, distractors=3, sample_prompts=2, max_new_tokens=6, open_limit=2,
                        open_max_new_tokens=6, real_pieces=5, real_ranking_pieces=4)
    rule = SelectionRule(min_ranking_margin=-1, min_distinct2=0, max_repetition=1, min_prompt_use=0, min_complete=0)
    result = evaluate_candidates(dirs, tiny_corpus, suite, rule, real)
    got = result.real_metrics
    assert list(zip(got["candidate"], got["test_set"], strict=True)) == [
        ("a", "set-one"), ("a", "set-two"), ("b", "set-one"), ("b", "set-two")]
    assert (got["pieces"] == 5).all() and (got["ranking_trials"] == 4).all() and (got["ppl_word"] > 1).all()
    sets = result.selection["real_tests"]
    assert set(sets) == {"set-one", "set-two"} and sets["set-two"]["pieces"] == 7
    assert result.selection["sizes"]["real_pieces_per_set"] == 5
    # real tests are reported, not scored: the evaluation fingerprint ignores their sizes
    again = evaluate_candidates({"a": dirs["a"]}, tiny_corpus, SuiteConfig(**{**result.selection["suite"],
                                                                            "real_pieces": 6}), rule)
    assert again.selection["evaluation_fingerprint"] == result.selection["evaluation_fingerprint"]
    page = build_report(result.metrics, result.samples, result.selection, {"promoted": False, "reason": "r"},
                        open_samples=result.open_samples, real_metrics=got)
    assert "<h2>Real test sets</h2>" in page and "set-one: per-word ppl" in page and "set-two: ranking" in page
    assert sets["set-one"]["fingerprint"] in page and "chance 25%" in page
    assert "Real test sets" not in build_report(result.metrics, result.samples, result.selection,
                                                {"promoted": False, "reason": "r"})


def test_profile_real_tests_get_the_training_cleaning_rules_and_are_checked(tmp_path):
    from infra.profiles import ProfileError, resolve_profile

    file = write_stories(tmp_path / "s.txt", ["One. Two three four."])
    profile = {"parameters": {"dataset": ["builtin?n=50"]},
               "steps": {"clean_data": {"parameters": {"config": {"max_words": 120}}}}}
    plain = resolve_profile(profile, None, "p.yaml")
    assert "real_tests" not in plain["parameters"] and "load_real_tests" not in plain["steps"]
    resolved = resolve_profile(profile, None, "p.yaml", [f"tinystories:{file}"])
    assert resolved["parameters"]["real_tests"] == [f"tinystories:{file}"]
    assert len(resolved["parameters"]["real_tests_fingerprint"]) == 16
    assert resolved["steps"]["load_real_tests"]["parameters"]["cleaning"] == {"max_words": 120}
    with pytest.raises(DataError, match=names("'tinystories:nowhere.txt'", "nowhere.txt")):
        resolve_profile(profile, None, "p.yaml", ["tinystories:nowhere.txt"])
    with pytest.raises(ProfileError, match=names("p.yaml", "parameters.real_tests")):
        resolve_profile({"parameters": {"dataset": ["builtin"], "real_tests": [3]}}, None, "p.yaml")


def test_real_table_reads_at_any_magnitude():
    from evaluation.report import real_table

    rows = pd.DataFrame([{"candidate": "a", "test_set": "x", "ppl_word": 4.5e9, "ranking_acc": 0.375},
                         {"candidate": "a", "test_set": "y", "ppl_word": 19.079, "ranking_acc": 0.875},
                         {"candidate": "b", "test_set": "x", "ppl_word": 1234.56, "ranking_acc": float("nan")},
                         {"candidate": "b", "test_set": "y", "ppl_word": 2.0, "ranking_acc": 1.0}])
    table = real_table(rows)
    assert list(table.columns) == ["candidate", "x: per-word ppl", "x: ranking", "y: per-word ppl", "y: ranking"]
    assert table.values.tolist() == [["a", "4.50e+09", "38%", "19.1", "88%"], ["b", "1,234.6", "–", "2.0", "100%"]]
