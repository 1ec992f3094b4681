"""The one request planner: what a writer asks for, checked and turned into the model's generation settings.

Every way in plans through :class:`RequestPlanner`: ``/generate`` and ``/stream``, the OpenAI-compatible
``/v1`` endpoints, both tabs of the writing UI and batch inference. So a request is checked against one
set of limits (the serving profile's, on top of the sampling limits in :mod:`models.presets`), its
sampling values are resolved the same way (the profile's defaults, then the preset, then what it sets),
and its seeds are derived in one place (draft *i* uses seed + *i*).

Nothing here reads the serving profile: the service reads it once when it starts and builds its planner
from it (:meth:`RequestPlanner.for_config`); batch inference plans with the code's defaults and the
inference profile's :class:`BatchGeneration`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from models.params import MAX_SEED, SAMPLING_FIELDS, check_logit_bias, choice_fields, word_bias_field
from models.presets import PresetName, resolve_sampling
from serving.config import Defaults, Limits, ServingConfig
from serving.schemas import RequestBase, request_model

if TYPE_CHECKING:
    from models.contract import GenerationSettings


@dataclass(frozen=True)
class Chat:
    """The context around a request: a system message, earlier turns, the text the piece begins with.

    ``system`` ('' keeps the model's own) replaces the system prompt; ``lead`` is written on from.
    Families with a chat layout (a pretrained Transformer with a chat template) read the system message
    and the turns; families whose ``writes_on`` is true read the lead; the others write from the prompt.
    """

    system: str = ""
    history: tuple[tuple[str, str], ...] = ()
    lead: str = ""


class RequestError(ValueError):
    """A request the loaded model cannot serve; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_controls(controls: dict[str, list[str]], form: str, genre: str) -> None:
    """Raises RequestError (naming ``form`` or ``genre``) when the model has no control token for it.

    Args:
        controls: The model's ``{"form": [...], "genre": [...]}`` values.
        form: The requested form.
        genre: The requested genre ('' for none).
    """
    if form not in controls["form"]:
        raise RequestError("form", f"unknown form '{form}'; this model writes: {', '.join(controls['form'])}")
    if genre and genre not in controls["genre"]:
        raise RequestError("genre", f"unknown genre '{genre}'; this model knows: "
                                    f"{', '.join(g for g in controls['genre'] if g != 'none')} (or leave it empty)")


class _BatchBase(BaseModel):
    """Generation settings of a batch inference run (the inference profile's ``generation``).

    Every field but ``preset`` is :class:`models.params.SamplingParams`'. The sampling fields left out
    (None) come from the ``preset`` when one is named, else from the code's serving defaults
    (:class:`serving.config.Defaults`), as for an HTTP request; a JSONL row's own ``seed`` wins over ``seed``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    preset: PresetName | None = Field(None, description="Named sampling settings (steady, balanced, wild).")

    def fixed(self) -> dict[str, Any]:
        """The settings a batch fixes beyond what a request can ask for."""
        return {name: getattr(self, name) for name in BATCH_FIXED}


BATCH_FIXED = ("trim_to_sentence", "target_words", "num_beams")  # what a batch sets that a request cannot
BatchGeneration = create_model(
    "BatchGeneration", __base__=_BatchBase, __module__=__name__, __doc__=_BatchBase.__doc__,
    **choice_fields(SAMPLING_FIELDS),
    **choice_fields(("max_new_tokens", "stop", "seed", "logit_bias", "banned_phrases", *BATCH_FIXED), optional=False,
                    max_new_tokens={"default": 160}, trim_to_sentence={"default": True}),
    word_bias=word_bias_field())

WordIds = Callable[[str], list[int]]  # a word -> its token ids in the writing model's tokenizer


@dataclass(frozen=True)
class Plan:
    """A request planned: the drafts' seeds, the checked settings (first seed) and the ``(prompt, seed)`` rows."""

    seeds: list[int]
    settings: GenerationSettings
    rows: list[tuple[str, int]] = field(default_factory=list)


class RequestPlanner:
    """Checks requests against one serving profile's limits and plans them with its defaults.

    Args:
        limits: The profile's limits (default: the code's, :class:`serving.config.Limits`).
        defaults: The profile's generation defaults (default: the code's, :class:`serving.config.Defaults`).
    """

    def __init__(self, limits: Limits | None = None, defaults: Defaults | None = None) -> None:
        self.limits = limits or Limits()
        self.defaults = defaults or Defaults()
        self.request_model: type[RequestBase] = request_model(self.limits, self.defaults)

    @classmethod
    def for_config(cls, config: ServingConfig) -> RequestPlanner:
        """The planner of a serving profile (its limits and defaults)."""
        return cls(config.limits, config.defaults)

    def request(self, **fields: Any) -> RequestBase:
        """A request checked against the profile's limits.

        Raises:
            pydantic.ValidationError: Naming each field that breaks a rule.
        """
        return self.request_model.model_validate(fields)

    def seeds(self, request: Any) -> list[int]:
        """The drafts' seeds: ``seed, seed + 1, ...`` (a random first seed when the request has none)."""
        first = request.seed if request.seed is not None else random.randrange(0, 2**31)
        return [(first + i) % (MAX_SEED + 1) for i in range(request.num_drafts)]

    def settings(self, asked: Any, seed: int, controls: dict[str, list[str]], *, form: str | None = None,
                 genre: str | None = None, chat: Chat | None = None, vocab_size: int = 0,
                 words: WordIds | None = None, **fixed: Any) -> GenerationSettings:
        """The model's generation settings for what was asked (form and genre checked against the model).

        Sampling: the profile's defaults, then the preset, then the fields ``asked`` sets.

        Args:
            asked: A request, or a batch's settings.
            seed: The seed of this draft.
            controls: The model's forms and genres (``WriterModel.controls()``).
            form: The form (default: ``asked.form``).
            genre: The genre (default: ``asked.genre``).
            chat: A conversation's system message, earlier turns and lead (chat-layout families read it).
            vocab_size: The model's vocabulary size (0: unknown); ``logit_bias`` ids must be below it.
            words: The writing model's ``word_token_ids`` (``word_bias`` becomes ``logit_bias`` with it).
            **fixed: Further settings the caller fixes (batch inference: ``trim_to_sentence``, ...).

        Raises:
            RequestError: If the model does not know the form or genre, a ``logit_bias`` token id, or cannot
                turn a ``word_bias`` word into tokens.
        """
        from models.contract import GenerationSettings

        form = form if form is not None else getattr(asked, "form", "story")
        genre = (genre if genre is not None else getattr(asked, "genre", "")) or ""
        check_controls(controls, form, genre)
        bias = {**word_biases(getattr(asked, "word_bias", None) or {}, words),
                **(getattr(asked, "logit_bias", None) or {})}  # an id logit_bias names keeps its own bias
        try:
            check_logit_bias(bias, vocab_size)
        except ValueError as exc:
            raise RequestError("logit_bias", str(exc).removeprefix("logit_bias: ")) from None
        sampling = resolve_sampling(self.defaults.model_dump(), asked.preset,
                                    {k: getattr(asked, k) for k in SAMPLING_FIELDS})
        chat = chat or Chat()
        if "target_words" not in fixed:  # a request's own asked length (a batch fixes its own)
            fixed = {**fixed, "target_words": int(getattr(asked, "target_words", 0) or 0)}
        return GenerationSettings(max_new_tokens=asked.max_new_tokens, seed=seed, form=form, genre=genre,
                                  stop=tuple(asked.stop), system=chat.system, history=chat.history, lead=chat.lead,
                                  logit_bias=bias, banned_phrases=tuple(getattr(asked, "banned_phrases", ()) or ()),
                                  **sampling, **fixed)

    def plan(self, request: Any, controls: dict[str, list[str]], chat: Chat | None = None,
             vocab_size: int = 0, words: WordIds | None = None) -> Plan:
        """The request's seeds, its settings (first seed) and its ``(prompt, seed)`` rows.

        Raises:
            RequestError: If the model does not know the form or genre, or a ``logit_bias`` token id.
        """
        seeds = self.seeds(request)
        settings = self.settings(request, seeds[0], controls, chat=chat, vocab_size=vocab_size, words=words)
        return Plan(seeds, settings, [(request.prompt, s) for s in seeds])


def word_biases(word_bias: dict[str, float], words: WordIds | None) -> dict[int, float]:
    """``word_bias`` as token ids with their biases (see :func:`models.params.word_bias_field`).

    Raises:
        RequestError: Naming the word the model's tokenizer cannot write, or when no tokenizer is given.
    """
    out: dict[int, float] = {}
    for word, bias in word_bias.items():
        ids = words(word) if words is not None else []
        if not ids:
            raise RequestError("word_bias", f"'{word}' cannot be turned into this model's tokens")
        out.update(dict.fromkeys(ids, float(bias)))
    return out
