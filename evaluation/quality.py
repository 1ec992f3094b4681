"""Story-quality measures that a careful reader would recognise, run offline on the CPU.

Word overlap with the prompt (``evaluation.writing``) rewards copying the prompt's words; these measures
look at what a reader looks at. Each scores one piece; higher is better:

- **coherence**: how much the *order* of the piece's sentences (a poem's lines) matters to the judge
  language model: the per-token NLL of the piece with its units shuffled (fixed seed) minus that of the
  piece as written. Sentences that follow from each other lose likelihood when shuffled; a list of
  disconnected statements does not. Fewer than three units give no evidence (0).
- **relevance** (noisy channel): how much reading the piece raises the judge's likelihood of the prompt,
  per prompt token: ``log p(prompt | piece) − log p(prompt)``. A piece that acts the premise out implies
  it without copying its words; a piece about something else does not.
- **ending_fit**: the same gain for the piece's last sentence given the body before it (a fable's moral
  follows from its story; an ending pasted from another piece does not).
- **closure**: the judge's log-probability that the text is over after the piece (its end-of-turn token
  after the piece as an answer); a piece cut off mid-plot is not over.
- **consistency**: the share of the named characters in the piece's second half who were already there
  in the first (names that appear from nowhere, or a character whose name changes midway, lower it).
- **in_fiction**: the share of the piece's sentences that stay inside the fiction (no chat replies such as
  "Great! Let's get started", no commentary such as "In this story…").
- **fresh**: one minus the share of repeated word 4-grams inside the piece.

A measure is trusted only after :mod:`evaluation.measure_check` shows, on pairs whose order is known
(a real piece against the same piece perturbed), that it orders them right; the ``story_quality`` of a
piece is the mean of its trusted measures, each first mapped onto 0…1 (:func:`unit_scores`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.metrics import repetition

MEASURES = ("coherence", "relevance", "ending_fit", "closure", "consistency", "in_fiction", "fresh")
LM_MEASURES = frozenset({"coherence", "relevance", "ending_fit", "closure"})
# What maps a raw score onto 0…1 (a raw score at or above the scale counts as 1). Calibrated on real pieces
# (benchmarks.measure_check on ../shared/datasets, 2026-12-06): about the median of real stories and fables
# (coherence 0.19 WritingPrompts, 0.44 TinyStories, 0.87 Aesop; relevance 0.39, 0.66; ending_fit 1.1-1.6).
SCALES = {"coherence": 0.5, "relevance": 0.5, "ending_fit": 1.5}
CLOSURE_FLOOR = -8.0  # log p(end) at or below this counts as 0, at 0 as 1

SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"'”’)\]]*|\n|$)")
NAME = re.compile(r"\b[A-Z][a-z]{2,}\b")
_NOT_NAMES = """The This That These Those There Then When While After Before Once One Two Three Every Each
Some All But And Yet Soon Now Long Far Near Here What Why How Who Where Which Moral Lesson Chapter His Her Their
Its Our Your She They Mr Mrs Miss Sir Lady Lord King Queen Prince Princess God Monday Tuesday Wednesday Thursday
Friday Saturday Sunday January February March April May June July August September October November December
Christmas English Oh Yes No Not Just Even Still Only Never Always Perhaps Suddenly Finally At In On Of For With
From Into Over Under Out Up Down Off As If So Because Though Although Until Again Too Very Well Like Let Maybe
Today Tomorrow Yesterday Tonight Morning Evening Night Day Mother Father Mom Dad Grandma Grandpa Mama Papa
Everyone Everything Nothing Someone Something Anyone Nobody Ever Thus Hence Meanwhile Instead Later Earlier"""
NOT_NAMES = frozenset(_NOT_NAMES.split())  # capitalised words that are not names
META = re.compile(
    r"(^\s*(sure|great|certainly|of course|absolutely|okay|ok|alright)\b[!,.]"
    r"|\bhere(?:'s| is| are)\s+(?:a|an|your|the|my)\s+(?:short\s+)?(?:story|poem|fable|tale|version|draft)"
    r"|\bi hope (?:you|this)|\blet me know\b|\bfeel free\b|\bwould you like\b|\blet's (?:get started|begin|dive)"
    r"|\bas an ai\b|\blanguage model\b|\bin (?:this|your|the above|the) (?:story|poem|fable|tale|prompt)\b"
    r"|\b(?:this|the) (?:story|poem|fable|tale) (?:is about|explores|highlights|shows|teaches|emphasi[sz]es"
    r"|illustrates|demonstrates|captures|reminds us)"
    r"|\b(?:word count|title)\s*:|\bthe prompt\b|\byour (?:story|poem|fable|request)\b|\bthank you for\b)",
    re.IGNORECASE)


def units(text: str) -> list[str]:
    """The units whose order coherence tests: a poem's lines (three or more short lines), else sentences."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) >= 3 and sum(len(line.split()) for line in lines) / len(lines) <= 12:
        return lines
    return [s.strip() for s in SENTENCE.findall(text) if s.strip()]


