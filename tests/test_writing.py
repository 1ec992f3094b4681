"""Open-prompt metrics on hand-made examples with exact expected values, and the open prompts file itself."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from evaluation.writing import (
    OpenPromptError,
    adherence,
    content_words,
    ends_complete,
    form_ok,
    load_open_prompts,
    open_prompt_metrics,
    prompts_fingerprint,
)
from tests.conftest import names


def test_content_words_are_lemmas_without_stop_or_instruction_words():
    assert content_words("The glassblowers were holding bottles.") == {"glassblower", "hold", "bottle"}
    assert content_words("Tell a fable about a badger who hoards buttons.", skip_instruction=True) == {
        "badger", "hoard", "button"}
    assert "fable" in content_words("Tell a fable about a badger.")  # instruction words stay in pieces


def test_adherence_counts_the_prompt_words_the_piece_uses():
    share, used = adherence("A glassblower named Odile discovers that every bottle holds a season.",
                            "Odile blew a bottle. Inside it was winter, a cold season.")
    # prompt words: glassblower, odile, discover, bottle, hold, season → 3 of 6 used
    assert used == ["bottle", "odile", "season"] and share == pytest.approx(3 / 6)
    assert adherence("Tell a fable about a badger.", "The badgers danced.") == (1.0, ["badger"])
    assert adherence("Tell a fable about a badger.", "A fox ran.") == (0.0, [])
    assert adherence("Write a poem.", "Anything at all.") == (1.0, [])  # nothing to miss


def test_form_checks():
    assert form_ok("poem", "Rain on the roof\nrain on the sea\nrain in the heart")
    assert not form_ok("poem", "Rain on the roof, rain on the sea.")
    assert form_ok("fable", "The badger kept every button. He was alone. The moral: share what you have.")
    assert form_ok("fable", "The otter waited. From then on she learned to be patient.")
    assert not form_ok("fable", "The otter swam. The moon was bright. The end came.")
    long_story = " ".join(["word"] * 90)
    assert not form_ok("story", long_story + ".") and form_ok("story", long_story + ".\n\nMore words here.")
    assert form_ok("story", "He woke. She left.") and not form_ok("story", "He woke")
    assert form_ok("limerick", "anything")  # unknown forms pass


def test_complete_endings():
    assert ends_complete("He left.") and ends_complete('She said "go!"') and ends_complete("Why? ")
    assert not ends_complete("He left and") and not ends_complete("")


def test_open_prompt_metrics_exact_values():
    prompts = pd.DataFrame({"prompt": ["Tell a fable about a badger.", "Write a poem about a tram in Budapest."],
                            "form": ["fable", "poem"]})
    samples = ["The badger hid. The moral: share.", "A tram\nrolls on\nin the dawn"]
    metrics, matched = open_prompt_metrics(prompts, samples)
    assert matched == [["badger"], ["tram"]]
    assert metrics["open_use"] == 1.0
    assert metrics["open_coverage"] == pytest.approx((1.0 + 0.5) / 2)  # tram of {tram, budapest}
    assert metrics["open_form"] == 1.0 and metrics["open_complete"] == 0.5
    assert metrics["open_repetition"] == 0.0 and metrics["open_words"] == pytest.approx((6 + 7) / 2)
    with pytest.raises(ValueError, match=names("1 samples", "2 open prompts")):
        open_prompt_metrics(prompts, samples[:1])


def test_the_open_prompts_file():
    prompts = load_open_prompts()
    assert len(prompts) >= 60 and set(prompts["form"]) == {"story", "fable", "poem"}
    assert len(set(prompts["genre"])) >= 4 and prompts["id"].is_unique
    assert len(prompts_fingerprint(prompts)) == 16


def test_open_prompts_use_no_person_place_or_animal_of_the_builtin_corpus():
    from corpus import builtin

    names = {n.lower() for n in builtin.NAMES} | {a for a in builtin.ANIMALS}
    heroes = {h[0] for h in builtin.HEROES if h[0] not in ("girl", "boy")}  # generic words, not characters
    kit_phrases = {p.removeprefix("a ").removeprefix("an ") for kit in builtin.KITS.values()
                   for p in (*kit.places, *kit.companions, *kit.objects)}
    for prompt in load_open_prompts()["prompt"]:
        words = {w.strip(".,'").lower() for w in prompt.split()}
        assert not words & names, (prompt, words & names)
        assert not any(re.search(rf"\b{h}\b", prompt.lower()) for h in heroes), prompt
        assert not any(p in prompt.lower() for p in kit_phrases), prompt


def test_bad_open_prompt_files_name_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "form": "story", "genre": "", "prompt": "x"}) + "\n{bad\n")
    with pytest.raises(OpenPromptError, match=r"p\.jsonl:2: not JSON"):
        load_open_prompts(path)
    path.write_text(json.dumps({"id": "a", "form": "story", "prompt": "x"}) + "\n")
    with pytest.raises(OpenPromptError, match=names("p.jsonl:1", "['genre']")):
        load_open_prompts(path)
    row = json.dumps({"id": "a", "form": "story", "genre": "", "prompt": "x"})
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(OpenPromptError, match=names("id 'a'")):
        load_open_prompts(path)
    with pytest.raises(OpenPromptError, match="does not exist"):
        load_open_prompts(tmp_path / "none.jsonl")
