"""Banned phrases: the model never writes them, because the sampler backtracks and resamples.

A writer lists phrases (``SamplingParams.banned_phrases``: stock phrases such as "shivers down her spine",
a name that must not appear). While sampling, the text written so far is searched for them
(case-insensitive; a phrase that starts or ends with a letter or digit matches whole words only, so
banning "cat" leaves "category" alone). When one appears, the sampler goes back to the token where it
began, bans that token *at that position* and samples again from there: the phrase never reaches the
reader, and what came before it is kept as written. This is the "anti-slop" backtracking of KoboldCpp's
banned strings and of the antislop sampler, not a filter that cuts text after the fact.

Streaming still works: a token is handed out only once no banned phrase can begin in it any more (once
the text after it is longer than the longest phrase, each run of spaces counted once), so what was
streamed is never taken back.

:func:`without_phrases` is the loop; a runtime supplies a :class:`Rewindable` sampler over its own model
state (llama.cpp's context, the torch runtime's KV cache). Backtracks are bounded
(:data:`MAX_BACKTRACKS_PER_TOKEN` per token of the budget): past that, the text is written as it comes and a
warning is logged once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

MAX_BACKTRACKS_PER_TOKEN = 4  # backtracks allowed per token of max_new_tokens (then phrases are let through)


class Rewindable(Protocol):
    """A sampler over one sequence that can go back (a runtime's model state, see :func:`without_phrases`)."""

    def sample(self, banned: frozenset[int]) -> int:
        """Draws the next token after what was read, never one of ``banned``."""
        ...

    def read(self, token: int) -> None:
        """Reads ``token`` after the sequence (its logits are what :meth:`sample` draws from next)."""
        ...

    def rewind(self, written: Sequence[int]) -> None:
        """Goes back to the request's prefix followed by ``written`` (a prefix of what was read)."""
        ...


def phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for ``phrases`` (whole words at word-character ends; spaces match any space).

    Returns None when no phrase has any text.
    """
    parts = []
    for phrase in phrases:
        words = phrase.split()
        if not words:
            continue
        body = r"\s+".join(re.escape(word) for word in words)
        left = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
        right = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
        parts.append(f"{left}{body}{right}")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def find_phrase(text: str, phrases: Sequence[str]) -> str:
    """The first banned phrase ``text`` contains, as written there ('' when none); for tests and checks."""
    pattern = phrase_pattern(phrases)
    found = pattern.search(text) if pattern else None
    return found.group(0) if found else ""


def require_sampling(num_beams: int) -> None:
    """Refuses beam search with banned phrases: it keeps several sequences, none of them one to go back on.

    Raises:
        ValueError: When ``num_beams`` is above 1 (the API answers it with a 400).
    """
    if num_beams > 1:
        raise ValueError("banned_phrases work with sampling only: set num_beams 1 or leave banned_phrases out")


def without_phrases(sampler: Rewindable, decode: Callable[[list[int]], str], phrases: Sequence[str],
                    max_new: int, stop_ids: Sequence[int]) -> Iterator[int]:
    """Yields sampled token ids in which no banned phrase appears (see the module docstring).

    Args:
        sampler: The runtime's sampler, positioned after the request's prefix.
        decode: Token ids to text (the model's tokenizer).
        phrases: The banned phrases.
        max_new: At most this many tokens are written.
        stop_ids: Tokens that end the piece (not yielded).

    Yields:
        Token ids, each once no banned phrase can begin in it any more (all of them at the end).
    """
    pattern = phrase_pattern(phrases)
    longest = max((len(" ".join(p.split())) for p in phrases), default=0)
    written: list[int] = []
    released = 0  # tokens handed out: never taken back
    bans: dict[int, set[int]] = {}  # position -> tokens banned there (for the text written before it)
    budget = MAX_BACKTRACKS_PER_TOKEN * max(1, max_new)
    while True:
        ended = len(written) >= max_new
        if not ended:
            token = sampler.sample(frozenset(bans.get(len(written), ())))
            ended = token in stop_ids
            if not ended:
                written.append(token)
        start = _phrase_start(pattern, written, released, decode, ended) if pattern and budget > 0 else -1
        if start >= 0:  # back to where the phrase began; that token is banned there
            budget -= 1
            if budget == 0:
                log.warning("banned phrases: the backtrack budget (%d per token) is spent; the rest of this text "
                            "is written without them being checked", MAX_BACKTRACKS_PER_TOKEN)
            bans = {pos: toks for pos, toks in bans.items() if pos <= start}
            bans.setdefault(start, set()).add(written[start])
            del written[start:]
            sampler.rewind(written)
            continue
        if ended:
            break
        sampler.read(token)
        while released < len(written) and _span(decode(written[released + 1:])) >= longest + 2:
            yield written[released]
            released += 1
    yield from written[released:]


def _span(text: str) -> int:
    """The length of ``text`` with each run of whitespace counted as one character (as a phrase matches it)."""
    return len(re.sub(r"\s+", " ", text))


def _phrase_start(pattern: re.Pattern[str], written: list[int], released: int,
                  decode: Callable[[list[int]], str], ended: bool) -> int:
    """The position of the token where a banned phrase in the unreleased text begins (-1: none).

    The token before the unreleased ones is decoded with them, so a whole-word phrase sees the character
    before it; a phrase can only begin in an unreleased token (see :func:`without_phrases`). A whole-word
    match that reaches the end of the text waits for the next character (``cat`` may become ``category``)
    unless the text has ``ended``.
    """
    first = max(0, released - 1)
    window = written[first:]
    text = decode(window)
    for found in pattern.finditer(text, len(decode(window[: released - first]))):
        if not ended and found.end() == len(text) and found.group(0)[-1:].isalnum():
            continue
        for k in range(released - first, len(window)):  # the token whose text holds the phrase's first character
            if len(decode(window[: k + 1])) > found.start():
                return first + k
        return len(written) - 1
    return -1
