"""Text handling shared by every family: stop strings, trimming to a sentence, streaming stable pieces, word counts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from models.params import SamplingParams

SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")
COMPLETE = re.compile(r"[.!?][\"'”’)\]]*\s*$")  # a text that ends on a full sentence
SENTENCE = re.compile(r"[^.!?]+[.!?]+[\"'”’)\]]*")
# A fable's moral: a word that states a lesson in its last two sentences (what a reader and the evaluation look for).
MORAL = re.compile(r"\b(moral|lesson|learn(ed|t|s)?|teach(es)?|taught|remember(ed)?|wise(r)?|never|always)\b",
                   re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """Sentences of ``text`` (runs ending in ``.``, ``!`` or ``?``)."""
    return [s.strip() for s in SENTENCE.findall(text) if s.strip()]


def ends_complete(text: str) -> bool:
    """Whether ``text`` ends on a complete sentence."""
    return bool(COMPLETE.search(text))


def states_moral(text: str) -> bool:
    """Whether one of the last two sentences of ``text`` states a moral (a fable's shape)."""
    return any(MORAL.search(s) for s in sentences(text)[-2:])


def trim_to_sentence(text: str) -> str:
    """Cuts text after its last complete sentence; returns it unchanged if it has none."""
    ends = list(SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    found = [i for i in (text.find(x) for x in stop) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def finish_text(text: str, settings: SamplingParams) -> str:
    """A generation's final text: cut before the first stop string, then (if asked) after the last sentence."""
    text, _ = cut_at_stop(text, settings.stop)
    return trim_to_sentence(text) if settings.trim_to_sentence else text


def _held_for_stop(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could begin a stop string (held back while streaming)."""
    longest = 0
    for x in stop:
        for n in range(min(len(x) - 1, len(text)), longest, -1):
            if text.endswith(x[:n]):
                longest = n
                break
    return longest


CONFIRMED_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


def stable_prefix(text: str, trim: bool) -> str:
    """The part of partially decoded text that is final and can be emitted.

    A trailing half UTF-8 character (decoded as U+FFFD) is held back; with ``trim``, so is everything
    after the last sentence end that is already followed by whitespace (a "." at the very end may still
    turn out to be "...", or be followed by a closing quote).
    """
    text = text.rstrip("\ufffd")
    if not trim:
        return text
    ends = list(CONFIRMED_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else ""


def stream_text(token_ids: Iterable[int], decode: Callable[[list[int]], str], trim: bool,
                stop: Sequence[str] = ()) -> Iterator[str]:
    """Turns generated token ids into text pieces that join to the finished text (:func:`finish_text`).

    Every family streams through this, so ``"".join(stream(...)) == generate(...)[0]`` holds by
    construction: each step decodes all ids so far and emits only the new, stable part. Text that could
    be the start of a stop string is held back; once a stop string is written, generation ends there
    (no more ids are drawn).

    Args:
        token_ids: Generated ids as they arrive (end token excluded).
        decode: Decodes a full id list to text.
        trim: Whether the final text is cut after its last complete sentence.
        stop: Stop strings (the text ends before the first one).

    Yields:
        Text pieces.
    """
    sent = ""
    ids: list[int] = []
    final = ""
    for token in token_ids:
        ids.append(int(token))
        text = decode(ids)
        text, stopped = cut_at_stop(text, stop)
        if stopped:
            final = text
            break
        ready = stable_prefix(text, trim)
        ready = ready[: len(ready) - _held_for_stop(ready, stop)]
        if len(ready) > len(sent):
            yield ready[len(sent):]
            sent = ready
    else:
        final, _ = cut_at_stop(decode(ids), stop)
    final = trim_to_sentence(final) if trim else final
    if len(final) > len(sent):
        yield final[len(sent):]


def word_count(text: str) -> int:
    """Whitespace words (the unit of per-word perplexity)."""
    return len(text.split())


def words_scored(text: str, ids: Sequence[int], limit: int, decode: Callable[[list[int]], str]) -> int:
    """Whitespace words of the part of ``text`` that its ids cover, when they were cut to ``limit`` tokens.

    A piece longer than a model's window is scored only as far as it fits; per-word perplexity must
    then divide by the words of that part, not of the whole text.
    """
    return word_count(decode(list(ids))) if len(ids) >= limit else word_count(text)
