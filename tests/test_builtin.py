import re

import pytest

from corpus import builtin
from corpus.builtin import generate_corpus, generate_piece
from corpus.schema import COLUMNS
from tests.conftest import names


def test_same_seed_and_index_give_the_same_piece_whatever_n():
    small, big = generate_corpus(20, seed=3), generate_corpus(60, seed=3)
    assert small.equals(big.iloc[:20].reset_index(drop=True))
    assert generate_piece(3, 7) == generate_piece(3, 7)
    assert generate_piece(3, 7) != generate_piece(4, 7)


def test_contract_forms_genres_and_lengths():
    df = generate_corpus(1500, seed=13)
    assert list(df.columns) == list(COLUMNS)
    assert df["id"].is_unique
    assert set(df["form"]) == set(builtin.FORMS)
    assert set(df["genre"]) == set(builtin.GENRES)
    words = df["text"].str.split().str.len()
    assert words.min() >= 60 and words.max() <= 300
    assert df["prompt"].nunique() > 0.7 * len(df)  # variety, not a handful of templates
    assert df["text"].nunique() == len(df)


def test_poems_have_line_breaks_and_fables_a_moral():
    df = generate_corpus(400, seed=1)
    poems, fables = df[df["form"] == "poem"], df[df["form"] == "fable"]
    assert (poems["text"].str.count("\n") >= 12).all()
    assert fables["text"].str.contains(r"(?:Moral|moral)|\.$").all()
    morals = {m for _, m in builtin.MORALS}
    assert all(any(m in t for m in morals) for t in fables["text"])


def _entities() -> list[str]:
    phrases = set(builtin.NAMES) | set(builtin.ANIMALS)
    for kit in builtin.KITS.values():
        phrases |= {builtin._strip_article(p) for p in kit.places + kit.companions + kit.objects}
    return sorted(phrases, key=len, reverse=True)


@pytest.mark.parametrize("form", ["story", "fable", "poem"])
def test_people_places_and_things_named_in_the_prompt_appear_in_the_piece(form):
    df = generate_corpus(600, seed=5)
    df = df[df["form"] == form]
    entities = _entities()
    checked = 0
    for prompt, text in zip(df["prompt"], df["text"], strict=True):
        named = [e for e in entities if re.search(rf"\b{re.escape(e)}\b", prompt, re.I)]
        for entity in named:
            assert re.search(rf"\b{re.escape(entity)}\b", text, re.I), (entity, prompt, text)
            checked += 1
    assert checked > len(df)  # most prompts name something


def test_n_below_one_is_an_error():
    with pytest.raises(ValueError, match=names("n", "1")):
        generate_corpus(0)
