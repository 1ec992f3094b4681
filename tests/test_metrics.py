"""The text metrics against values computed by hand on tiny inputs."""

import pytest

from models.metrics import bleu4, distinct_n, repetition, self_bleu4, words
from tests.conftest import names


def test_words_lowercase_and_split_punctuation():
    assert words("The Cat, sat.") == ["the", "cat", ",", "sat", "."]


def test_self_bleu_of_identical_samples_is_one_and_of_disjoint_is_near_zero():
    same = ["the cat sat on the mat today"] * 3
    assert self_bleu4(same) == pytest.approx(1.0)
    assert self_bleu4(["a b c d e", "f g h i j", "k l m n o"]) < 0.01
    assert self_bleu4(["only one"]) == 0.0


def test_bleu_against_own_reference():
    assert bleu4(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert bleu4(["x y z w v"], ["the cat sat on the mat"]) < 0.01
    with pytest.raises(ValueError, match=names("reference", "sample")):
        bleu4(["a"], [])


def test_distinct_n_by_hand():
    # bigrams: (a b) (b a) (a b) | (a b) (b c)  -> 5 bigrams, 3 distinct
    assert distinct_n(["a b a b", "a b c"], 2) == pytest.approx(3 / 5)
    # unigrams: a b a b a b c -> 7, 3 distinct
    assert distinct_n(["a b a b", "a b c"], 1) == pytest.approx(3 / 7)
    assert distinct_n(["a"], 2) == 0.0


def test_repetition_by_hand():
    # 4-grams of "a b c d a b c d": abcd bcda cdab dabc abcd -> 5, one repeat
    assert repetition("a b c d a b c d") == pytest.approx(1 / 5)
    assert repetition("a b c d e f") == 0.0
    assert repetition("a b") == 0.0
