"""How a Transformer-family writer lays out its prompts, whatever runs the network (PyTorch or llama.cpp).

Two layouts; the labels of everything before the piece are ``-100``, so the loss (and the families'
``score``) covers the piece and its end token only: the NLL of the story given its prompt.

- **chat** (a base whose tokenizer has a chat template, ``chat_template: auto``): the prompt, form and
  genre become the user's instruction, the piece the assistant's answer, ended by the template's
  end-of-turn token;
- **control tokens** (from scratch, or a base without a chat template): ``<form:…> <genre:…> prompt
  <sep> piece <eos>``.

:class:`PromptLayout` holds the tokenizer and config and turns requests into token ids; the runtimes
(:class:`models.transformer.TransformerWriter` on PyTorch, :class:`models.llama_cpp.LlamaCppWriter` on
llama.cpp) build on it, so both read exactly the same ids for the same request.

**A fable ends with its moral.** Asked for a fable, the small bases often tell it and stop without one (the
untuned SmolLM2 in 61 % of the open prompts' fables). When a fresh fable (no ``lead``) ends on a full sentence
and neither of its last two sentences states a moral, the writer is asked for one more line, with the fable
as the beginning of its answer and ``Moral:`` after it (:meth:`PromptLayout.with_morals`; at most
:data:`MORAL_TOKENS` more tokens, same seed, ended by a line break and kept only when it ends on a full
sentence). Stories, poems and Continue turns are left as written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from models.banning import Rewindable, require_sampling, without_phrases
from models.configs import TransformerConfig
from models.contract import GenerationSettings, WriterModel
from models.text import ends_complete, finish_text, states_moral, stream_text, words_scored
from models.tokenizer import control_ids, control_values, decode_ids, encode_text

log = logging.getLogger(__name__)

MORAL_LEAD = "Moral:"
MORAL_TOKENS = 40  # the most a fable's moral line adds to the piece


def read_saved(directory: Path) -> tuple[TransformerConfig, Any, dict[str, Any]]:
    """The config, tokenizer and manifest of a saved Transformer-family model directory (any runtime)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    config = TransformerConfig(**json.loads((directory / "config.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
    manifest = json.loads((directory / "manifest.json").read_text())
    return config, tokenizer, manifest

IGNORE = -100  # label of positions the loss skips (transformers' convention)
FORM_HINTS = {"poem": "Write it in lines of verse.", "fable": "Tell it briefly and end with its moral.",
              "story": "Write it in paragraphs."}


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def turn_end_ids(tokenizer: Any) -> list[int]:
    """Ids that end the assistant's turn in the chat template (its end-of-turn token first, then ``eos``).

    Found by rendering a one-word answer and reading the special token that follows it.
    """
    marker = "Zq9x"
    turn = [{"role": "user", "content": "a"}, {"role": "assistant", "content": marker}]
    rendered = tokenizer.apply_chat_template(turn, tokenize=False)
    tail = rendered[rendered.rfind(marker) + len(marker):]
    specials = set(tokenizer.all_special_ids)
    ids = [i for i in encode_text(tokenizer, tail) if i in specials][:1]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


TOKENS_PER_WORD = 1.35  # English prose under a byte-level BPE (SmolLM2: 1.3-1.4); the wind-down's length in tokens
FRAME_TOKENS = 64  # the chat template's and the instruction's own tokens around a prompt (SmolLM2: ~40)


class PromptLayout(WriterModel):
    """The prompt layout of a Transformer-family writer (tokenizer + config); a runtime adds the network.

    Args:
        tokenizer: The model's own tokenizer.
        config: The model's settings.
        metadata: The saved manifest (or what a new model will write into it).
    """

    family: ClassVar[str] = "transformer"
    writes_on: ClassVar[bool] = True  # a causal LM continues any text placed after its prefix

    def __init__(self, tokenizer: Any, config: TransformerConfig, metadata: dict[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.metadata = metadata or {}
        self.chat = bool(config.base_model) and config.chat_template == "auto" and has_chat_template(tokenizer)
        self.stop_ids = turn_end_ids(tokenizer) if self.chat else [int(tokenizer.eos_token_id)]
        if tokenizer.pad_token_id is None:  # no new token: padded positions are masked and never scored
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(self.stop_ids[-1])
        self._warned: set[str] = set()

    @property
    def sep_id(self) -> int:
        """Id of the prompt/piece separator (control-token layout)."""
        return int(self.tokenizer.sep_token_id)

    @property
    def eos_id(self) -> int:
        """Id of the token that ends a piece (the chat template's end of turn, or ``eos``)."""
        return self.stop_ids[0]

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return int(self.tokenizer.pad_token_id)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def controls(self) -> dict[str, list[str]]:
        """Forms and genres: the control tokens, or (chat layout) the ones the model was trained on."""
        if self.chat:
            return {"form": sorted(self.config.forms) or sorted(FORM_HINTS),
                    "genre": sorted(g for g in self.config.genres if g)}
        return {kind: control_values(self.tokenizer, kind) for kind in ("form", "genre")}

    # --- layout ----------------------------------------------------------------------------------------
    def instruction(self, prompt: str, form: str, genre: str, target_words: int = 0, system: str = "",
                    history: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
        """The chat messages that ask for a piece: system message, earlier turns, then the user's instruction.

        ``target_words`` > 0 asks for about that many words; ``system`` (non-empty) replaces the configured
        system prompt; ``history`` holds earlier ``(role, text)`` turns of a conversation.
        """
        kind = f"{genre} {form}" if genre and genre != "none" else form
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        hint = " ".join(h for h in (FORM_HINTS.get(form, ""),
                                    f"Use about {target_words} words." if target_words > 0 else "") if h)
        user = f"Write {article} {kind} for this prompt: {prompt.strip()}" + (f"\n{hint}" if hint else "")
        system = system or self.config.system_prompt
        head = [{"role": "system", "content": system}] if system else []
        turns = [{"role": role, "content": text} for role, text in history]
        return [*head, *turns, {"role": "user", "content": user}]

    def encode_prefix(self, prompt: str, form: str, genre: str, target_words: int = 0, system: str = "",
                      history: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Everything before the piece: the chat instruction, or ``<form:…> <genre:…> prompt <sep>``.

        ``target_words``, ``system`` and ``history`` (chat layout only; see :meth:`instruction`) ask for a
        length, replace the system prompt and add earlier turns. The oldest turns are dropped (with a
        warning the first time) until the prefix takes at most half the context.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if not isinstance(form, str) or not form.strip():
            raise ValueError("form must be a non-empty string")
        ids = encode_text(self.tokenizer, prompt)
        if len(ids) > self.config.max_prompt_tokens:
            self._warn_once("prompt", "prompt of %d tokens cut to max_prompt_tokens=%d", len(ids),
                            self.config.max_prompt_tokens)
            ids = ids[: self.config.max_prompt_tokens]
            prompt = decode_ids(self.tokenizer, ids)
        if self.chat:
            history = list(history)
            while True:
                text = self.tokenizer.apply_chat_template(
                    self.instruction(prompt, form, genre, target_words, system, history), tokenize=False,
                    add_generation_prompt=True)
                ids = encode_text(self.tokenizer, text)
                if not history or len(ids) <= self.config.context // 2:
                    return ids
                self._warn_once("history", "earlier turns dropped so that the prompt takes at most half of the "
                                "context of %d tokens", self.config.context)
                history = history[1:]
        return control_ids(self.tokenizer, form, genre) + ids + [self.sep_id]

    def encode_example(self, prompt: str, text: str, form: str, genre: str) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one training pair; prefix labels are ``-100``.

        The piece is cut so that the whole sequence fits the context (with a warning the first time).
        """
        ids, labels, _ = self.encode_scored(prompt, text, form, genre)
        return ids, labels

    def encode_scored(self, prompt: str, text: str, form: str, genre: str, max_piece_tokens: int = 0,
                      target_words: int = 0) -> tuple[list[int], list[int], int]:
        """Like :meth:`encode_example`, plus the words of the part of the piece that fits (scored).

        ``max_piece_tokens`` (> 0) scores only the piece's first tokens (a shorter window, e.g. for
        prompt ranking); the end token then is not scored. ``target_words`` puts a length request in
        the instruction (training shows half the examples their own length, so both kinds of request work).
        """
        prefix = self.encode_prefix(prompt, form, genre, target_words)
        piece = encode_text(self.tokenizer, text)
        room = self.config.context - len(prefix) - 1
        if len(piece) > room:
            self._warn_once("piece", "piece of %d tokens cut to %d to fit the context of %d", len(piece), room,
                            self.config.context)
        limit = min(room, max_piece_tokens) if max_piece_tokens > 0 else room
        end = [self.eos_id] if len(piece) <= limit else []
        piece = piece[:limit]
        words = words_scored(text, piece, limit, lambda kept: decode_ids(self.tokenizer, kept))
        return prefix + piece + end, [IGNORE] * len(prefix) + piece + end, words

    def prompt_window(self) -> int:
        """``max_prompt_tokens``: the prompt's share of the context (the instruction around it comes on top)."""
        return self.config.max_prompt_tokens

    def lead_ids(self, lead: str) -> list[int]:
        """The ids of a piece's given beginning (its end, at most ``lead_window()`` tokens; none for '')."""
        if not lead.strip():
            return []
        ids = encode_text(self.tokenizer, lead.rstrip())
        return ids[-self.lead_window():]

    def lead_window(self) -> int:
        """Tokens of a given beginning (``GenerationSettings.lead``) the model reads.

        The context less the prompt's window, :data:`FRAME_TOKENS` for the instruction's frame, and a quarter
        of the context kept for the new text: 2,144 of a 3,072-token serving context (a Continue reads that
        much of a manuscript's end), 320 of a 640-token training context.
        """
        return max(1, self.config.context - self.config.max_prompt_tokens - FRAME_TOKENS - self.config.context // 4)

    def _text(self, ids: list[int], settings: GenerationSettings) -> str:
        text = decode_ids(self.tokenizer, ids)
        return finish_text(text, settings)

    def request_prefix(self, prompt: str, settings: GenerationSettings, form: str | None = None,
                       genre: str | None = None) -> list[int]:
        """Every id before the first sampled token: the request's prefix, then its lead (a given beginning)."""
        return self.encode_prefix(prompt, settings.form if form is None else form,
                                  settings.genre if genre is None else genre, settings.target_words,
                                  settings.system, settings.history) + self.lead_ids(settings.lead)

    def new_token_budget(self, width: int, settings: GenerationSettings) -> int:
        """How many tokens may follow a prefix of ``width`` tokens: ``max_new_tokens`` cut to fit the context.

        A cut is logged once.
        """
        budget = max(0, min(settings.max_new_tokens, self.config.context - width))
        if budget < settings.max_new_tokens:
            self._warn_once("max_new", "max_new_tokens %d cut to %d so that prompt + piece fit the context of %d",
                            settings.max_new_tokens, budget, self.config.context)
        return budget

    def phrase_free(self, sampler: Rewindable, max_new: int, settings: GenerationSettings) -> Iterator[int]:
        """Sampled ids in which none of ``settings.banned_phrases`` appears (:func:`models.banning.without_phrases`).

        Raises:
            ValueError: With beam search, which has no single sequence to go back on.
        """
        require_sampling(settings.num_beams)
        return without_phrases(sampler, lambda ids: decode_ids(self.tokenizer, ids), settings.banned_phrases,
                               max_new, self.stop_ids)

    def end_boost(self, settings: GenerationSettings, written: int) -> float:
        """What the end token's logit gains after ``written`` tokens: ``wind_down`` per token past the asked length.

        0 when ``wind_down`` or ``target_words`` is 0 (nothing asked) or the piece is not past the length yet.
        """
        if settings.wind_down <= 0 or settings.target_words <= 0:
            return 0.0
        return settings.wind_down * max(0, written - round(settings.target_words * TOKENS_PER_WORD))

    # --- a fable's moral -------------------------------------------------------------------------------
    def moral_missing(self, form: str, text: str, settings: GenerationSettings) -> bool:
        """Whether ``text``, a fresh fable that ends on a full sentence, lacks a moral in its last two sentences."""
        return (form == "fable" and not settings.lead and bool(text.strip()) and ends_complete(text)
                and not states_moral(text))

    def moral_for(self, prompt: str, text: str, settings: GenerationSettings) -> str:
        """The moral line for the fable ``text`` (a blank line, then ``Moral: …``); '' when none came out whole."""
        asked = settings.replace(lead=f"{text.rstrip()}\n\n{MORAL_LEAD}", max_new_tokens=MORAL_TOKENS, stop=("\n",),
                                 trim_to_sentence=True, target_words=0)
        line = self.generate([prompt], asked)[0].strip()
        return f"\n\n{MORAL_LEAD} {line}" if line and ends_complete(line) else ""

    def stream_ids(self, prompt: str, tokens: Iterable[int], settings: GenerationSettings) -> Iterator[str]:
        """The text of sampled ``tokens`` as it comes (stop strings, trimming), then a fable's moral if it lacks one."""
        written = ""
        for piece in stream_text(tokens, lambda ids: decode_ids(self.tokenizer, ids), settings.trim_to_sentence,
                                 settings.stop):
            written += piece
            yield piece
        if self.moral_missing(settings.form, written, settings):
            yield self.moral_for(prompt, written, settings)

    def with_morals(self, requests: Sequence[tuple[str, str, str, int]], texts: Sequence[str],
                    settings: GenerationSettings) -> list[str]:
        """``texts`` with a moral appended to each fable that lacks one (see the module docstring).

        Args:
            requests: ``(prompt, form, genre, seed)`` of each text.
            texts: The texts as written.
            settings: The settings they were written with (form, genre and seed come from ``requests``).
        """
        return [text + self.moral_for(prompt, text, settings.replace(form=form, genre=genre, seed=seed))
                if self.moral_missing(form, text, settings) else text
                for (prompt, form, genre, seed), text in zip(requests, texts, strict=True)]

    def teacher_ids(self, prompt: str, text: str, settings: GenerationSettings) -> tuple[list[int], list[int]]:
        """The request's prefix and the ids of ``text`` after it, as far as they fit the context (teacher forcing)."""
        prefix = self.request_prefix(prompt, settings)
        return prefix, encode_text(self.tokenizer, text)[: max(0, self.config.context - len(prefix))]
