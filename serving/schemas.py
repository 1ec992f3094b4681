"""The HTTP API's request and response models (Pydantic; their limits and descriptions are the OpenAPI docs).

Nothing here reads the serving profile. :class:`GenerateRequest` carries the code's default limits; the
service builds its own request class from the profile it starts with (:func:`request_model`, through
:class:`serving.planner.RequestPlanner`), so the limits a request is checked against, the ones the OpenAPI
document shows and the ones the UI offers are the same. Validation here covers everything that does not
depend on the loaded model; the form and genre are checked against the model's control tokens by the planner.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from models.params import SAMPLING_FIELDS, choice_fields, word_bias_field
from models.presets import PresetName
from serving.config import Defaults, Limits

# the UI's and the API docs' wording of the presets (their values are models.presets')
PRESET_DESCRIPTIONS = {
    "steady": "stays on the prompt, plain sentences, few surprises",
    "balanced": "varied word choice with the unlikely tail cut (a good first try)",
    "wild": "the most varied words, straying further from the prompt (brainstorming)",
}


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


def _profile_fields(limits: Limits, defaults: Defaults) -> dict[str, Any]:
    """The request's fields taken from :class:`models.params.SamplingParams`, with the profile's limits and defaults.

    The sampling fields are optional (left out: the preset's, else the profile's default, as the docs say);
    ``max_new_tokens`` defaults to the profile's and stops at its limit.
    """
    def left_out(name: str) -> dict[str, Any]:
        info = choice_fields([name])[name][1]
        return {"description": f"{info.description} Left out: the preset's, else {getattr(defaults, name)}."}

    return {
        **choice_fields(SAMPLING_FIELDS, **{name: left_out(name) for name in SAMPLING_FIELDS}),
        **choice_fields(("max_new_tokens",), optional=False,
                        max_new_tokens={"default": defaults.max_new_tokens, "le": limits.max_new_tokens}),
        **choice_fields(("stop", "logit_bias", "banned_phrases", "target_words"), optional=False),
        "word_bias": word_bias_field(),
        **choice_fields(("seed",), seed={"description": "Random seed; the same seed and settings write the same "
                                                        "text. Left out: the server picks one and returns it."}),
    }


def _request_fields(limits: Limits) -> dict[str, Any]:
    """The request's own fields (not sampling): the prompt and the number of drafts, within the profile's limits."""
    return {
        "prompt": (str, Field(min_length=1, max_length=limits.max_prompt_chars,
                              description="The writing prompt (plain text, no emoji or control characters).",
                              examples=["A lighthouse keeper finds a message in a bottle."],
                              json_schema_extra={"pattern": r"\S"})),
        "num_drafts": (int, Field(1, ge=1, le=limits.max_drafts,
                                  description="How many drafts to write; draft i uses seed + i.")),
    }


class RequestBase(BaseModel):
    """What to write and how (strict types: ``true`` is not a seed, ``"3"`` is not a number).

    The sampling fields come from :class:`models.params.SamplingParams` (:func:`request_model` adds them with
    the serving profile's limits and defaults); :data:`GenerateRequest` is the class for the code's defaults.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    reject_emoji: ClassVar[bool] = Limits().reject_emoji  # the profile's limits.reject_emoji

    form: str = Field("story", max_length=40, description="The form to write in: story, fable or poem "
                      "(GET /model lists what the served model knows).", json_schema_extra={"pattern": CONTROL_WORD})
    genre: str = Field("", max_length=40, description="Genre, e.g. fantasy, mystery, science fiction; empty for none.",
                       json_schema_extra={"pattern": CONTROL_WORD})
    story_id: str = Field("", max_length=64, description="The story this request writes for ('' for none): it "
                          "keeps a story with one model when a challenger is served, and links the request log's row "
                          "to the story.", json_schema_extra={"pattern": r"^[A-Za-z0-9_-]*$"})
    preset: PresetName | None = Field(
        None, description="Named sampling settings: " + "; ".join(f"{k}: {v}" for k, v in PRESET_DESCRIPTIONS.items())
        + ". The sampling fields you send yourself win over the preset's.")

    @field_validator("prompt", check_fields=False)
    @classmethod
    def _prompt_is_text(cls, value: str) -> str:
        return check_prompt(value, cls.reject_emoji)

    @field_validator("story_id")
    @classmethod
    def _story_id_is_plain(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_-]*$", value):
            raise ValueError("use ASCII letters, digits, '-' or '_' only")
        return value

    @field_validator("form", "genre")
    @classmethod
    def _control_is_plain(cls, value: str) -> str:
        if not re.match(CONTROL_WORD, value):
            raise ValueError("use ASCII letters, digits, spaces, '-' or '_' only")
        return value.strip().lower()


@lru_cache(maxsize=8)
def request_model(limits: Limits, defaults: Defaults) -> type[RequestBase]:
    """The request class for a serving profile's limits and defaults (named ``GenerateRequest`` in the docs).

    Args:
        limits: The profile's ``limits`` (prompt length, new tokens, drafts, emoji).
        defaults: The profile's ``defaults`` (the new-token default and the sampling values the docs name).
    """
    model = create_model("GenerateRequest", __base__=RequestBase, __doc__=RequestBase.__doc__, __module__=__name__,
                         **_request_fields(limits), **_profile_fields(limits, defaults))
    model.reject_emoji = limits.reject_emoji
    return model


GenerateRequest: Any = request_model(Limits(), Defaults())  # the code's limits (a profile may change them)


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
    request_id: str = Field("", description="This request's id in the request log: send it with feedback "
                                            "(POST /feedback) on these drafts.")
