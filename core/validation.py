"""Checks the typed settings share: a minimum named by its field, and unknown keys named by theirs.

The settings dataclasses (``TrainConfig``, ``GanConfig``, ...) call these from ``__post_init__``; pydantic
runs ``__post_init__`` when ZenML validates a step's parameters, so the same message names the profile's
value before the run starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from pydantic import ConfigDict, ValidationError

# Pydantic checks a settings dataclass's field types when a step's parameters are validated; stdlib
# dataclasses ignore unknown keys there unless told: every settings class sets ``__pydantic_config__ = STRICT``.
STRICT = ConfigDict(extra="forbid")


def require_min(config: Any, names: Sequence[str], minimum: float, integer: bool = False) -> None:
    """Raises ValueError naming the first of ``names`` on ``config`` that is below ``minimum`` (or not a number).

    The message reads ``GanConfig.rounds must be ≥ 0, got -1``; with ``integer`` the value must be an int.
    """
    for name in names:
        value = getattr(config, name)
        kinds = int if integer else int | float
        if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
            want = "an integer " if integer else ""
            raise ValueError(f"{type(config).__name__}.{name} must be {want}≥ {minimum:g}, got {value!r}")


def from_known_fields(cls: Any, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)`` for a dataclass, with unknown keys rejected by name (``what`` names the kind of setting)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
    return cls(**data)


def refusal(exc: ValidationError, noun: str = "setting") -> str:
    """A pydantic refusal in one line: each bad key with what is wrong (``noun`` names an unknown key's kind).

    ``__post_init__`` checks already name their field (``GanConfig.rounds must be …``) and are kept as said.
    """
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            parts.append(f"unknown {noun} {where!r}")
        else:
            message = error["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
