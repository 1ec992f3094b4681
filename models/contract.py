"""The model contract every generator family implements, and the settings one generation takes.

Evaluation, the MLflow wrapper, the BentoML service and the UI only use this interface:

- ``generate(prompts, settings) -> list[str]``
- ``stream(prompt, settings) -> Iterator[str]`` (text pieces as they are produced; joined, they equal
  what ``generate`` returns for the same prompt and settings)
- ``score(prompts, texts) -> list[(nll_nats, n_words)]`` (total NLL of each text given its prompt, and
  its whitespace word count, so per-word perplexity = exp(sum nll / sum words) compares across tokenizers)
- ``save(dir)`` / ``load(dir)``

Same seed and same settings give the same text. The sampler is :mod:`models.sampling`, the text handling
:mod:`models.text`, the family registry :mod:`models.families`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field

from models.params import SamplingParams
from models.presets import resolve_sampling
from models.sampling import TokenChance, token_chances

CHAT_ROLES = ("user", "assistant")  # the roles of earlier turns in GenerationSettings.history
ChatTurn = tuple[Literal["user", "assistant"], str]


class GenerationSettings(SamplingParams):
    """One generation's settings: how to sample (every :class:`SamplingParams` field) and what around.

    Attributes:
        form: Form control value (e.g. story, fable, poem).
        genre: Genre control value; empty for none.
        system: A system message that replaces the model's own (families with a chat layout; the others
            ignore it).
        history: Earlier ``(role, text)`` turns of a conversation, ``role`` being ``user`` or
            ``assistant``, placed before the request (families with a chat layout; the others ignore it).
        lead: Text the piece already begins with: the model writes on from its last word, and only the
            new text is returned (families whose ``writes_on`` is true; the others ignore it).
    """

    form: str = Field("story", pattern=r"\S", description="Form control value (story, fable, poem).")
    genre: str = Field("", description="Genre control value; empty for none.")
    system: str = Field("", description="A system message replacing the model's own (chat layouts).")
    history: tuple[Annotated[ChatTurn, Field(strict=False)], ...] = Field(
        (), strict=False, description="Earlier (role, text) turns (chat layouts).")
    lead: str = Field("", description="Text the piece already begins with (families that write on).")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Builds settings from a dict, rejecting unknown keys by name.

        A ``preset`` key (see :mod:`models.presets`) supplies the sampling values the dict does not set.

        Raises:
            ValueError: For an unknown key or preset (named), or a value out of its bounds.
        """
        data = dict(data)
        preset = data.pop("preset", None)
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown generation setting(s) {unknown}; known: {sorted(cls.model_fields)}")
        if preset:  # the same merge as the API's: defaults, then the preset, then what the dict sets
            defaults = {name: info.default for name, info in cls.model_fields.items()}
            data = {**data, **resolve_sampling(defaults, preset, data)}
        return cls.model_validate(data)