def shuffled(text: str, seed: int) -> str | None:
    """The piece with its units in another order (None when it has fewer than three)."""
    parts = units(text)
    if len(parts) < 3:
        return None
    order = list(range(len(parts)))
    rng = random.Random(seed)
    while order == sorted(order):
        rng.shuffle(order)
    joiner = "\n" if "\n" in text.strip() and parts == [p.strip() for p in text.strip().splitlines() if p.strip()] \
        else " "
    return joiner.join(parts[i] for i in order)


def names(text: str) -> list[str]:
    """Capitalised words used as names, in order: seen away from a sentence's start, or twice and never lower-case."""
    mid: set[str] = set()
    for sentence in SENTENCE.findall(text):
        for word in sentence.split()[1:]:
            match = NAME.fullmatch(word.strip(".,;:!?\"'“”‘’()"))
            if match:
                mid.add(match.group())
    found = [m.group() for m in NAME.finditer(text) if m.group() not in NOT_NAMES]
    lower = set(re.findall(r"\b[a-z]+\b", text))
    counts = {w: found.count(w) for w in set(found)}
    return [w for w in found if w in mid or (counts[w] >= 2 and w.lower() not in lower)]


def consistency(text: str) -> float:
    """Share of the names of the second half (by words) that the first half already used (1 with none)."""
    words = text.split()
    half = len(words) // 2
    first, second = set(names(" ".join(words[:half]))), set(names(" ".join(words[half:])))
    known = set(names(text))
    first &= known
    second &= known
    if not second:
        return 1.0
    return len(second & first) / len(second)


def in_fiction(text: str) -> float:
    """Share of the piece's sentences with no chat reply or commentary in them (1 for an empty piece)."""
    parts = [s for s in SENTENCE.findall(text) if s.strip()]
    if not parts:
        return 1.0
    return sum(1 for s in parts if not META.search(s)) / len(parts)


def split_ending(text: str) -> tuple[str, str] | None:
    """``(body, last sentence)`` of a piece with at least three sentences, else None."""
    parts = [s.strip() for s in SENTENCE.findall(text) if s.strip()]
    if len(parts) < 3:
        return None
    body = text.strip()
    cut = body.rfind(parts[-1])
    return (body[:cut].strip(), parts[-1]) if cut > 0 else None


