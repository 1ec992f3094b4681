"""The story-quality measures, their known-order check, and how the evaluation and the rule use them."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from evaluation.measure_check import (
    COMMENTARY,
    build_pairs,
    cached_check,
    check_measures,
    cut_halfway,
    insert_commentary,
    loop_passage,
    other_ending,
    rename_halfway,
    trusted,
)
from evaluation.quality import (
    MEASURES,
    SCALES,
    Judge,
    PieceScores,
    consistency,
    in_fiction,
    names,
    paired_bootstrap,
    score_pieces,
    shuffled,
    story_quality,
    unit_score,
    units,
)
from evaluation.selection import SelectionRule, select
from tests.conftest import names as message_names

TALE = ("Mara lived at the edge of a salt marsh with her grandmother. Every morning Mara walked to the pier to "
        "count the boats. One morning a boat came back empty, and Mara ran to tell the harbour master. The harbour "
        "master laughed at her, so Mara rowed out alone to look for the lost fisherman. She found him clinging to a "
        "buoy, cold and frightened. Mara pulled him aboard and rowed home through the fog. After that day nobody in "
        "the village laughed at Mara again.")
POEM = "The rain taps on the tin roof\nA kettle hums beside the door\nThe cat curls close against the cold\nAnd "\
       "night comes softly to the moor"


def test_names_are_capitalised_words_used_as_names_not_sentence_openers():
    assert set(names(TALE)) == {"Mara"}  # "Every", "One", "She", "After" are openers, not names
    assert names("Hidden under a stone lay a key. Tom took it. Later Tom smiled.") == ["Tom", "Tom"]


def test_consistency_drops_when_a_character_is_renamed_halfway():
    renamed = rename_halfway(TALE, random.Random(0))
    assert renamed is not None and "Marisol" in renamed and "Mara" in renamed
    assert consistency(TALE) == 1.0 and consistency(renamed) < 1.0
    assert consistency("No names here at all, only a quiet lake.") == 1.0
    assert rename_halfway("A quiet lake. A quiet hill.", random.Random(0)) is None


def test_in_fiction_flags_chat_replies_and_commentary_but_not_the_story():
    assert in_fiction(TALE) == 1.0
    assert in_fiction("Great! Let's get started. " + TALE) < 1.0
    assert in_fiction(TALE + " In this story, Mara learns about courage.") < 1.0
    assert in_fiction("Sure, here is a short story about a marsh. " + TALE) < 1.0
    assert in_fiction("") == 1.0


def test_units_are_a_poems_lines_or_a_storys_sentences_and_shuffling_changes_their_order():
    assert len(units(POEM)) == 4 and len(units(TALE)) == 7
    mixed = shuffled(TALE, seed=1)
    assert mixed is not None and mixed != TALE and sorted(units(mixed)) == sorted(units(TALE))
    poem = shuffled(POEM, seed=1)
    assert poem is not None and poem.count("\n") == 3 and poem != POEM
    assert shuffled("One sentence. Two sentences.", 0) is None


def test_perturbations_keep_what_they_should():
    rng = random.Random(3)
    cut = cut_halfway(TALE, rng)
    assert cut is not None and TALE.startswith(cut) and 2 <= len(units(cut)) <= 6
    looped = loop_passage(TALE, rng)
    assert looped is not None and len(looped) > len(TALE)
    noted = insert_commentary(TALE, rng)
    assert any(note in noted for note in COMMENTARY) and noted.startswith(TALE)
    swapped = other_ending(TALE, "A fox ran. A hen hid. Nobody trusts a fox twice.")
    assert swapped is not None and swapped.endswith("Nobody trusts a fox twice.")
    assert "the village laughed" not in swapped
    assert cut_halfway("Too short. Really.", rng) is None


def _pieces(n: int = 8) -> pd.DataFrame:
    names_ = ["Mara", "Tobin", "Ilse", "Corwin", "Petra", "Anselm", "Rhea", "Dov"]
    rows = [{"prompt": f"Write a story about {names_[i]} and the sea number {i}.",
             "text": TALE.replace("Mara", names_[i]), "source": "test"} for i in range(n)]
    return pd.DataFrame(rows)


def test_build_pairs_makes_pairs_for_every_measure_and_refuses_bad_input():
    pairs = build_pairs(_pieces(), seed=0, per_measure=3)
    made = {m: sum(1 for p in pairs if p.measure == m) for m in MEASURES}
    assert made == dict.fromkeys(MEASURES, 3)
    assert all(p.good != p.bad for p in pairs)
    with pytest.raises(ValueError, match="prompt"):
        build_pairs(pd.DataFrame({"text": ["a", "b"]}))
    with pytest.raises(ValueError, match="at least two"):
        build_pairs(_pieces(1))


def test_check_without_a_judge_orders_the_text_measures_and_leaves_the_likelihood_ones_untrusted():
    check = check_measures(build_pairs(_pieces(), 0, 8), judge=None, min_pairs=5)
    by = check.set_index("measure")
    assert by.loc["consistency", "accuracy"] == 1.0
    assert by.loc["in_fiction", "accuracy"] >= 0.8  # the commentary pool is written apart from the detector: not all
    assert by.loc["fresh", "accuracy"] == 1.0 and bool(by.loc["fresh", "trusted"])
    assert not bool(by.loc["coherence", "trusted"]) and "no judge" in by.loc["coherence", "why"]
    assert trusted(check) == ["consistency", "in_fiction", "fresh"]
    assert by.loc["story_quality", "pairs"] == 3 * 8 and by.loc["story_quality", "accuracy"] >= 0.8


def test_a_measure_with_too_few_pairs_or_under_the_bar_is_not_trusted():
    check = check_measures(build_pairs(_pieces(), 0, 3), judge=None, min_pairs=5)
    assert trusted(check) == [] and "only 3 pairs" in check.set_index("measure").loc["fresh", "why"]
    assert not bool(check.iloc[-1]["trusted"])


def test_the_check_is_cached_on_disk_and_made_again_when_its_inputs_change(tmp_path, monkeypatch):
    import evaluation.measure_check as mc

    first = cached_check(_pieces(), None, "", 6, 0.8, 2, 0, cache=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1 and not list(tmp_path.glob("*.part"))
    def made_again(*args, **kwargs):
        raise RuntimeError("made again")

    monkeypatch.setattr(mc, "check_measures", made_again)
    again = cached_check(_pieces(), None, "", 6, 0.8, 2, 0, cache=tmp_path)
    assert list(again["accuracy"].fillna(-1)) == pytest.approx(list(first["accuracy"].fillna(-1)))
    with pytest.raises(RuntimeError, match="made again"):
        cached_check(_pieces(), None, "another judge", 6, 0.8, 2, 0, cache=tmp_path)


class _StubJudge(Judge):
    """A judge whose NLL is the number of target tokens that are not 'good' ones (a controlled likelihood)."""

    def __init__(self) -> None:  # no model: _target_nll is replaced
        self.max_tokens = 320

    def _target_nll(self, contexts, targets):
        nll = [float(len(t.split()) - t.count("good") - (3 if c and "good" in c else 0)) for c, t in
               zip(contexts, targets, strict=True)]
        return nll, [max(1, len(t.split())) for t in targets]


def test_conditional_gain_is_the_likelihood_the_context_adds_per_target_token():
    gains = _StubJudge().conditional_gain(["a good start", "a dull start"], ["one two three", "one two three"])
    assert gains == [1.0, 0.0]


def test_score_pieces_without_a_judge_leaves_likelihood_measures_nan_and_refuses_unknown_ones():
    scores = score_pieces(["p"], [TALE], None)
    assert math.isnan(scores.raw["coherence"][0]) and scores.raw["fresh"][0] == 1.0
    with pytest.raises(ValueError, match="unknown quality measure"):
        score_pieces(["p"], [TALE], None, ["beauty"])
    with pytest.raises(ValueError, match=message_names("2 pieces", "1 prompts")):
        score_pieces(["p"], [TALE, TALE], None)


def test_story_quality_is_the_mean_of_the_trusted_measures_on_a_unit_scale():
    scores = PieceScores({"relevance": [0.3, 5.0], "fresh": [1.0, 0.5], "closure": [-4.0, 0.0]})
    assert story_quality(scores, ["relevance", "fresh"]) == [pytest.approx((0.3 / SCALES["relevance"] + 1) / 2),
                                                             pytest.approx(0.75)]
    assert unit_score("closure", -4.0) == pytest.approx(0.5) and unit_score("closure", -20.0) == 0.0
    assert math.isnan(unit_score("coherence", float("nan")))
    with pytest.raises(ValueError, match="were not scored"):
        story_quality(scores, ["coherence"])


def test_paired_bootstrap_sees_a_clear_difference_and_none_where_there_is_none():
    better = paired_bootstrap([0.6 + 0.01 * (i % 3) for i in range(40)], [0.5] * 40)
    assert better["low"] > 0 and better["p_better"] == 1.0 and better["pairs"] == 40
    same = paired_bootstrap([0.5, 0.6, 0.4, 0.5] * 10, [0.5, 0.4, 0.6, 0.5] * 10)
    assert same["low"] < 0 < same["high"]
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def _metrics(rows):
    base = {"ranking_acc": 0.9, "distinct1": 0.5, "distinct2": 0.6, "self_bleu4": 0.1, "repetition": 0.0,
            "bleu4": 0.0, "mean_words": 80, "complete_share": 1.0, "tokens_per_s": 10.0, "open_use": 1.0,
            "open_coverage": 0.6, "open_form": 1.0, "open_complete": 1.0, "open_repetition": 0.0,
            "open_distinct2": 0.6, "parameters": 100}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_the_rule_ranks_by_story_quality_when_it_was_scored_whatever_the_perplexity():
    frame = _metrics([{"candidate": "transformer", "ppl_word": 15.0, "story_quality": 0.55},
                      {"candidate": "base", "ppl_word": 40.0, "story_quality": 0.62}])
    _, winner, why = select(frame, SelectionRule(), chance=0.2)
    assert winner == "base" and "story quality 0.620" in why
    _, winner, _ = select(frame, SelectionRule(ppl_weight=1.0), chance=0.2)  # ln(40/15) = 0.98 > 10 × 0.07
    assert winner == "transformer"


def test_the_rule_falls_back_to_open_quality_when_story_quality_is_missing_for_some():
    frame = _metrics([{"candidate": "a", "ppl_word": 15.0, "story_quality": 0.1},
                      {"candidate": "b", "ppl_word": 40.0, "story_quality": float("nan")}])
    gated, winner, _ = select(frame, SelectionRule(), chance=0.2)
    assert winner == "a" and gated["story_quality"].isna().all()
    with pytest.raises(ValueError, match="ppl_weight"):
        SelectionRule(ppl_weight=-1)


def test_evaluation_checks_the_measures_scores_trusted_ones_and_compares_with_the_base(tiny_corpus, tiny_tokenizer,
                                                                                      tmp_path, monkeypatch):
    from evaluation.candidates import evaluate_candidates
    from evaluation.config import SuiteConfig
    from tests.conftest import tiny_writer

    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    dirs = {"seq2seq": tiny_writer(tiny_tokenizer).save(tmp_path / "s"),
            "base": tiny_writer(tiny_tokenizer, emb_dim=16).save(tmp_path / "b")}
    suite = SuiteConfig(ranking_pieces=5, distractors=3, sample_prompts=2, max_new_tokens=8, open_limit=6,
                        open_max_new_tokens=24, check_pairs=4, check_min_accuracy=0.5, check_composite_pairs=2)
    rule = SelectionRule(min_ranking_margin=-1, min_distinct2=0, max_repetition=1, min_prompt_use=0, min_complete=0)
    result = evaluate_candidates(dirs, tiny_corpus, suite, rule)
    check, quality = result.measure_check, result.selection["quality"]
    assert list(check["measure"]) == [*MEASURES, "story_quality"]
    assert (tmp_path / "measure-checks").is_dir()  # beside the checkpoint cache
    assert not any(check.set_index("measure").loc[m, "trusted"] for m in ("coherence", "relevance"))  # no judge
    assert set(quality) == {"trusted", "min_accuracy", "check_sources", "versus_base"}
    if quality["trusted"]:  # the built-in pieces gave at least the four pairs a measure needs
        assert result.metrics["story_quality"].notna().all()
        assert set(quality["versus_base"]) == {"seq2seq"} and quality["versus_base"]["seq2seq"]["pairs"] == 6
        assert {"seq2seq_quality", "base_quality"} <= set(result.open_samples.columns)


def test_an_untuned_network_without_a_pretrained_base_is_not_a_candidate(tiny_tokenizer, tmp_path):
    from evaluation.candidates import untuned_without_base
    from tests.conftest import tiny_writer

    writer = tiny_writer(tiny_tokenizer)
    tuned = writer.save(tmp_path / "tuned")
    writer.metadata = {**writer.metadata, "untuned": True}
    assert untuned_without_base(writer.save(tmp_path / "untuned")) and not untuned_without_base(tuned)


def test_check_pieces_pool_the_test_split_with_named_real_sets_and_skip_absent_ones(tiny_corpus, tmp_path):
    import json

    from evaluation.candidates import check_pieces
    from evaluation.config import SuiteConfig

    real = tmp_path / "tales.jsonl"
    real.write_text("\n".join(json.dumps({"prompt": f"Write about tale {i}.", "text": TALE}) for i in range(5)))
    suite = SuiteConfig(check_pairs=2, check_sources=[f"jsonl:{real}", f"jsonl:{tmp_path / 'missing.jsonl'}"])
    pieces, said = check_pieces(tiny_corpus[tiny_corpus["split"] == "test"], suite)
    assert set(pieces["source"]) == {"project", "tales"} and (pieces["source"] == "tales").sum() == 5
    assert (pieces["source"] == "project").sum() == 8  # 4 × check_pairs per source
    assert said[f"jsonl:{real}"] == "used" and said[f"jsonl:{tmp_path / 'missing.jsonl'}"].startswith("absent")
    with pytest.raises(ValueError, match="check_sources"):
        SuiteConfig(check_sources="jsonl:x")


def test_selective_nll_equals_the_full_pass_on_a_real_causal_lm(tmp_path, monkeypatch):
    from evaluation.writing import ReferenceModel
    from models.transformer import IGNORE, selective_nll, summed_nll

    monkeypatch.setenv("CW_CHECKPOINT_CACHE", str(tmp_path / "cache"))
    reference = ReferenceModel("tiny:llama-chat")
    pairs = [([1, 5, 6, 7, 8], [IGNORE, IGNORE, 6, 7, 8]), ([1, 9, 4], [IGNORE, 9, 4]), ([1, 3, 3, 3, 3, 3, 2],
                                                                                          [IGNORE] * 6 + [2])]
    full = summed_nll(reference.model, pairs, 0, batch_size=2)
    assert selective_nll(reference.model, pairs, 0, batch_size=2) == pytest.approx(full, rel=1e-4)


def test_a_candidate_failing_a_gate_needs_no_story_quality_for_the_others_to_be_ranked_by_it():
    frame = _metrics([{"candidate": "a", "ppl_word": 15.0, "story_quality": 0.5},
                      {"candidate": "b", "ppl_word": 40.0, "story_quality": 0.6},
                      {"candidate": "gan", "ppl_word": 1.6, "story_quality": float("nan"), "open_use": 0.2}])
    gated, winner, _ = select(frame, SelectionRule(), chance=0.2)
    assert winner == "b" and gated.set_index("candidate").loc["b", "quality"] == 0.6
    assert not bool(gated.set_index("candidate").loc["gan", "passed"])


def test_failed_gates_names_the_gates_one_row_fails():
    from evaluation.candidates import failed_gates

    row = _metrics([{"candidate": "x", "ppl_word": 2.0, "open_use": 0.1, "open_complete": 0.2}]).iloc[0].to_dict()
    assert failed_gates(row, SelectionRule(), chance=0.2) == ["prompt_use", "complete"]


def test_versus_base_leaves_out_candidates_without_a_story_quality():
    from evaluation.candidates import versus_base

    frame = pd.DataFrame({"base_quality": [0.5, 0.6, 0.7], "transformer_quality": [0.6, 0.7, 0.8],
                          "gan_quality": [float("nan")] * 3})
    out = versus_base(frame, ["transformer", "gan", "base"], seed=0)
    assert set(out) == {"transformer"} and out["transformer"]["mean_diff"] == pytest.approx(0.1)
    assert versus_base(frame.drop(columns=["base_quality"]), ["transformer"], 0) == {}