class WriterModel(ABC):
    """The contract of a generator family (see the module docstring)."""

    family: ClassVar[str] = ""
    writes_on: ClassVar[bool] = False  # whether GenerationSettings.lead is honoured (a text is continued)

    @abstractmethod
    def generate(self, prompts: Sequence[str], settings: GenerationSettings | None = None) -> list[str]:
        """Generates one piece per prompt."""

    @abstractmethod
    def stream(self, prompt: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yields text pieces of one generation as they are produced."""

    @abstractmethod
    def score(self, prompts: Sequence[str], texts: Sequence[str]) -> list[tuple[float, int]]:
        """Total NLL (nats) of each text given its prompt, and the words scored.

        A text longer than the model's window is scored as far as it fits, and the word count is that
        part's (see :func:`words_scored`).
        """

    @property
    def vocab_size(self) -> int:
        """Token ids the model can write (``logit_bias`` ids must be below it); 0 when it cannot tell."""
        tokenizer = getattr(self, "tokenizer", None)
        return len(tokenizer) if tokenizer is not None else 0

    def generate_rows(self, rows: Sequence[tuple[str, int]], settings: GenerationSettings | None = None) -> list[str]:
        """One text per ``(prompt, seed)`` row, each as ``generate([prompt], settings with that seed)`` gives it.

        A row's text depends only on its prompt, seed and settings, never on the other rows, so a server
        may batch requests together without changing what a seed writes. This default runs the rows one
        by one; a family whose sampler has one generator per row batches them.
        """
        settings = settings or GenerationSettings()
        return [self.generate([prompt], settings.replace(seed=seed))[0] for prompt, seed in rows]

    def generate_requests(self, requests: Sequence[tuple[str, str, str]],
                          settings: GenerationSettings | None = None) -> list[str]:
        """One text per ``(prompt, form, genre)`` request, as ``generate`` gives it with that form and genre.

        This default batches the requests that share a form and genre; a family that can mix them in
        one batch does so.
        """
        settings = settings or GenerationSettings()
        out: dict[int, str] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (_, form, genre) in enumerate(requests):
            groups.setdefault((form, genre), []).append(i)
        for (form, genre), rows in groups.items():
            texts = self.generate([requests[i][0] for i in rows], settings.replace(form=form, genre=genre))
            out.update(zip(rows, texts, strict=True))
        return [out[i] for i in range(len(requests))]

    def prompt_window(self) -> int:
        """How many tokens of a prompt the model reads (a longer prompt is cut); 0 when it has no fixed window."""
        return 0

    def teacher_logits(self, prompt: str, text: str, settings: GenerationSettings) -> tuple[torch.Tensor, list[int]]:
        """``(T, V)`` next-token logits for each token of ``text`` written for ``prompt``, and those token ids.

        Families that can read their own probabilities implement this (for :meth:`token_chances`).
        """
        raise NotImplementedError(f"the {self.family or type(self).__name__} family does not report token "
                                  "probabilities")

    @torch.inference_mode()
    def token_chances(self, prompt: str, text: str, settings: GenerationSettings | None = None,
                      top: int = 5) -> list[TokenChance]:
        """Each token of ``text`` (written for ``prompt``), its probability under ``settings``, the top alternatives.

        The text is read again with the model (teacher forcing), so the figures are what the sampler saw
        when it drew each token (for a text it wrote itself; an edited text gets the model's view of it).
        """
        settings = settings or GenerationSettings()
        if not text:
            return []
        logits, ids = self.teacher_logits(prompt, text, settings)
        return token_chances(logits, ids, settings, lambda kept: self.tokenizer.decode(kept), top)  # type: ignore[attr-defined]

    def word_token_ids(self, word: str) -> list[int]:
        """The first token of ``word`` in running text, under the model's own tokenizer (for ``word_bias``).

        One id per way the word appears: as written and capitalised, at a line's start and after a space
        (a leading token that is only a space is skipped). Empty when the tokenizer gives nothing.
        """
        ids: list[int] = []
        for form in dict.fromkeys((word, f" {word}", word[:1].upper() + word[1:], f" {word[:1].upper()}{word[1:]}")):
            tokens = self.tokenizer(form, add_special_tokens=False)["input_ids"]  # type: ignore[attr-defined]
            if len(tokens) > 1 and not self.tokenizer.decode(tokens[:1]).strip():  # type: ignore[attr-defined]
                tokens = tokens[1:]
            if tokens and tokens[0] not in ids:
                ids.append(int(tokens[0]))
        return ids

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's own tokenizer (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[attr-defined]

    def controls(self) -> dict[str, list[str]]:
        """The form and genre values the model has control tokens for (``{"form": [...], "genre": [...]}``)."""
        from models.tokenizer import control_values

        return {kind: control_values(self.tokenizer, kind) for kind in ("form", "genre")}  # type: ignore[attr-defined]

    @abstractmethod
    def save(self, directory: Path) -> Path:
        """Saves weights, config, tokenizer and manifest into ``directory``."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> WriterModel:
        """Restores a model saved with :meth:`save`."""