class Judge:
    """The likelihood measures, from a fixed causal LM that is not a candidate (``ReferenceModel``).

    Args:
        reference: The loaded reference model (``evaluation.writing.ReferenceModel``).
        max_tokens: Tokens of a piece (or context) read at most; longer ones keep their end.
        batch_size: Sequences per forward pass.
    """

    def __init__(self, reference: Any, max_tokens: int = 320, batch_size: int = 8) -> None:
        self.reference = reference
        self.tokenizer = reference.tokenizer
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        eos = self.tokenizer.eos_token_id
        self.end_id = int(eos if eos is not None else reference.start_id)

    def _ids(self, text: str) -> list[int]:
        from models.tokenizer import encode_text

        return encode_text(self.tokenizer, text)

    def _nll(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        from models.transformer import selective_nll

        if not pairs:
            return []
        pad = self.tokenizer.pad_token_id
        pad = self.reference.start_id if pad is None else pad
        return selective_nll(self.reference.model, pairs, int(pad), self.batch_size)

    def _target_nll(self, contexts: Sequence[str], targets: Sequence[str]) -> tuple[list[float], list[int]]:
        """Summed NLL of each target after its context (only the target's tokens scored), and their counts."""
        from models.transformer import IGNORE

        pairs, counts = [], []
        for context, target in zip(contexts, targets, strict=True):
            before = [self.reference.start_id, *self._ids(context)[-self.max_tokens:]] if context else \
                [self.reference.start_id]
            goal = self._ids(target)[: self.max_tokens] or [self.end_id]
            pairs.append(([*before, *goal], [IGNORE] * len(before) + goal))
            counts.append(len(goal))
        return self._nll(pairs), counts

    def order_gain(self, pieces: Sequence[str], seed: int = 0) -> list[float]:
        """Coherence: per-token NLL of each piece shuffled minus as written (0 with under three units)."""
        mixed = [shuffled(p, seed + i) for i, p in enumerate(pieces)]
        keep = [i for i, m in enumerate(mixed) if m is not None]
        texts = [pieces[i] for i in keep] + [mixed[i] or "" for i in keep]
        nll, counts = self._target_nll([""] * len(texts), texts)
        out = [0.0] * len(pieces)
        for k, i in enumerate(keep):
            j = k + len(keep)
            out[i] = nll[j] / counts[j] - nll[k] / counts[k]
        return out

    def conditional_gain(self, contexts: Sequence[str], targets: Sequence[str]) -> list[float]:
        """Per-token ``log p(target | context) − log p(target)`` (the noisy-channel relevance)."""
        joined = [f"{c.strip()}\n\n" for c in contexts]
        with_context, counts = self._target_nll(joined, targets)
        alone, _ = self._target_nll([""] * len(targets), targets)
        return [(a - w) / n for w, a, n in zip(with_context, alone, counts, strict=True)]

    def relevance(self, prompts: Sequence[str], pieces: Sequence[str]) -> list[float]:
        """How much each piece raises the likelihood of its prompt (per prompt token)."""
        return self.conditional_gain(list(pieces), [f"The prompt was: {p.strip()}" for p in prompts])

    def ending_fit(self, pieces: Sequence[str]) -> list[float]:
        """How much each piece's body raises the likelihood of its last sentence (0 with under three)."""
        splits = [split_ending(p) for p in pieces]
        keep = [i for i, s in enumerate(splits) if s is not None]
        gains = self.conditional_gain([splits[i][0] for i in keep], [splits[i][1] for i in keep])  # type: ignore[index]
        out = [0.0] * len(pieces)
        for i, g in zip(keep, gains, strict=True):
            out[i] = g
        return out

    def closure(self, prompts: Sequence[str], pieces: Sequence[str]) -> list[float]:
        """``log p(end of turn | prompt, piece)``: whether the judge takes the piece to be finished."""
        from models.transformer import IGNORE

        pairs = []
        for prompt, piece in zip(prompts, pieces, strict=True):
            body = self._ids(self._frame(prompt) + piece.strip())[-self.max_tokens:]
            ids = [self.reference.start_id, *body, self.end_id]
            pairs.append((ids, [IGNORE] * (len(ids) - 1) + [self.end_id]))
        return [-n for n in self._nll(pairs)]

    def _frame(self, prompt: str) -> str:
        """The chat framing of a prompt, when the judge has a chat template (else the prompt and a blank line)."""
        template = getattr(self.tokenizer, "chat_template", None)
        if template:
            try:
                text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                          add_generation_prompt=True)
                bos = self.tokenizer.bos_token or ""
                return text[len(bos):] if bos and text.startswith(bos) else text
            except Exception:  # a template that does not take a user turn: plain framing
                pass
        return f"{prompt.strip()}\n\n"


