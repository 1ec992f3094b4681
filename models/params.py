"""The one definition of what a writer can set: :class:`SamplingParams`.

Every sampling and generation field a writer (an HTTP request, an OpenAI client, a batch profile, the UI)
can set is declared here once, with its type, bounds, default and description. Everything else is built
from it:

- the families' :class:`models.contract.GenerationSettings` contains it (it adds the form, genre and chat
  context of one request);
- the HTTP request, the OpenAI layer's extra fields, batch inference's settings and the serving profile's
  defaults take their fields from it with :func:`choice_fields` (optional: left out means "the preset's,
  else the default");
- the UI's sliders take their ranges from :func:`bounds`.

Validation happens once, where a value enters (the request, the profile); inner layers take the validated
object. Adding a knob means adding a field here and, where a family samples, using it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

MAX_SEED = 2**63 - 1
MAX_STOPS, MAX_STOP_CHARS = 4, 64  # stop strings per request, characters per stop string
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
MAX_BANNED, MAX_BANNED_CHARS = 32, 64  # banned phrases per request, characters per phrase
BannedPhrase = Annotated[str, Field(min_length=1, max_length=MAX_BANNED_CHARS, pattern=r"\w")]
MAX_WORD_BIASES, MAX_WORD_CHARS = 50, 40  # word_bias entries per request, characters per word
BiasedWord = Annotated[str, Field(min_length=1, max_length=MAX_WORD_CHARS, pattern=r"^\S+$")]
MAX_BIASES, MAX_TOKEN_ID = 300, 10_000_000  # logit_bias entries per request (as OpenAI), the largest id accepted
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
Bias = Annotated[float, Field(ge=-100, le=100)]


def check_logit_bias(bias: Any, vocab_size: int) -> None:
    """Raises ValueError naming the ``logit_bias`` ids a vocabulary of ``vocab_size`` tokens lacks (0: unknown)."""
    outside = sorted(i for i in bias if vocab_size and i >= vocab_size)
    if outside:
        raise ValueError(f"logit_bias: token id(s) {outside[:5]} are not in the model's vocabulary of "
                         f"{vocab_size} tokens")


class SamplingParams(BaseModel):
    """How a piece is sampled: every field a writer can set, with its bounds (strict types: ``True`` is no seed)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    max_new_tokens: int = Field(200, ge=1, le=4096, title="Max new tokens",
                                description="Upper bound on generated tokens.")
    temperature: float = Field(0.8, gt=0, le=5.0, title="Temperature", json_schema_extra={"x-step": 0.05},
                               description="Sampling temperature; lower is safer, higher is wilder.")
    top_k: int = Field(50, ge=0, le=1000, title="Top-k (0 = all)", json_schema_extra={"x-step": 1},
                       description="Sample from the k most likely tokens (0 = all).")
    top_p: float = Field(0.95, gt=0, le=1, title="Top-p", json_schema_extra={"x-step": 0.01},
                         description="Nucleus sampling: the probability mass kept.")
    min_p: float = Field(0.0, ge=0, lt=1, title="Min-p (0 = off)", json_schema_extra={"x-step": 0.01},
                         description="Drop tokens less likely than min_p times the most likely one (0 = off); "
                                     "adapts to the model's confidence where top-p does not.")
    repetition_penalty: float = Field(1.1, ge=1, le=5.0, title="Repetition penalty", json_schema_extra={"x-step": 0.05},
                                      description="Penalty on tokens already written (1 = none), as in CTRL.")
    dry_multiplier: float = Field(
        0.0, ge=0, le=5.0, title="DRY multiplier (0 = off)", json_schema_extra={"x-step": 0.1},
        description="DRY (\"don't repeat yourself\"): a token that would continue a sequence already written is "
                    "penalised by multiplier × base^(length − allowed length); 0.8 is a common choice, 0 is off.")
    dry_base: float = Field(1.75, gt=1, le=4.0, title="DRY base", json_schema_extra={"x-step": 0.05},
                            description="How fast the DRY penalty grows with the repeated sequence's length.")
    dry_allowed_length: int = Field(2, ge=1, le=20, title="DRY allowed length", json_schema_extra={"x-step": 1},
                                    description="Repeats up to this many tokens are not penalised by DRY.")
    xtc_threshold: float = Field(0.1, ge=0, le=0.5, title="XTC threshold", json_schema_extra={"x-step": 0.01},
                                 description="XTC (exclude top choices): tokens at least this likely, all but the "
                                             "least likely of them, are removed when XTC fires.")
    xtc_probability: float = Field(0.0, ge=0, le=1.0, title="XTC probability (0 = off)",
                                   json_schema_extra={"x-step": 0.05},
                                   description="How often XTC fires per token (0 = off); more surprising word "
                                               "choices at the cost of some coherence.")
    wind_down: float = Field(0.0, ge=0, le=2.0, title="Wind-down (0 = off)", json_schema_extra={"x-step": 0.05},
                             description="Past the asked length (target_words, about 1.35 tokens a word), the end "
                                         "token's logit grows by this much for every token written beyond it, so a "
                                         "piece ends near the length asked instead of running on to max_new_tokens "
                                         "(families with an instruction layout; 0 = off).")
    stop: tuple[StopString, ...] = Field((), max_length=MAX_STOPS, strict=False, title="Stop at",
                                         description=f"Up to {MAX_STOPS} strings; the text ends before the first "
                                                     "one written (it is not included).")
    logit_bias: dict[TokenId, Bias] = Field(
        default_factory=dict, max_length=MAX_BIASES, strict=False, title="Logit bias",
        description=f"Up to {MAX_BIASES} token ids (the served model's tokenizer) with a bias from -100 to 100 added "
                    "to their logits before sampling, as OpenAI's logit_bias: -100 bans a token, 100 all but forces "
                    "it. An id the model does not have is refused.")
    banned_phrases: tuple[BannedPhrase, ...] = Field(
        (), max_length=MAX_BANNED, strict=False, title="Banned phrases",
        description=f"Up to {MAX_BANNED} phrases the model never writes (case-insensitive, whole words): when one "
                    "appears, the sampler goes back to where it began and samples again (see models.banning).")
    seed: int = Field(0, ge=0, le=MAX_SEED, title="Seed",
                      description="Random seed; the same seed and settings write the same text.")
    num_beams: int = Field(1, ge=1, le=16, title="Beams",
                           description="Beam search width; 1 samples, more runs deterministic beam search.")
    trim_to_sentence: bool = Field(False, title="Trim to sentence",
                                   description="Cut the text after its last complete sentence.")
    target_words: int = Field(0, ge=0, le=3000, title="Target words",
                              description="Asked length in words (0 = the model's choice); families with an "
                                          "instruction layout put it in the instruction, the others ignore it.")

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed, validated like the original."""
        return type(self).model_validate({**self.model_dump(), **changes})


SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",  # what a preset sets, and
                   "dry_multiplier", "dry_base", "dry_allowed_length", "xtc_threshold", "xtc_probability",  # more
                   "wind_down")


def default(name: str) -> Any:
    """The code's default of a :class:`SamplingParams` field."""
    return SamplingParams.model_fields[name].default


