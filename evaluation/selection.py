"""The selection rule: gates first, then the lowest per-word perplexity; near-ties go to the faster model.

Gates (each candidate passes or fails each one, and the report shows which):

- ``ranking``: prompt-ranking accuracy ≥ chance + ``min_ranking_margin`` (the model uses its prompt;
  a margin of -1 turns the gate off, as the smoke profile's barely trained models need);
- ``distinct2``: distinct-2 ≥ ``min_distinct2`` (samples are not the same phrases over and over);
- ``repetition``: repeated-4-gram share ≤ ``max_repetition`` (no loops inside a sample);
- ``finite``: no metric is NaN or infinite.

Among the candidates that pass, the lowest per-word perplexity wins; candidates within
``tie_tolerance`` (relative) of the best are a tie, which the highest generation tokens/s breaks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

GATES = ("ranking", "distinct2", "repetition", "finite")
NUMERIC = ("ppl_word", "ranking_acc", "distinct1", "distinct2", "self_bleu4", "repetition", "bleu4", "mean_words",
           "complete_share", "tokens_per_s")


@dataclass(frozen=True)
class SelectionRule:
    """Thresholds of the gates and the tie tolerance (the profile's ``evaluate`` ``rule`` parameters)."""

    min_ranking_margin: float = 0.05
    min_distinct2: float = 0.2
    max_repetition: float = 0.3
    tie_tolerance: float = 0.01

    def __post_init__(self) -> None:
        """Validates the thresholds; raises ValueError naming the field."""
        for name in ("min_distinct2", "max_repetition", "tie_tolerance"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"SelectionRule.{name} must be in [0, 1], got {value}")
        if not -1 <= self.min_ranking_margin <= 1:
            raise ValueError(f"SelectionRule.min_ranking_margin must be in [-1, 1] (-1 turns the gate off), "
                             f"got {self.min_ranking_margin}")

    def describe(self, chance: float) -> str:
        """The rule in one paragraph, with its numbers."""
        return (f"Gates: prompt-ranking accuracy ≥ {chance + self.min_ranking_margin:.0%} (chance {chance:.0%} + "
                f"{self.min_ranking_margin:.0%}); distinct-2 ≥ {self.min_distinct2:.2f}; repeated 4-grams ≤ "
                f"{self.max_repetition:.0%}; no NaN. Then the lowest per-word perplexity wins; candidates within "
                f"{self.tie_tolerance:.0%} of it are a tie, won by the faster generator.")


def apply_gates(metrics: pd.DataFrame, rule: SelectionRule, chance: float) -> pd.DataFrame:
    """Adds one boolean column per gate (``gate_<name>``) and ``passed``."""
    out = metrics.copy()
    out["gate_ranking"] = out["ranking_acc"] >= chance + rule.min_ranking_margin
    out["gate_distinct2"] = out["distinct2"] >= rule.min_distinct2
    out["gate_repetition"] = out["repetition"] <= rule.max_repetition
    out["gate_finite"] = out[[c for c in NUMERIC if c in out]].apply(
        lambda row: all(isinstance(v, int | float) and math.isfinite(v) for v in row), axis=1)
    out["passed"] = out[[f"gate_{g}" for g in GATES]].all(axis=1)
    return out


def select(metrics: pd.DataFrame, rule: SelectionRule, chance: float) -> tuple[pd.DataFrame, str | None, str]:
    """Applies the rule; returns the gated frame (with ``rank``), the winner (or None) and why.

    Args:
        metrics: One row per candidate (``candidate`` plus the suite's metric columns).
        rule: Gate thresholds and tie tolerance.
        chance: Prompt-ranking chance level.
    """
    gated = apply_gates(metrics, rule, chance)
    gated["rank"] = pd.NA
    passing = gated[gated["passed"]]
    if passing.empty:
        failures = "; ".join(f"{r.candidate} failed {', '.join(g for g in GATES if not r[f'gate_{g}'])}"
                             for _, r in gated.iterrows())
        return gated, None, f"no candidate passed the gates ({failures})"
    best = float(passing["ppl_word"].min())
    tied = passing[passing["ppl_word"] <= best * (1 + rule.tie_tolerance)]
    winner = tied.sort_values(["tokens_per_s"], ascending=False).iloc[0]["candidate"]
    order = passing.sort_values("ppl_word")["candidate"].tolist()
    order.remove(winner)
    for rank, name in enumerate([winner, *order], start=1):
        gated.loc[gated["candidate"] == name, "rank"] = rank
    why = f"{winner} passed every gate with the lowest per-word perplexity ({best:.3f})"
    if len(tied) > 1:
        why = (f"{winner} passed every gate; {len(tied)} candidates were within {rule.tie_tolerance:.0%} of the "
               f"best per-word perplexity ({best:.3f}) and {winner} generates fastest")
    return gated, str(winner), why


def rule_dict(rule: SelectionRule) -> dict[str, Any]:
    """The rule as a plain dict."""
    return asdict(rule)