@dataclass(frozen=True)
class PieceScores:
    """Raw scores of a list of pieces, one list per measure (``MEASURES`` order of keys)."""

    raw: dict[str, list[float]]

    def frame(self) -> Any:
        """The scores as a pandas DataFrame (one row per piece)."""
        import pandas as pd

        return pd.DataFrame(self.raw)


def score_pieces(prompts: Sequence[str], pieces: Sequence[str], judge: Judge | None,
                 measures: Sequence[str] = MEASURES, seed: int = 0) -> PieceScores:
    """Every asked measure of every piece (the likelihood ones need a ``judge``; without one they are NaN).

    Raises:
        ValueError: For an unknown measure or prompts and pieces of different lengths.
    """
    unknown = sorted(set(measures) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown quality measure(s) {unknown}; known: {list(MEASURES)}")
    if len(prompts) != len(pieces):
        raise ValueError(f"{len(pieces)} pieces for {len(prompts)} prompts")
    nan = [math.nan] * len(pieces)
    raw: dict[str, list[float]] = {}
    for measure in measures:
        if measure in LM_MEASURES and judge is None:
            raw[measure] = list(nan)
        elif measure == "coherence":
            raw[measure] = judge.order_gain(pieces, seed)  # type: ignore[union-attr]
        elif measure == "relevance":
            raw[measure] = judge.relevance(prompts, pieces)  # type: ignore[union-attr]
        elif measure == "ending_fit":
            raw[measure] = judge.ending_fit(pieces)  # type: ignore[union-attr]
        elif measure == "closure":
            raw[measure] = judge.closure(prompts, pieces)  # type: ignore[union-attr]
        elif measure == "consistency":
            raw[measure] = [consistency(p) for p in pieces]
        elif measure == "in_fiction":
            raw[measure] = [in_fiction(p) for p in pieces]
        else:
            raw[measure] = [1.0 - repetition(p) for p in pieces]
    return PieceScores(raw)


def unit_score(measure: str, value: float) -> float:
    """One raw score mapped onto 0…1 (see ``SCALES`` and ``CLOSURE_FLOOR``); NaN stays NaN."""
    if math.isnan(value):
        return value
    if measure in SCALES:
        return min(1.0, max(0.0, value / SCALES[measure]))
    if measure == "closure":
        return min(1.0, max(0.0, 1.0 - value / CLOSURE_FLOOR))
    return min(1.0, max(0.0, value))


def story_quality(scores: PieceScores, trusted: Sequence[str]) -> list[float]:
    """Per piece, the mean of its trusted measures on 0…1 (NaN when no measure is trusted).

    Raises:
        ValueError: If a trusted measure was not scored.
    """
    missing = [m for m in trusted if m not in scores.raw]
    if missing:
        raise ValueError(f"trusted measure(s) {missing} were not scored")
    n = len(next(iter(scores.raw.values()), []))
    out = []
    for i in range(n):
        values = [unit_score(m, scores.raw[m][i]) for m in trusted]
        values = [v for v in values if not math.isnan(v)]
        out.append(sum(values) / len(values) if values else math.nan)
    return out


def paired_bootstrap(a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0,
                     ) -> dict[str, float]:
    """Mean of ``a − b`` over paired items, its 95 % interval, and the share of resamples in which a wins.

    Raises:
        ValueError: For lists of different lengths or no pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired bootstrap needs lists of one length, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if not diffs:
        raise ValueError("paired bootstrap needs at least one pair with both scores")
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    return {"mean_diff": sum(diffs) / n, "low": means[int(0.025 * samples)],
            "high": means[min(samples - 1, int(0.975 * samples))],
            "p_better": sum(1 for m in means if m > 0) / samples, "pairs": n}
