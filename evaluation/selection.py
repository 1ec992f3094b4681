"""The selection rule: gates first, then a score that weighs in-domain perplexity against open-prompt writing.

Gates (each candidate passes or fails each one, and the report shows which):

- ``ranking``: prompt-ranking accuracy ≥ chance + ``min_ranking_margin`` (the model uses its prompt;
  a margin of -1 turns the gate off, as the smoke profile's barely trained models need);
- ``distinct2``: distinct-2 ≥ ``min_distinct2`` (samples are not the same phrases over and over);
- ``repetition``: repeated-4-gram share ≤ ``max_repetition`` (no loops inside a sample);
- ``prompt_use``: share of open-prompt pieces that use a content word of their prompt ≥ ``min_prompt_use``
  (a model that writes about something else fails, however low its perplexity on its own corpus);
- ``complete``: share of open-prompt pieces that end on a complete sentence ≥ ``min_complete``;
- ``finite``: no metric is NaN or infinite.

Among the candidates that pass, the lowest **score** wins. When the evaluation scored the story-quality
measures that passed their check (``story_quality``, :mod:`evaluation.quality`; what a reader sees on
prompts no training source contains), it is the score::

    score = ppl_weight × ln(per-word perplexity) − quality_weight × story quality        (story quality 0…1)

With ``ppl_weight`` 0 (the default) in-domain perplexity only gates (through prompt ranking) and breaks
no ties: fitting the built-in corpus's templates is not what a reader rewards, and the untuned base
(scored as a candidate too) would lose on it by construction. Without a trusted measure the rule falls
back to the word-overlap score::

    score = ln(per-word perplexity) − quality_weight × open quality
    open quality = mean(open_use, open_coverage, open_form, open_complete, 1 − open_repetition)   (0…1)

Candidates within ``tie_tolerance`` of the best score are a tie, decided by the higher quality, then the
fewer parameters: never by speed, which differs by noise between identical networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.validation import STRICT

GATES = ("ranking", "distinct2", "repetition", "prompt_use", "complete", "finite")
QUALITY = ("open_use", "open_coverage", "open_form", "open_complete")
NUMERIC = ("ppl_word", "ranking_acc", "distinct1", "distinct2", "self_bleu4", "repetition", "bleu4", "mean_words",
           "complete_share", "tokens_per_s", "open_use", "open_coverage", "open_form", "open_complete",
           "open_repetition", "open_distinct2")


@dataclass(frozen=True)
class SelectionRule:
    """Gate thresholds, the quality weight and the tie tolerance (the profile's ``evaluate`` ``rule`` parameters)."""

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    min_ranking_margin: float = 0.05
    min_distinct2: float = 0.2
    max_repetition: float = 0.3
    min_prompt_use: float = 0.8
    min_complete: float = 0.6
    quality_weight: float = 10.0
    tie_tolerance: float = 0.01
    ppl_weight: float = 0.0

    def __post_init__(self) -> None:
        """Validates the thresholds; raises ValueError naming the field."""
        for name in ("min_distinct2", "max_repetition", "min_prompt_use", "min_complete", "tie_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"SelectionRule.{name} must be in [0, 1], got {value!r}")
        if not -1 <= self.min_ranking_margin <= 1:
            raise ValueError(f"SelectionRule.min_ranking_margin must be in [-1, 1] (-1 turns the gate off), "
                             f"got {self.min_ranking_margin}")
        if not isinstance(self.quality_weight, int | float) or not 0 <= self.quality_weight <= 100:
            raise ValueError(f"SelectionRule.quality_weight must be in [0, 100], got {self.quality_weight!r}")
        if not isinstance(self.ppl_weight, int | float) or not 0 <= self.ppl_weight <= 10:
            raise ValueError(f"SelectionRule.ppl_weight must be in [0, 10], got {self.ppl_weight!r}")

    def describe(self, chance: float) -> str:
        """The rule in one paragraph, with its numbers."""
        return (f"Gates: prompt-ranking accuracy ≥ {chance + self.min_ranking_margin:.0%} (chance {chance:.0%} + "
                f"{self.min_ranking_margin:.0%}); distinct-2 ≥ {self.min_distinct2:.2f}; repeated 4-grams ≤ "
                f"{self.max_repetition:.0%}; open-prompt pieces that use a word of their prompt ≥ "
                f"{self.min_prompt_use:.0%}; open-prompt pieces ending on a complete sentence ≥ "
                f"{self.min_complete:.0%}; no NaN. Then the lowest score = {self.ppl_weight:g} × "
                f"ln(per-word perplexity) − "
                f"{self.quality_weight:g} × story quality (the mean of the story-quality measures that passed their "
                f"check, on the open prompts) wins; without a trusted measure, score = ln(per-word perplexity) − "
                f"{self.quality_weight:g} × open quality (the mean of prompt use, prompt coverage, form, complete "
                f"endings and 1 − repetition on the open prompts). Scores within {self.tie_tolerance:g} of the "
                f"best are a tie, won by the higher quality, then the fewer parameters.")


def open_quality(row: Any) -> float:
    """The open-prompt quality of one metrics row (0…1; see the module docstring)."""
    parts = [float(row[k]) for k in QUALITY] + [1.0 - float(row["open_repetition"])]
    return sum(parts) / len(parts)


def story_scored(row: Any) -> bool:
    """Whether a metrics row carries a story quality (trusted measures were scored)."""
    value = row.get("story_quality") if hasattr(row, "get") else None
    return isinstance(value, int | float) and math.isfinite(float(value))


def quality(row: Any) -> float:
    """The quality the rule ranks by: the story quality when scored, else the open (word-overlap) quality."""
    return float(row["story_quality"]) if story_scored(row) else open_quality(row)


def score(row: Any, rule: SelectionRule) -> float:
    """The rule's score of one metrics row (lower is better; see the module docstring)."""
    log_ppl = math.log(max(float(row["ppl_word"]), 1e-9))
    if story_scored(row):
        return rule.ppl_weight * log_ppl - rule.quality_weight * float(row["story_quality"])
    return log_ppl - rule.quality_weight * open_quality(row)


def apply_gates(metrics: pd.DataFrame, rule: SelectionRule, chance: float) -> pd.DataFrame:
    """Adds one boolean column per gate (``gate_<name>``), ``passed``, ``open_quality``, ``quality`` and ``score``.

    Candidates that pass are ranked on one scale: when some of them carry a story quality and others do not,
    it is dropped (all fall back to the open quality) with a warning. One that fails a gate may lack it (the
    evaluation does not score the likelihood measures of a candidate that cannot win).
    """
    out = metrics.copy()
    out["gate_ranking"] = out["ranking_acc"] >= chance + rule.min_ranking_margin
    out["gate_distinct2"] = out["distinct2"] >= rule.min_distinct2
    out["gate_repetition"] = out["repetition"] <= rule.max_repetition
    out["gate_prompt_use"] = out["open_use"] >= rule.min_prompt_use
    out["gate_complete"] = out["open_complete"] >= rule.min_complete
    out["gate_finite"] = out[[c for c in NUMERIC if c in out]].apply(
        lambda row: all(isinstance(v, int | float) and math.isfinite(v) for v in row), axis=1)
    out["passed"] = out[[f"gate_{g}" for g in GATES]].all(axis=1)
    out["open_quality"] = out.apply(open_quality, axis=1)
    if "story_quality" in out:  # those that pass are ranked on one scale: all by story quality, or none
        scored = out.apply(story_scored, axis=1)
        ranked = scored[out["passed"]]
        if ranked.any() and not ranked.all():
            import logging

            logging.getLogger(__name__).warning("story quality scored for %s only: ranking all on open quality",
                                                list(out.loc[scored, "candidate"]))
            out["story_quality"] = float("nan")
    out["quality"] = out.apply(quality, axis=1)
    out["score"] = out.apply(lambda r: score(r, rule), axis=1)
    return out


def _order(frame: pd.DataFrame, rule: SelectionRule) -> list[str]:
    """Candidates best first: by score, with ties (within ``tie_tolerance``) by open quality, then size."""
    best = float(frame["score"].min())
    tied = frame[frame["score"] <= best + rule.tie_tolerance]
    first = tied.sort_values(["quality", "parameters", "candidate"], ascending=[False, True, True])
    rest = frame.drop(index=first.index).sort_values(["score", "candidate"])
    return [*first["candidate"], *rest["candidate"]]


def select(metrics: pd.DataFrame, rule: SelectionRule, chance: float) -> tuple[pd.DataFrame, str | None, str]:
    """Applies the rule; returns the gated frame (with ``rank``), the winner (or None) and why.

    Args:
        metrics: One row per candidate (``candidate``, ``parameters`` plus the suite's metric columns).
        rule: Gate thresholds, quality weight and tie tolerance.
        chance: Prompt-ranking chance level.
    """
    gated = apply_gates(metrics, rule, chance)
    gated["rank"] = pd.NA
    passing = gated[gated["passed"]]
    failures = "; ".join(f"{r.candidate} failed {', '.join(g for g in GATES if not r[f'gate_{g}'])}"
                         for _, r in gated.iterrows() if not r["passed"])
    if passing.empty:
        return gated, None, f"no candidate passed the gates ({failures})"
    order = _order(passing, rule)
    for rank, name in enumerate(order, start=1):
        gated.loc[gated["candidate"] == name, "rank"] = rank
    winner = order[0]
    top = passing.set_index("candidate").loc[winner]
    story = f"story quality {top['story_quality']:.3f}, " if story_scored(top) else ""
    why = (f"{winner} passed every gate with the best score {top['score']:.3f} ({story}per-word perplexity "
           f"{top['ppl_word']:.3f}, open quality {top['open_quality']:.2f}: {top['open_use']:.0%} of open-prompt "
           f"pieces use their prompt, coverage {top['open_coverage']:.0%})")
    tied = passing[passing["score"] <= float(passing["score"].min()) + rule.tie_tolerance]
    if len(tied) > 1:
        why += (f"; {len(tied)} candidates were within {rule.tie_tolerance:g} of the best score and {winner} has "
                f"the highest {'story' if story else 'open'} quality")
    if failures:
        why += f"; {failures}"
    return gated, winner, why
