"""Banned phrases: the sampler goes back and samples again, so a banned phrase never reaches the reader.

A scripted sampler (one character per token) checks the loop itself; the families' own samplers (torch
Transformer, llama.cpp, seq2seq) are checked on tiny models: a word the model writes, once banned, is not
written, the text before it stays as it was, and streaming gives the same text.
"""

from __future__ import annotations

import logging

import pytest

from models import banning
from models.banning import find_phrase, phrase_pattern, without_phrases
from models.contract import GenerationSettings
from models.params import MAX_BANNED, SamplingParams, ValidationError

END = 0


class Scripted:
    """A 'model' over characters (token = ord) that wants to write ``script``; a banned choice falls to the next.

    At each position it prefers the script's character, then the characters of ``fallback`` in order.
    """

    def __init__(self, script: str, fallback: str = "xyz") -> None:
        self.script, self.fallback = script, fallback
        self.written: list[int] = []
        self.rewinds = 0

    def sample(self, banned: frozenset[int]) -> int:
        pos = len(self.written)
        if pos >= len(self.script):
            return END
        for char in self.script[pos] + self.fallback:
            if ord(char) not in banned:
                return ord(char)
        raise AssertionError("every choice banned")

    def read(self, token: int) -> None:
        self.written.append(token)

    def rewind(self, written) -> None:
        assert list(written) == self.written[: len(written)], "rewound to something that was not read"
        self.written = list(written)
        self.rewinds += 1


def decode(ids) -> str:
    return "".join(chr(i) for i in ids)


def run(script: str, phrases, fallback: str = "xyz", max_new: int = 100) -> tuple[str, Scripted]:
    sampler = Scripted(script, fallback)
    return decode(without_phrases(sampler, decode, phrases, max_new, [END])), sampler


def test_a_banned_word_is_replaced_where_it_began_and_the_text_before_it_is_kept():
    text, sampler = run("the cat sat", ["cat"])
    assert text == "the xat sat"  # back to 'c' (banned there), the fallback 'x' written instead
    assert sampler.rewinds == 1


def test_the_match_is_case_insensitive_whole_word_and_spans_any_whitespace():
    assert run("a Category", ["cat"])[0] == "a Category"  # inside a word: not the banned word
    assert run("The CAT.", ["cat"])[0] == "The xAT."
    assert run("shivers  down\nher spine", ["shivers down"])[0].startswith("xhivers")
    assert find_phrase("It sent shivers DOWN her spine", ["shivers down"]) == "shivers DOWN"
    assert find_phrase("tapestry-like", ["tapestry"]) == "tapestry"  # a hyphen ends a word
    assert find_phrase("a !!! b", ["!!!"]) == "!!!"  # punctuation-only ends need no word boundary
    assert phrase_pattern(["   "]) is None


def test_going_back_several_times_at_one_place_bans_each_choice_there():
    text, sampler = run("a cat", ["cat", "xat", "yat"], fallback="xyzw")
    assert text == "a zat" and sampler.rewinds == 3


def test_streamed_tokens_are_never_taken_back():
    sampler = Scripted("one two three cat four")
    released: list[str] = []
    for token in without_phrases(sampler, decode, ["three cat"], 100, [END]):
        released.append(chr(token))
        # what was handed out is always a prefix of what the sampler holds now
        assert "".join(released) == decode(sampler.written)[: len(released)]
    assert "".join(released) == "one two xhree cat four"


def test_the_budget_bounds_the_work_and_lets_the_text_through_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(banning, "MAX_BACKTRACKS_PER_TOKEN", 1)
    with caplog.at_level(logging.WARNING, logger="models.banning"):
        text, sampler = run("ca", ["ca", "xa", "ya"], max_new=2)  # a budget of 2 backtracks
    assert "backtrack budget" in caplog.text
    assert sampler.rewinds == 2 and text == "ya"  # 'ya' is banned too, but the budget is spent


def test_max_new_tokens_counts_the_text_kept():
    text, _ = run("a cat and a dog", ["cat"], max_new=5)
    assert text == "a xat"


def test_the_setting_is_validated_where_it_enters():
    assert SamplingParams(banned_phrases=["shivers down her spine"]).banned_phrases == ("shivers down her spine",)
    for bad in (["x" * 65], [""], ["   "], ["w"] * (MAX_BANNED + 1)):
        with pytest.raises(ValidationError):
            SamplingParams(banned_phrases=bad)


# --- the families' samplers --------------------------------------------------------------------------
def _banned_word(text: str) -> str:
    """A word of ``text`` after its first one (so there is text before it to keep)."""
    words = [w.strip(".,;:!?\"'()") for w in text.split()[1:]]
    return next(w for w in words if len(w) >= 2 and w.isalpha())


def check_writer(writer, prompt: str, settings: GenerationSettings) -> None:
    """The family's sampler keeps out a word it writes once banned; the text before it stays; streaming agrees."""
    free = writer.generate([prompt], settings)[0]
    word = _banned_word(free)
    banned = settings.replace(banned_phrases=(word,))
    text = writer.generate([prompt], banned)[0]
    assert find_phrase(text, [word]) == "", (word, text)
    start = phrase_pattern([word]).search(free).start()
    assert text.startswith(free[: max(0, start - 12)]), (free, text)  # back only to the token the word began in
    assert "".join(writer.stream(prompt, banned)) == text
    assert writer.generate_rows([(prompt, settings.seed)], banned) == [text]


SETTINGS = GenerationSettings(max_new_tokens=40, seed=3, temperature=1.0, repetition_penalty=1.0)


def test_the_transformer_never_writes_a_banned_word_and_beams_are_refused(tiny_tokenizer):
    from tests.test_transformer import PROMPT, scratch

    writer = scratch(tiny_tokenizer)
    check_writer(writer, PROMPT, SETTINGS)
    with pytest.raises(ValueError, match="num_beams"):
        writer.generate([PROMPT], SETTINGS.replace(banned_phrases=("the",), num_beams=2))


def test_the_seq2seq_family_never_writes_a_banned_word(tiny_tokenizer):
    from tests.conftest import tiny_writer

    writer = tiny_writer(tiny_tokenizer)
    check_writer(writer, "A fox finds a key under the bridge.", SETTINGS)
    with pytest.raises(ValueError, match="num_beams"):
        writer.generate(["a prompt"], SETTINGS.replace(banned_phrases=("the",), num_beams=2))


def test_llama_cpp_never_writes_a_banned_word(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (requirements.txt pins it)")
    from models.llama_cpp import LlamaCppWriter
    from tests.test_llama_cpp import PROMPTS, tuned
    from weights.tiny import write_tiny_llama

    base = write_tiny_llama(tmp_path_factory.mktemp("ban-base") / "llama")
    saved = tuned(str(base), "f32").save(tmp_path_factory.mktemp("ban-saved") / "model")
    check_writer(LlamaCppWriter.load(saved, threads=1), PROMPTS[0], SETTINGS)
