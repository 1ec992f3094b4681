"""The Transformer family: a GPT-2 causal language model behind the model contract.

Two modes, one code path (:func:`build_transformer`):

- **from scratch** (``base_model: ""``): a small ``GPT2LMHeadModel`` (layers, width, heads and context
  length from the profile) on the project's shared byte-level BPE tokenizer, so its likelihoods compare
  token for token with the seq2seq and GAN families;
- **fine-tune** (``base_model:`` a local ``save_pretrained`` directory, or a hub id for users who are
  online): the checkpoint and *its own* tokenizer, to which the separator, padding and form/genre control
  tokens are added (embeddings resized). Comparisons with the other families then rest on per-word
  perplexity, which does not depend on the tokenizer.

Every example is laid out as ``<form:…> <genre:…> prompt <sep> piece <eos>``; the labels of the
control/prompt/separator positions are ``-100``, so the loss (and :meth:`TransformerWriter.score`)
covers the piece and its end token only: the NLL of the story given its prompt, like the other families.

Generation goes through ``model.generate`` (KV cache) with our :class:`GenerationSettings` mapped onto a
``GenerationConfig``; :meth:`TransformerWriter.stream` runs the same call in a thread with a streamer, so
streamed pieces join to exactly the text :meth:`TransformerWriter.generate` returns for the same seed.
``generate`` seeds the global torch RNG (as ``transformers`` requires); a per-model lock makes concurrent
callers take turns, so a seed always gives the same text.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from models.contract import (
    GenerationSettings,
    WriterModel,
    require_min,
    stream_text,
    trim_to_sentence,
    words_scored,
    write_manifest,
)
from models.tokenizer import (
    PAD,
    SEP,
    check_special_tokens,
    control_ids,
    decode_ids,
    encode_text,
    form_token,
    genre_token,
)

log = logging.getLogger(__name__)
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
IGNORE = -100  # label of positions the loss skips (transformers' convention)


@dataclass
class TransformerConfig:
    """Model settings (the profile's ``train_transformer`` ``model`` parameters).

    Attributes:
        base_model: Empty to train from scratch on the shared tokenizer; otherwise a local directory
            saved with ``save_pretrained`` or a hub id (needs network) to fine-tune.
        n_layer: Transformer blocks (from scratch only).
        n_embd: Model width (from scratch only).
        n_head: Attention heads; must divide ``n_embd`` (from scratch only).
        context: Context length in tokens (prompt + separator + piece + end); at most the base model's.
        dropout: Residual, embedding and attention dropout (from scratch only).
        max_prompt_tokens: Prompts are cut to this many tokens (control tokens not counted).
    """

    base_model: str = ""
    n_layer: int = 4
    n_embd: int = 192
    n_head: int = 4
    context: int = 512
    dropout: float = 0.1
    max_prompt_tokens: int = 96

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        require_min(self, ("n_layer", "n_embd", "n_head", "max_prompt_tokens"), 1, integer=True)
        if self.n_embd % self.n_head:
            raise ValueError(f"TransformerConfig.n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if not isinstance(self.context, int) or self.context < self.max_prompt_tokens + 8:
            raise ValueError(f"TransformerConfig.context must be an integer ≥ max_prompt_tokens + 8 "
                             f"({self.max_prompt_tokens + 8}), got {self.context!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.base_model, str):
            raise ValueError(f"TransformerConfig.base_model must be a string, got {self.base_model!r}")


class TransformerWriter(WriterModel):
    """The Transformer family behind the model contract (causal LM + tokenizer)."""

    family: ClassVar[str] = "transformer"

    def __init__(self, model: Any, tokenizer: Any, config: TransformerConfig,
                 metadata: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.metadata = metadata or {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    @property
    def sep_id(self) -> int:
        """Id of the prompt/piece separator."""
        return int(self.tokenizer.sep_token_id)

    @property
    def eos_id(self) -> int:
        """Id of the end token."""
        return int(self.tokenizer.eos_token_id)

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return int(self.tokenizer.pad_token_id)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # --- layout ----------------------------------------------------------------------------------------
    def encode_prefix(self, prompt: str, form: str, genre: str) -> list[int]:
        """``<form:…> <genre:…> prompt <sep>`` ids, the prompt cut to ``max_prompt_tokens``."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        ids = encode_text(self.tokenizer, prompt)
        if len(ids) > self.config.max_prompt_tokens:
            self._warn_once("prompt", "prompt of %d tokens cut to max_prompt_tokens=%d", len(ids),
                            self.config.max_prompt_tokens)
            ids = ids[: self.config.max_prompt_tokens]
        return control_ids(self.tokenizer, form, genre) + ids + [self.sep_id]

    def encode_example(self, prompt: str, text: str, form: str, genre: str) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one training pair; prefix labels are ``-100``.

        The piece is cut so that the whole sequence fits the context (with a warning the first time).
        """
        ids, labels, _ = self.encode_scored(prompt, text, form, genre)
        return ids, labels

    def encode_scored(self, prompt: str, text: str, form: str, genre: str) -> tuple[list[int], list[int], int]:
        """Like :meth:`encode_example`, plus the words of the part of the piece that fits (scored)."""
        prefix = self.encode_prefix(prompt, form, genre)
        piece = encode_text(self.tokenizer, text)
        room = self.config.context - len(prefix) - 1
        if len(piece) > room:
            self._warn_once("piece", "piece of %d tokens cut to %d to fit the context of %d", len(piece), room,
                            self.config.context)
            piece = piece[:room]
        words = words_scored(text, piece, room, lambda kept: decode_ids(self.tokenizer, kept))
        return prefix + piece + [self.eos_id], [IGNORE] * len(prefix) + piece + [self.eos_id], words

    # --- the contract ----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], settings: GenerationSettings | None = None) -> list[str]:
        """Generates one piece per prompt (batched, left-padded, through ``model.generate``)."""
        settings = settings or GenerationSettings()
        rows = self._generate_ids(list(prompts), settings)
        texts = [decode_ids(self.tokenizer, row) for row in rows]
        return [trim_to_sentence(t) if settings.trim_to_sentence else t for t in texts]

    def stream(self, prompt: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yields text as ``model.generate`` produces it; the pieces join to ``generate([prompt])[0]``."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1:  # beam search has no stable prefix until it ends
            yield self.generate([prompt], settings)[0]
            return
        streamer = _TokenStreamer(self.eos_id)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self._generate_ids([prompt], settings, streamer=streamer)
            except BaseException as exc:  # handed to the consumer, raised there
                failure.append(exc)
            finally:
                streamer.end()

        self.encode_prefix(prompt, settings.form, settings.genre)  # bad input raises here, not in the thread
        worker = threading.Thread(target=run, name="transformer-generate", daemon=True)
        worker.start()
        yield from stream_text(streamer, lambda ids: decode_ids(self.tokenizer, ids), settings.trim_to_sentence)
        worker.join()
        if failure:
            raise failure[0]

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], texts: Sequence[str], forms: Sequence[str] | None = None,
              genres: Sequence[str] | None = None, batch_size: int = 16) -> list[tuple[float, int]]:
        """Total NLL (nats, end token included) of each text given its prompt, and its word count."""
        forms = forms or ["story"] * len(prompts)
        genres = genres or [""] * len(prompts)
        out: list[tuple[float, int]] = []
        for start in range(0, len(prompts), batch_size):
            sl = slice(start, start + batch_size)
            encoded = [self.encode_scored(p, t, f, g)
                       for p, t, f, g in zip(prompts[sl], texts[sl], forms[sl], genres[sl], strict=True)]
            batch = collate_examples([(ids, labels) for ids, labels, _ in encoded], self.pad_id)
            device = self.model.device
            logits = self.model(input_ids=batch["input_ids"].to(device),
                                attention_mask=batch["attention_mask"].to(device)).logits
            nll = sequence_nll(logits, batch["labels"].to(device)).cpu()
            out += [(float(n), e[2]) for n, e in zip(nll.tolist(), encoded, strict=True)]
        return out

    def save(self, directory: Path) -> Path:
        """Writes ``model/`` and ``tokenizer/`` (``save_pretrained``), ``config.json`` and ``manifest.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory / "model"))
        self.tokenizer.save_pretrained(str(directory / "tokenizer"))
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        write_manifest(directory, self.family, {"base_model": self.config.base_model or None,
                                                "parameters": parameter_count(self.model), **self.metadata})
        return directory

    @classmethod
    def load(cls, directory: Path) -> TransformerWriter:
        """Restores a model saved with :meth:`save`."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        directory = Path(directory)
        config = TransformerConfig(**json.loads((directory / "config.json").read_text()))
        model = AutoModelForCausalLM.from_pretrained(str(directory / "model"))
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(model, tokenizer, config, metadata=manifest)

    # --- generation internals --------------------------------------------------------------------------
    def generation_config(self, settings: GenerationSettings, max_new_tokens: int) -> Any:
        """Our settings as a ``transformers.GenerationConfig`` (sampling, or beam search if ``num_beams > 1``)."""
        from transformers import GenerationConfig

        common = {"max_new_tokens": max_new_tokens, "eos_token_id": self.eos_id, "pad_token_id": self.pad_id,
                  "repetition_penalty": float(settings.repetition_penalty)}
        if settings.num_beams > 1:
            return GenerationConfig(do_sample=False, num_beams=settings.num_beams, **common)
        return GenerationConfig(do_sample=True, temperature=float(settings.temperature), top_k=settings.top_k,
                                top_p=float(settings.top_p), **common)

    def _generate_ids(self, prompts: list[str], settings: GenerationSettings,
                      streamer: Any = None) -> list[list[int]]:
        """Generated ids per prompt, cut before the first end token."""
        if not prompts:
            return []
        prefixes = [self.encode_prefix(p, settings.form, settings.genre) for p in prompts]
        width = max(len(p) for p in prefixes)
        max_new = min(settings.max_new_tokens, self.config.context - width)
        if max_new < settings.max_new_tokens:
            self._warn_once("max_new", "max_new_tokens %d cut to %d so that prompt + piece fit the context of %d",
                            settings.max_new_tokens, max_new, self.config.context)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prefixes):  # left padding: every row's next token is at the same column
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        with self._lock, torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(settings.seed)
            device = self.model.device
            out = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), streamer=streamer,
                                      generation_config=self.generation_config(settings, max_new))
        rows = []
        for row in out[:, width:].cpu().tolist():
            rows.append(row[: row.index(self.eos_id)] if self.eos_id in row else row)
        return rows


class _TokenStreamer:
    """A ``transformers`` streamer that hands generated ids to an iterating consumer (one prompt).

    ``generate`` first ``put``s the prompt (skipped), then each new token; the end token stops the stream.
    """

    def __init__(self, eos_id: int) -> None:
        self.eos_id = eos_id
        self.queue: queue.Queue[int | None] = queue.Queue()
        self.prompt_seen = False
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        """Receives the prompt, then each new token."""
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for tid in value.reshape(-1).tolist():
            if not self.ended:
                if tid == self.eos_id:
                    self.ended = True
                else:
                    self.queue.put(int(tid))

    def end(self) -> None:
        """Marks the end of generation."""
        self.queue.put(None)

    def __iter__(self) -> Iterator[int]:
        while (tid := self.queue.get()) is not None:
            yield tid


# --- building ------------------------------------------------------------------------------------------
def collate_examples(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pads ``(input_ids, labels)`` pairs into ``input_ids``, ``attention_mask`` and ``labels``."""
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(pairs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed NLL per row of ``(B, T, V)`` logits against ``(B, T)`` labels (shifted; ``-100`` skipped)."""
    shifted = logits[:, :-1].float()  # position t predicts token t + 1
    target = labels[:, 1:]
    nll = F.cross_entropy(shifted.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")  # (B, T-1)
    return nll.sum(dim=1)


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_transformer(tokenizer: Any, config: TransformerConfig, forms: Sequence[str] = (),
                      genres: Sequence[str] = ()) -> TransformerWriter:
    """A writer ready to train: a fresh GPT-2 on ``tokenizer``, or ``config.base_model`` prepared to fine-tune.

    Args:
        tokenizer: The shared tokenizer (used from scratch; ignored when fine-tuning).
        config: Model settings.
        forms: Forms that need control tokens (fine-tuning adds them to the base tokenizer).
        genres: Genres that need control tokens (empty → ``none``).

    Returns:
        The writer.

    Raises:
        ValueError: For a missing or non-causal-LM base model, an unreachable hub, a context longer than
            the base model allows, or a tokenizer without the special tokens the layout needs.
    """
    if not config.base_model:
        return _from_scratch(tokenizer, config)
    return _from_pretrained(config, forms, genres)


def _from_scratch(tokenizer: Any, config: TransformerConfig) -> TransformerWriter:
    from transformers import GPT2Config, GPT2LMHeadModel

    check_special_tokens(tokenizer, "the shared tokenizer")
    gpt = GPT2Config(vocab_size=len(tokenizer), n_positions=config.context, n_embd=config.n_embd,
                     n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                     embd_pdrop=config.dropout, attn_pdrop=config.dropout, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return TransformerWriter(GPT2LMHeadModel(gpt), tokenizer, config)


def _resolve_base(base: str) -> str:
    """A local model directory as is; a hub id only when the hub is reachable (fails fast otherwise)."""
    from corpus.loaders import hub_reachable

    path = Path(base).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"base_model {base!r} is not a saved model directory (no config.json in it)")
        return str(path)
    if base.startswith((".", "/", "~")) or not HUB_ID.fullmatch(base):
        raise ValueError(f"base_model {base!r} does not exist (neither a local directory nor a hub id)")
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "True") or not hub_reachable():
        raise ValueError(f"base_model {base!r} is not a local directory and the Hugging Face hub is unreachable; "
                         "download it where you are online (save_pretrained) and point base_model at the directory")
    return base


def _from_pretrained(config: TransformerConfig, forms: Sequence[str], genres: Sequence[str]) -> TransformerWriter:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = _resolve_base(config.base_model)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    base_config = AutoConfig.from_pretrained(source)
    if base_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"base_model {config.base_model!r} is not a causal language model (model_type "
                         f"'{base_config.model_type}'; GPT-2-style decoders such as gpt2 or distilgpt2 are)")
    try:
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ValueError(f"base_model {config.base_model!r} could not be loaded as a causal language model: "
                         f"{str(exc).splitlines()[0]}") from exc
    limit = getattr(base_config, "n_positions", None) or getattr(base_config, "max_position_embeddings", None)
    if limit and config.context > limit:
        raise ValueError(f"context {config.context} is longer than base_model {config.base_model!r} allows ({limit})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ValueError(f"base_model {config.base_model!r} has no loadable tokenizer: {exc}") from exc
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of base_model {config.base_model!r} has no end token (eos_token)")
    added: dict[str, Any] = {}
    if tokenizer.pad_token is None:
        added["pad_token"] = PAD
    if tokenizer.sep_token is None:
        added["sep_token"] = SEP
    controls = sorted({form_token(f) for f in forms} | {genre_token(g) for g in [*genres, ""]})
    new_controls = [t for t in controls if t not in tokenizer.get_vocab()]
    if new_controls:
        added["extra_special_tokens"] = new_controls
    if added:
        tokenizer.add_special_tokens(added, replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return TransformerWriter(model, tokenizer, config)
