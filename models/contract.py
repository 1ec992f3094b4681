"""The model contract every generator family implements, and the one shared sampler.

Evaluation, the MLflow wrapper, the BentoML service and the UI only use this interface:

- ``generate(prompts, settings) -> list[str]``
- ``stream(prompt, settings) -> Iterator[str]`` (text pieces as they are produced; joined, they equal
  what ``generate`` returns for the same prompt and settings)
- ``score(prompts, texts) -> list[(nll_nats, n_words)]`` (total NLL of each text given its prompt, and
  its whitespace word count, so per-word perplexity = exp(sum nll / sum words) compares across tokenizers)
- ``save(dir)`` / ``load(dir)``

Same seed and same settings give the same text.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from core.validation import from_known_fields
from models.manifest import MANIFEST, read_manifest  # part of the contract; importers may take them from here
from models.presets import (
    DEFAULT_MIN_P,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    MAX_STOP_CHARS,
    MAX_STOPS,
    REPETITION_PENALTY_MAX,
    TEMPERATURE_MAX,
    TOP_K_MAX,
    resolve_sampling,
)

CHAT_ROLES = ("user", "assistant")  # the roles of earlier turns in GenerationSettings.history


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings shared by every family.

    Attributes:
        max_new_tokens: Upper bound on generated tokens (1–4096).
        temperature: Softmax temperature (> 0; 0 is not allowed, use top_k=1 for greedy).
        top_k: Keep the k most likely tokens (0 = no limit).
        top_p: Nucleus sampling mass in (0, 1].
        repetition_penalty: ≥ 1; divides positive logits (multiplies negative ones) of tokens already
            generated, as in CTRL / ``transformers``.
        seed: Random seed; the same seed and settings give the same text.
        form: Form control value (e.g. story, fable, poem).
        genre: Genre control value; empty for none.
        num_beams: Beam search width; 1 samples, > 1 runs beam search (deterministic).
        trim_to_sentence: Cut the output after its last complete sentence.
        target_words: Asked length in words (0 = the model's choice); families with an instruction
            layout put it in the instruction, the others ignore it.
        min_p: Drop tokens whose probability is below ``min_p`` times the most likely token's (after
            the temperature; 0 = off). Adapts to the model's confidence where top-p does not.
        stop: Up to 4 strings; the text ends before the first one written (it is not included).
        system: A system message that replaces the model's own (families with a chat layout; the others
            ignore it).
        history: Earlier ``(role, text)`` turns of a conversation, ``role`` being ``user`` or
            ``assistant``, placed before the request (families with a chat layout; the others ignore it).
        lead: Text the piece already begins with: the model writes on from its last word, and only the
            new text is returned (families whose ``writes_on`` is true; the others ignore it).
    """

    max_new_tokens: int = 200
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int = 0
    form: str = "story"
    genre: str = ""
    num_beams: int = 1
    trim_to_sentence: bool = False
    target_words: int = 0
    min_p: float = DEFAULT_MIN_P
    stop: tuple[str, ...] = ()
    system: str = ""
    history: tuple[tuple[str, str], ...] = ()
    lead: str = ""

    def __post_init__(self) -> None:
        """Validates every field; raises ValueError naming the field."""
        if isinstance(self.stop, list):  # from JSON or YAML
            object.__setattr__(self, "stop", tuple(self.stop))
        if isinstance(self.history, list):
            object.__setattr__(self, "history", tuple(tuple(turn) if isinstance(turn, list) else turn
                                                      for turn in self.history))
        checks = [
            ("max_new_tokens", isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= 4096,
             "an integer from 1 to 4096"),
            ("temperature", isinstance(self.temperature, int | float) and 0 < self.temperature <= TEMPERATURE_MAX,
             f"a number in (0, {TEMPERATURE_MAX:g}]"),
            ("top_k", isinstance(self.top_k, int) and 0 <= self.top_k <= TOP_K_MAX,
             f"an integer from 0 to {TOP_K_MAX}"),
            ("top_p", isinstance(self.top_p, int | float) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("repetition_penalty",
             isinstance(self.repetition_penalty, int | float)
             and 1 <= self.repetition_penalty <= REPETITION_PENALTY_MAX,
             f"a number in [1, {REPETITION_PENALTY_MAX:g}]"),
            ("seed", isinstance(self.seed, int) and 0 <= self.seed < 2**63, "an integer ≥ 0"),
            ("num_beams", isinstance(self.num_beams, int) and 1 <= self.num_beams <= 16, "an integer from 1 to 16"),
            ("target_words", isinstance(self.target_words, int) and 0 <= self.target_words <= 3000,
             "an integer from 0 to 3000"),
            ("form", isinstance(self.form, str) and self.form.strip() != "", "a non-empty string"),
            ("genre", isinstance(self.genre, str), "a string"),
            ("min_p", isinstance(self.min_p, int | float) and 0 <= self.min_p < 1, "a number in [0, 1)"),
            ("stop", isinstance(self.stop, tuple) and len(self.stop) <= MAX_STOPS
             and all(isinstance(x, str) and 0 < len(x) <= MAX_STOP_CHARS for x in self.stop),
             f"up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters"),
            ("system", isinstance(self.system, str), "a string"),
            ("lead", isinstance(self.lead, str), "a string"),
            ("history", isinstance(self.history, tuple) and all(
                isinstance(t, tuple) and len(t) == 2 and t[0] in CHAT_ROLES and isinstance(t[1], str)
                for t in self.history), f"a list of (role, text) pairs with role in {CHAT_ROLES}"),
        ]
        for name, ok, want in checks:
            if not ok or isinstance(getattr(self, name), bool):  # bool is an int to isinstance
                raise ValueError(f"GenerationSettings.{name} must be {want}, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> GenerationSettings:
        """A copy with some fields changed (validated)."""
        return GenerationSettings(**{**asdict(self), **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationSettings:
        """Builds settings from a dict, rejecting unknown keys by name.

        A ``preset`` key (see :mod:`models.presets`) supplies the sampling values the dict does not set.
        """
        data = dict(data)
        preset = data.pop("preset", None)
        if preset:  # the same merge as the API's: defaults, then the preset, then what the dict sets
            defaults = {f.name: f.default for f in fields(cls)}
            data = {**data, **resolve_sampling(defaults, preset, data)}
        return from_known_fields(cls, data, "generation setting")


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """Penalises tokens in ``previous`` (``(B, T)`` ids) in ``logits`` (``(B, V)``), CTRL-style."""
    if previous is None or previous.numel() == 0 or penalty == 1.0:
        return logits
    picked = torch.gather(logits, 1, previous)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(1, previous, picked)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float, min_p: float = 0.0) -> torch.Tensor:
    """Top-k, then min-p, then nucleus filtering of ``(B, V)`` logits; removed entries become -inf.

    Min-p keeps the tokens whose probability is at least ``min_p`` times the row's most likely token's.
    """
    if min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        remove = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_next(logits: torch.Tensor, settings: GenerationSettings,
                generator: torch.Generator | Sequence[torch.Generator],
                previous: torch.Tensor | None = None) -> torch.Tensor:
    """The shared sampler: repetition penalty, temperature, top-k, min-p, top-p, then one draw per row.

    Each row draws from its own generator (inverse-CDF sampling with one uniform number per row), so a
    row's text does not depend on the other rows of the batch, and the filtering runs batched.

    Args:
        logits: ``(B, V)`` next-token logits.
        settings: Sampling settings.
        generator: One seeded generator per row (a single generator serves a single row).
        previous: ``(B, T)`` ids generated so far (for the repetition penalty).

    Returns:
        ``(B,)`` sampled token ids.
    """
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
    if len(gens) != logits.size(0):
        raise ValueError(f"sample_next needs one generator per row: {len(gens)} for {logits.size(0)} rows")
    logits = apply_repetition_penalty(logits.float(), previous, settings.repetition_penalty)
    logits = filter_logits(logits / settings.temperature, settings.top_k, settings.top_p, settings.min_p)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)  # (B, V)
    u = torch.stack([torch.rand((), generator=g) for g in gens]).unsqueeze(1) * cdf[:, -1:]  # (B, 1)
    return (cdf < u).sum(dim=-1).clamp(max=logits.size(-1) - 1)


SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Cuts text after its last complete sentence; returns it unchanged if it has none."""
    ends = list(SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    found = [i for i in (text.find(x) for x in stop) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def finish_text(text: str, settings: GenerationSettings) -> str:
    """A generation's final text: cut before the first stop string, then (if asked) after the last sentence."""
    text, _ = cut_at_stop(text, settings.stop)
    return trim_to_sentence(text) if settings.trim_to_sentence else text


def _held_for_stop(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could begin a stop string (held back while streaming)."""
    longest = 0
    for x in stop:
        for n in range(min(len(x) - 1, len(text)), longest, -1):
            if text.endswith(x[:n]):
                longest = n
                break
    return longest


CONFIRMED_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


def stable_prefix(text: str, trim: bool) -> str:
    """The part of partially decoded text that is final and can be emitted.

    A trailing half UTF-8 character (decoded as U+FFFD) is held back; with ``trim``, so is everything
    after the last sentence end that is already followed by whitespace (a "." at the very end may still
    turn out to be "...", or be followed by a closing quote).
    """
    text = text.rstrip("\ufffd")
    if not trim:
        return text
    ends = list(CONFIRMED_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else ""


def stream_text(token_ids: Iterable[int], decode: Callable[[list[int]], str], trim: bool,
                stop: Sequence[str] = ()) -> Iterator[str]:
    """Turns generated token ids into text pieces that join to the finished text (:func:`finish_text`).

    Every family streams through this, so ``"".join(stream(...)) == generate(...)[0]`` holds by
    construction: each step decodes all ids so far and emits only the new, stable part. Text that could
    be the start of a stop string is held back; once a stop string is written, generation ends there
    (no more ids are drawn).

    Args:
        token_ids: Generated ids as they arrive (end token excluded).
        decode: Decodes a full id list to text.
        trim: Whether the final text is cut after its last complete sentence.
        stop: Stop strings (the text ends before the first one).

    Yields:
        Text pieces.
    """
    sent = ""
    ids: list[int] = []
    final = ""
    for token in token_ids:
        ids.append(int(token))
        text = decode(ids)
        text, stopped = cut_at_stop(text, stop)
        if stopped:
            final = text
            break
        ready = stable_prefix(text, trim)
        ready = ready[: len(ready) - _held_for_stop(ready, stop)]
        if len(ready) > len(sent):
            yield ready[len(sent):]
            sent = ready
    else:
        final, _ = cut_at_stop(decode(ids), stop)
    final = trim_to_sentence(final) if trim else final
    if len(final) > len(sent):
        yield final[len(sent):]


def word_count(text: str) -> int:
    """Whitespace words (the unit of per-word perplexity)."""
    return len(text.split())


def words_scored(text: str, ids: Sequence[int], limit: int, decode: Callable[[list[int]], str]) -> int:
    """Whitespace words of the part of ``text`` that its ids cover, when they were cut to ``limit`` tokens.

    A piece longer than a model's window is scored only as far as it fits; per-word perplexity must
    then divide by the words of that part, not of the whole text.
    """
    return word_count(decode(list(ids))) if len(ids) >= limit else word_count(text)


@dataclass(frozen=True)
class TokenChance:
    """One written token and how likely the sampler found it.

    Attributes:
        text: The token's text.
        p: Its probability under the sampling settings (temperature, repetition penalty, top-k/top-p/min-p).
        alternatives: The most likely tokens at that position (the written one included), as ``(text, p)``.
    """

    text: str
    p: float
    alternatives: tuple[tuple[str, float], ...]


def token_chances(logits: torch.Tensor, ids: Sequence[int], settings: GenerationSettings,
                  decode: Callable[[list[int]], str], top: int = 5) -> list[TokenChance]:
    """Each written token's probability under the sampler, with the top alternatives, from teacher-forced logits.

    A token's text is what it adds to the decoded text (a token holding part of a character adds nothing;
    the one that completes it adds the character).

    Args:
        logits: ``(T, V)`` logits; row ``t`` predicts ``ids[t]``.
        ids: The written token ids.
        settings: The sampling settings the text was written with (the same transforms as :func:`sample_next`).
        decode: Decodes an id list to text.
        top: Alternatives per position.
    """
    logits = logits[: len(ids)].float()
    previous = torch.tensor([list(ids)], dtype=torch.long)
    out = []
    shown = ""  # the text of the tokens so far: a token's text is what it adds (whole characters only)
    for t, token in enumerate(ids):
        text = decode(list(ids[: t + 1])).rstrip("\ufffd")
        piece = text[len(shown):] if text.startswith(shown) else decode([int(token)])
        shown = text if text.startswith(shown) else shown + piece
        row = apply_repetition_penalty(logits[t: t + 1], previous[:, :t] if t else None, settings.repetition_penalty)
        row = filter_logits(row / settings.temperature, settings.top_k, settings.top_p, settings.min_p)
        probs = torch.softmax(row, dim=-1)[0]
        best = torch.topk(probs, min(top, probs.numel()))
        alternatives = tuple((decode([int(i)]), float(p)) for p, i in zip(best.values, best.indices,
                                                                                     strict=True) if p > 0)
        out.append(TokenChance(piece, float(probs[token]), alternatives))
    return out


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


def write_manifest(directory: Path, family: str, extra: dict[str, Any] | None = None) -> None:
    """Writes ``manifest.json`` (family, library versions and any extra fields)."""
    import tokenizers
    import transformers

    data = {"family": family, "format": 1, "torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, **(extra or {})}
    (directory / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))


FAMILIES: dict[str, str] = {
    "seq2seq": "models.seq2seq:Seq2SeqWriter",
    "transformer": "models.transformer:TransformerWriter",
    "gan": "models.gan:GanWriter",
}


def load_model(directory: Path) -> WriterModel:
    """Loads any family's saved model directory (dispatching on the manifest's ``family``)."""
    import importlib

    family = read_manifest(directory)["family"]
    if family not in FAMILIES:
        raise ValueError(f"{directory}: unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name).load(Path(directory))


def beam_search(step_fn: Any, state: Any, bos_id: int, eos_id: int, num_beams: int, max_new_tokens: int,
                length_penalty: float = 0.0) -> tuple[list[int], float]:
    """Beam search over a step function; returns the best finished (or longest) hypothesis and its score.

    Args:
        step_fn: ``step_fn(tokens (K,), state) -> (log_probs (K, V), state)`` for K live beams; the state
            must support ``state_select(state, beam_indices)`` via the ``select`` attribute of step_fn,
            i.e. ``step_fn.select(state, idx)`` reorders the state to the given beam indices.
        state: The initial decoder state for one beam.
        bos_id: Start token.
        eos_id: End token.
        num_beams: Beam width.
        max_new_tokens: Maximum tokens to generate (the end token not counted).
        length_penalty: Scores are ``sum log p / len ** length_penalty`` (0 = plain sum).

    Returns:
        ``(token ids without bos/eos, score)``.
    """
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    tokens = torch.tensor([bos_id])
    finished: list[tuple[list[int], float]] = []

    def norm(seq: list[int], total: float) -> float:
        return total / max(1, len(seq) + 1) ** length_penalty

    for _ in range(max_new_tokens):
        log_probs, state = step_fn(tokens, state)  # (K, V)
        totals = torch.tensor([b[1] for b in beams]).unsqueeze(1) + log_probs.float()
        flat = totals.view(-1)
        top = torch.topk(flat, min(flat.numel(), 2 * num_beams))
        vocab = log_probs.size(-1)
        candidates: list[tuple[list[int], float, int]] = []
        for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            beam, token = divmod(index, vocab)
            seq = beams[beam][0]
            if token == eos_id:
                finished.append((seq, score))
            else:
                candidates.append((seq + [token], score, beam))
            if len(candidates) == num_beams:
                break
        best_finished = max((norm(s, t) for s, t in finished), default=float("-inf"))
        best_live = max((norm(c[0], c[1]) for c in candidates), default=float("-inf"))
        if not candidates or (len(finished) >= num_beams and best_finished >= best_live):
            break
        beams = [(c[0], c[1]) for c in candidates]
        state = step_fn.select(state, torch.tensor([c[2] for c in candidates]))
        tokens = torch.tensor([c[0][-1] for c in candidates])
    pool = finished or beams
    best = max(pool, key=lambda b: norm(b[0], b[1]))
    return best[0], norm(best[0], best[1])