def bounds(name: str) -> tuple[Any, Any]:
    """The closed range a UI control may offer for a numeric field (an open end moves in by the field's step).

    ``temperature`` (``gt=0, le=5``, step 0.05) gives ``(0.05, 5.0)``; ``min_p`` (``ge=0, lt=1``) ``(0.0, 0.99)``.
    """
    info = SamplingParams.model_fields[name]
    step = float((info.json_schema_extra or {}).get("x-step", 1))  # type: ignore[union-attr]
    low, high = -math.inf, math.inf
    for rule in info.metadata:
        for attr, sign in (("ge", 0), ("gt", 1), ("le", 0), ("lt", -1)):
            value = getattr(rule, attr, None)
            if value is None:
                continue
            if attr in ("ge", "gt"):
                low = float(value) + sign * step
            else:
                high = float(value) + sign * step
    if info.annotation is int:  # an integer field's range is whole numbers
        return int(low), int(high)
    return round(low, 10), round(high, 10)


def step(name: str) -> float:
    """The step a UI control moves a numeric field by."""
    return float((SamplingParams.model_fields[name].json_schema_extra or {}).get("x-step", 1))  # type: ignore[union-attr]


def choice_fields(names: tuple[str, ...] | list[str], *, optional: bool = True,
                  **changes: dict[str, Any]) -> dict[str, Any]:
    """:class:`SamplingParams` fields for ``pydantic.create_model``, to build a request or profile class from.

    Args:
        names: The fields to take.
        optional: Each field may be left out (``None``: the preset's value, else the default).
        **changes: Per field, what differs for the class being built (``default``, ``le``, ``ge``,
            ``description``...): e.g. a profile's own default or limit.

    Returns:
        ``{name: (type, FieldInfo)}``.
    """
    out: dict[str, Any] = {}
    for name in names:
        info = SamplingParams.model_fields[name]
        attributes = dict(info._attributes_set)
        metadata = list(info.metadata)
        change = dict(changes.get(name, {}))
        for changed, replaced in ((("ge", "gt"), ("ge", "gt")), (("le", "lt"), ("le", "lt"))):
            if any(bound in change for bound in changed):  # a changed bound replaces the field's own on that side
                metadata = [m for m in metadata if all(getattr(m, b, None) is None for b in replaced)]
        attributes.update(change)
        attributes.pop("default", None)
        kind: Any = info.annotation
        value = change.get("default", None if optional else info.default)
        if optional:
            kind = kind | None
        field = FieldInfo(default=value, **{k: v for k, v in attributes.items() if k not in ("annotation",)})
        field.metadata = metadata + [m for m in field.metadata if m not in metadata]
        out[name] = (kind, field)
    return out


