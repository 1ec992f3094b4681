"""Named sampling presets, shared by the HTTP API, the writing UI and batch inference.

A preset sets the five sampling knobs at once; whatever a request (or a profile) sets itself wins over
the preset. Values were chosen for the 135 M-parameter champion and measured on the open prompts with
``python -m benchmarks.presets`` (docs/serving.md has the table; a first ``wild`` at temperature 1.2 and
min-p 0.1 was no more varied than the default, so it moved to 1.4 and 0.05):

========== ====================================================================================
steady     Temperature 0.7, top-k 40, top-p 0.9, min-p 0.05, repetition penalty 1.15: stays on
           the prompt, plain sentences, few surprises (drafts you will edit lightly).
balanced   Temperature 0.9, no top-k/top-p, min-p 0.05, repetition penalty 1.1: varied word choice
           while min-p cuts the unlikely tail (a good first try).
wild       Temperature 1.4, no top-k/top-p, min-p 0.05, repetition penalty 1.05: the most varied words,
           straying further from the prompt; min-p keeps it from falling apart (brainstorming).
========== ====================================================================================
"""

from __future__ import annotations

from typing import Any, Literal

from models.params import SAMPLING_FIELDS  # the fields a preset sets; their bounds and defaults live there

PRESETS: dict[str, dict[str, float | int]] = {
    "steady": {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.15},
    "balanced": {"temperature": 0.9, "top_k": 0, "top_p": 1.0, "min_p": 0.05, "repetition_penalty": 1.1},
    "wild": {"temperature": 1.4, "top_k": 0, "top_p": 1.0, "min_p": 0.05, "repetition_penalty": 1.05},
}

PresetName = Literal["steady", "balanced", "wild"]  # the names above, as a type for requests


def preset_values(name: str) -> dict[str, Any]:
    """The sampling values of preset ``name``.

    Raises:
        ValueError: If there is no such preset (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def resolve_sampling(defaults: dict[str, Any], preset: str | None, chosen: dict[str, Any]) -> dict[str, Any]:
    """The sampling values in force: the defaults, then the preset's, then what was chosen (None = not chosen).

    Args:
        defaults: Values for every field of :data:`SAMPLING_FIELDS`.
        preset: A preset name, or None/'' for none.
        chosen: Values set explicitly (a request's or a profile's); None entries are ignored.
    """
    values = {k: defaults[k] for k in SAMPLING_FIELDS}
    if preset:
        values.update(preset_values(preset))
    values.update({k: v for k, v in chosen.items() if k in SAMPLING_FIELDS and v is not None})
    return values
