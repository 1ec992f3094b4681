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
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field
from pydantic.dataclasses import dataclass as settings_dataclass

from core.validation import STRICT
from models.presets import (
    MAX_STOP_CHARS,
    MAX_STOPS,
    REPETITION_PENALTY_MAX,
    SAMPLING_FIELDS,
    TEMPERATURE_MAX,
    TOP_K_MAX,
    resolve_sampling,
)
from serving.config import Defaults, Limits, ServingConfig
from serving.schemas import MAX_SEED, GenerateRequest, PresetName, request_model

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


class Asked(Protocol):
    """What a writer asks for, as the planner reads it (a :class:`GenerateRequest` or a :class:`BatchGeneration`)."""

    max_new_tokens: int
    preset: str | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    min_p: float | None
    repetition_penalty: float | None
    stop: Any  # a list (request) or a tuple (batch) of strings


@settings_dataclass(frozen=True, config=STRICT)
class BatchGeneration:
    """Generation settings of a batch inference run (the inference profile's ``generation``).

    The sampling fields left out (None) come from the ``preset`` when one is named, else from the code's
    serving defaults (:class:`serving.config.Defaults`), as for an HTTP request.

    Attributes:
        max_new_tokens: Upper bound on generated tokens per prompt (1–4096).
        preset: Named sampling settings (steady, balanced, wild; see :mod:`models.presets`).
        temperature: Sampling temperature (> 0).
        top_k: Sample from the k most likely tokens (0 = all).
        top_p: Nucleus sampling mass in (0, 1].
        min_p: Drop tokens below min_p times the most likely one (0 = off).
        repetition_penalty: Penalty on tokens already written (1 = none).
        stop: Up to 4 strings; a text ends before the first one written.
        seed: The default seed; a JSONL row's own ``seed`` wins.
        trim_to_sentence: Cut each text after its last complete sentence.
        target_words: Asked length in words (0 = the model's choice; instruction-layout families only).
        num_beams: Beam search width (1 samples; > 1 runs deterministic beam search).
    """

    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 160
    preset: PresetName | None = None
    temperature: Annotated[float, Field(gt=0, le=TEMPERATURE_MAX)] | None = None
    top_k: Annotated[int, Field(ge=0, le=TOP_K_MAX)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    min_p: Annotated[float, Field(ge=0, lt=1)] | None = None
    repetition_penalty: Annotated[float, Field(ge=1, le=REPETITION_PENALTY_MAX)] | None = None
    stop: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)], ...],
                    Field(max_length=MAX_STOPS)] = ()
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    trim_to_sentence: bool = True
    target_words: Annotated[int, Field(ge=0, le=3000)] = 0
    num_beams: Annotated[int, Field(ge=1, le=16)] = 1

    def fixed(self) -> dict[str, Any]:
        """The settings a batch fixes beyond what a request can ask for."""
        return {"trim_to_sentence": self.trim_to_sentence, "target_words": self.target_words,
                "num_beams": self.num_beams}


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
        self.request_model: type[GenerateRequest] = request_model(self.limits, self.defaults)

    @classmethod
    def for_config(cls, config: ServingConfig) -> RequestPlanner:
        """The planner of a serving profile (its limits and defaults)."""
        return cls(config.limits, config.defaults)

    def request(self, **fields: Any) -> GenerateRequest:
        """A request checked against the profile's limits.

        Raises:
            pydantic.ValidationError: Naming each field that breaks a rule.
        """
        return self.request_model.model_validate(fields)

    def seeds(self, request: GenerateRequest) -> list[int]:
        """The drafts' seeds: ``seed, seed + 1, ...`` (a random first seed when the request has none)."""
        first = request.seed if request.seed is not None else random.randrange(0, 2**31)
        return [(first + i) % (MAX_SEED + 1) for i in range(request.num_drafts)]

    def settings(self, asked: Asked, seed: int, controls: dict[str, list[str]], *, form: str | None = None,
                 genre: str | None = None, chat: Chat | None = None, **fixed: Any) -> GenerationSettings:
        """The model's generation settings for what was asked (form and genre checked against the model).

        Sampling: the profile's defaults, then the preset, then the fields ``asked`` sets.

        Args:
            asked: A request, or a batch's settings.
            seed: The seed of this draft.
            controls: The model's forms and genres (``WriterModel.controls()``).
            form: The form (default: ``asked.form``).
            genre: The genre (default: ``asked.genre``).
            chat: A conversation's system message, earlier turns and lead (chat-layout families read it).
            **fixed: Further settings the caller fixes (batch inference: ``trim_to_sentence``, ...).

        Raises:
            RequestError: If the model does not know the form or genre.
        """
        from models.contract import GenerationSettings

        form = form if form is not None else getattr(asked, "form", "story")
        genre = (genre if genre is not None else getattr(asked, "genre", "")) or ""
        check_controls(controls, form, genre)
        sampling = resolve_sampling(asdict(self.defaults), asked.preset,
                                    {k: getattr(asked, k) for k in SAMPLING_FIELDS})
        chat = chat or Chat()
        return GenerationSettings(max_new_tokens=asked.max_new_tokens, seed=seed, form=form, genre=genre,
                                  stop=tuple(asked.stop), system=chat.system, history=chat.history, lead=chat.lead,
                                  **sampling, **fixed)

    def plan(self, request: GenerateRequest, controls: dict[str, list[str]], chat: Chat | None = None) -> Plan:
        """The request's seeds, its settings (first seed) and its ``(prompt, seed)`` rows.

        Raises:
            RequestError: If the model does not know the form or genre.
        """
        seeds = self.seeds(request)
        settings = self.settings(request, seeds[0], controls, chat=chat)
        return Plan(seeds, settings, [(request.prompt, s) for s in seeds])