def word_bias_field() -> tuple[Any, FieldInfo]:
    """The ``word_bias`` request field: logit bias by word, for writers (``pydantic.create_model`` form).

    Not a :class:`SamplingParams` field: the server turns each word into token ids with the tokenizer of the
    model that writes (:meth:`models.contract.WriterModel.word_token_ids`) and adds them to ``logit_bias``
    (an id ``logit_bias`` sets itself keeps its own bias).
    """
    return (dict[BiasedWord, Bias], Field(
        default_factory=dict, max_length=MAX_WORD_BIASES, strict=False, title="Word bias",
        description=f"Up to {MAX_WORD_BIASES} words (no spaces) with a bias from -100 to 100, as logit_bias but by "
                    "word: the first token of the word as it starts a sentence or follows a space, in the writing "
                    "model's tokenizer. -100 keeps the word out (and other words that begin with the same token; "
                    "banned_phrases is exact), a few points make it likelier."))


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Sampling = create_model(  # the five knobs a preset sets, all given (e.g. the evaluation suite's sampling)
    "Sampling", __base__=_Group, __module__=__name__, __doc__="The sampling knobs a preset sets, with their defaults.",
    **choice_fields(SAMPLING_FIELDS, optional=False))


def chosen(values: Any) -> dict[str, Any]:
    """The :class:`SamplingParams` fields an object (a request, a profile section) sets (not None)."""
    return {name: getattr(values, name) for name in SamplingParams.model_fields
            if getattr(values, name, None) is not None}


__all__ = ["MAX_BANNED", "MAX_BANNED_CHARS", "MAX_SEED", "MAX_STOPS",
           "MAX_STOP_CHARS", "SAMPLING_FIELDS", "Sampling", "SamplingParams", "StopString",
           "ValidationError", "bounds", "choice_fields", "chosen", "default", "step", "word_bias_field"]
