"""The HTTP API's request and response models (Pydantic; their limits and descriptions are the OpenAPI docs).

The limits come from the serving profile (``configs/serving.yaml``, read once at import). Validation here
covers everything that does not depend on the loaded model; the form and genre are checked against the
model's control tokens by :mod:`serving.engine`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.presets import (
    DESCRIPTIONS,
    MAX_STOP_CHARS,
    MAX_STOPS,
    PRESETS,
    REPETITION_PENALTY_MAX,
    TEMPERATURE_MAX,
    TOP_K_MAX,
)
from serving.config import ServingConfig, load_serving_config

CONFIG: ServingConfig = load_serving_config()
_LIMITS, _DEFAULTS = CONFIG.limits, CONFIG.defaults
MAX_SEED = 2**63 - 1
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]


def _is_emoji(char: str) -> bool:
    code = ord(char)
    return (0x1F000 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or 0xFE00 <= code <= 0xFE0F
            or code == 0x200D or 0x1F1E6 <= code <= 0x1F1FF)


def check_prompt(text: str, reject_emoji: bool = True) -> str:
    """Returns the prompt stripped, or raises ValueError saying what is wrong and where.

    Rejected: empty or whitespace-only text; control characters other than line breaks and tabs; and,
    when ``reject_emoji``, emoji (the tokenizer never saw them, so they reach the model as stray bytes).
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("the prompt is empty (or only whitespace); write a sentence or two")
    for i, char in enumerate(text):
        if unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"} and char not in "\n\t\r":
            raise ValueError(f"the prompt contains a control character U+{ord(char):04X} at position {i}")
        if reject_emoji and _is_emoji(char):
            raise ValueError(f"the prompt contains an emoji (U+{ord(char):04X}) at position {i}; the models were "
                             "trained on plain text, describe it in words instead")
    return stripped


def _refused(char: str, reject_emoji: bool) -> bool:
    return (unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"} and char not in "\n\t\r") or \
        (reject_emoji and _is_emoji(char))


def prompt_safe(text: str, reject_emoji: bool = True) -> str:
    """``text`` without the characters :func:`check_prompt` refuses (for text the writer did not type as a prompt)."""
    return "".join(char for char in text if not _refused(char, reject_emoji))


CONTROL_WORD = r"^[A-Za-z0-9 _-]*$"  # form and genre: what the check below accepts, documented as the pattern


class GenerateRequest(BaseModel):
    """What to write and how (strict types: ``true`` is not a seed, ``"3"`` is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, max_length=_LIMITS.max_prompt_chars,
                        description="The writing prompt (plain text, no emoji or control characters).",
                        examples=["A lighthouse keeper finds a message in a bottle."],
                        json_schema_extra={"pattern": r"\S"})
    form: str = Field("story", max_length=40, description="The form to write in: story, fable or poem "
                      "(GET /model lists what the served model knows).", json_schema_extra={"pattern": CONTROL_WORD})
    genre: str = Field("", max_length=40, description="Genre, e.g. fantasy, mystery, science fiction; empty for none.",
                       json_schema_extra={"pattern": CONTROL_WORD})
    max_new_tokens: int = Field(_DEFAULTS.max_new_tokens, ge=1, le=_LIMITS.max_new_tokens,
                                description="Upper bound on generated tokens.")
    preset: PresetName | None = Field(
        None, description="Named sampling settings: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items())
        + ". The sampling fields you send yourself win over the preset's.")
    temperature: float | None = Field(None, gt=0, le=TEMPERATURE_MAX,
                                      description="Sampling temperature; lower is safer, higher is wilder. "
                                                  f"Left out: the preset's, else {_DEFAULTS.temperature}.")
    top_k: int | None = Field(None, ge=0, le=TOP_K_MAX, description="Sample from the k most likely tokens (0 = all). "
                              f"Left out: the preset's, else {_DEFAULTS.top_k}.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling: the probability mass kept. "
                                f"Left out: the preset's, else {_DEFAULTS.top_p}.")
    min_p: float | None = Field(None, ge=0, lt=1, description="Drop tokens less likely than min_p times the most "
                                f"likely one (0 = off). Left out: the preset's, else {_DEFAULTS.min_p}.")
    repetition_penalty: float | None = Field(
        None, ge=1, le=REPETITION_PENALTY_MAX,
        description=f"Penalty on tokens already written (1 = none). Left out: the preset's, else "
                    f"{_DEFAULTS.repetition_penalty}.")
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list, max_length=MAX_STOPS,
        description="Up to 4 strings; the text ends before the first one written (it is not included).")
    num_drafts: int = Field(1, ge=1, le=_LIMITS.max_drafts,
                            description="How many drafts to write; draft i uses seed + i.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED,
                             description="Random seed; the same seed and settings write the same text. "
                                         "Left out: the server picks one and returns it.")

    @field_validator("prompt")
    @classmethod
    def _prompt_is_text(cls, value: str) -> str:
        return check_prompt(value, _LIMITS.reject_emoji)

    @field_validator("form", "genre")
    @classmethod
    def _control_is_plain(cls, value: str) -> str:
        if not re.match(CONTROL_WORD, value):
            raise ValueError("use ASCII letters, digits, spaces, '-' or '_' only")
        return value.strip().lower()


class Draft(BaseModel):
    """One generated piece."""

    text: str = Field(description="The generated text.")
    seed: int = Field(description="The seed that wrote it (send it back to get the same text).")
    tokens: int = Field(description="Generated tokens (under the model's tokenizer).")


class Timings(BaseModel):
    """Where the time went, in milliseconds."""

    queue_ms: float = Field(description="Waiting for a batch slot (0 without batching).")
    generate_ms: float = Field(description="Model time for this request's drafts.")
    total_ms: float = Field(description="From request accepted to response ready.")
    tokens_per_s: float = Field(description="Generated tokens per second of total time.")


class GenerateResponse(BaseModel):
    """Drafts, what wrote them and how long it took."""

    drafts: list[Draft]
    provenance: dict[str, Any] = Field(description="Family, registry version, alias and run ids of the model.")
    settings: dict[str, Any] = Field(description="The generation settings used (seed of the first draft).")
    timings: Timings
