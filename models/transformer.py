"""The Transformer family: a GPT-2 causal language model behind the model contract.

Two modes, one code path (:func:`build_transformer`):

- **from scratch** (``base_model: ""``): a small ``GPT2LMHeadModel`` (layers, width, heads and context
  length from the profile) on the project's shared byte-level BPE tokenizer, so its likelihoods compare
  token for token with the seq2seq and GAN families;
- **pretrained base** (``base_model:`` a checkpoint spec, see :mod:`weights.checkpoints`: a local
  ``save_pretrained`` directory, a hub id when online, a GGUF file or a model shipped in a package on the
  package index): the checkpoint and *its own* tokenizer, fine-tuned with a LoRA adapter (``adapter:
  lora``, the default; :mod:`peft`) or in full (``adapter: full``). Comparisons with the other families
  then rest on per-word perplexity, which does not depend on the tokenizer.

The prompt layouts (chat, or control tokens) are :mod:`models.layout`'s, shared with the llama.cpp
runtime (:mod:`models.llama_cpp`). With the chat layout nothing is added to the vocabulary, so a LoRA
adapter is all that training changes; with control tokens a base gets the separator, padding and control
tokens added (embeddings resized).

A model built on a base is saved as its adapter (or its full weights with ``adapter: full``) plus the
base's spec, licence and attribution; loading resolves the base from the checkpoint cache and merges
the adapter, so a saved model is megabytes, not a copy of the base. A Llama-architecture model is also
saved as one GGUF file with the adapter merged in (``gguf/model.gguf``, :mod:`weights.export`): what the
llama.cpp runtime serves, so a registry version needs no conversion when it is deployed.

Sampling runs our own loop over the model's KV cache with the shared sampler
(:func:`models.contract.sample_next`), one seeded generator per row: a row's text depends only on its
prompt, seed and settings, so :meth:`TransformerWriter.generate_rows` batches requests with different
seeds, and :meth:`TransformerWriter.stream` yields exactly what :meth:`TransformerWriter.generate`
returns. Beam search goes through ``model.generate``.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from models.configs import TransformerConfig
from models.contract import GenerationSettings
from models.layout import IGNORE, PromptLayout, has_chat_template, read_saved
from models.manifest import write_manifest
from models.sampling import draw_one, sample_next
from models.tokenizer import PAD, SEP, check_special_tokens, form_token, genre_token

log = logging.getLogger(__name__)
GGUF_FILE = "gguf/model.gguf"  # inside a saved model directory: what the llama.cpp runtime serves


class TransformerWriter(PromptLayout):
    """The Transformer family on PyTorch: a causal LM behind the prompt layout (training, scoring, generation)."""

    runtime: ClassVar[str] = "torch"

    def __init__(self, model: Any, tokenizer: Any, config: TransformerConfig,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(tokenizer, config, metadata)
        self.model = model.eval()
        self.adapter_dir: Path | None = None  # the adapter a loaded model was merged from (saved again as is)
        self._lock = threading.Lock()

    # --- the contract ----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], settings: GenerationSettings | None = None) -> list[str]:
        """Generates one piece per prompt (batched, left-padded; every row seeded with ``settings.seed``)."""
        settings = settings or GenerationSettings()
        rows = self._generate_ids(list(prompts), settings)
        texts = [self._text(row, settings) for row in rows]
        return self.with_morals([(p, settings.form, settings.genre, settings.seed) for p in prompts], texts, settings)

    def generate_rows(self, rows: Sequence[tuple[str, int]], settings: GenerationSettings | None = None) -> list[str]:
        """One text per ``(prompt, seed)`` row in one batch over the KV cache (each row its own generator)."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1 or not rows:
            return super().generate_rows(rows, settings)
        ids = self._generate_ids([p for p, _ in rows], settings, seeds=[s for _, s in rows])
        return self.with_morals([(p, settings.form, settings.genre, s) for p, s in rows],
                                [self._text(row, settings) for row in ids], settings)

    def generate_requests(self, requests: Sequence[tuple[str, str, str]],
                          settings: GenerationSettings | None = None) -> list[str]:
        """One text per ``(prompt, form, genre)`` request, all in one batch (each row seeded with ``settings.seed``)."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1 or not requests:
            return super().generate_requests(requests, settings)
        ids = self._generate_ids([r[0] for r in requests], settings, forms=[r[1] for r in requests],
                                 genres=[r[2] for r in requests])
        return self.with_morals([(*r, settings.seed) for r in requests], [self._text(row, settings) for row in ids],
                                settings)

    def stream(self, prompt: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yields text as it is sampled; the pieces join to ``generate([prompt], settings)[0]``."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1 and not settings.banned_phrases:  # beam search has no stable prefix until it ends
            yield self.generate([prompt], settings)[0]
            return
        tokens = (self._phrase_free_ids(prompt, settings.seed, settings=settings) if settings.banned_phrases
                  else (int(step[0]) for step in self._sample_iter([prompt], settings)))
        yield from self.stream_ids(prompt, tokens, settings)

    def teacher_logits(self, prompt: str, text: str, settings: GenerationSettings) -> tuple[torch.Tensor, list[int]]:
        """The logits for each token of ``text`` after the request's prefix (teacher forcing), and the ids.

        Only what fits the context is read.
        """
        prefix, ids = self.teacher_ids(prompt, text, settings)
        out = self.model(input_ids=torch.tensor([prefix + ids], device=self.model.device))
        return out.logits[0, len(prefix) - 1: len(prefix) - 1 + len(ids)].cpu(), ids

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], texts: Sequence[str], forms: Sequence[str] | None = None,
              genres: Sequence[str] | None = None, batch_size: int = 16,
              max_piece_tokens: int = 0) -> list[tuple[float, int]]:
        """Total NLL (nats, end token included) of each text given its prompt, and its word count.

        Rows are scored in batches of similar length (less padding); ``max_piece_tokens`` > 0 scores only
        each piece's first tokens.
        """
        forms = forms or ["story"] * len(prompts)
        genres = genres or [""] * len(prompts)
        encoded = [self.encode_scored(p, t, f, g, max_piece_tokens)
                   for p, t, f, g in zip(prompts, texts, forms, genres, strict=True)]
        nll = summed_nll(self.model, [e[:2] for e in encoded], self.pad_id, batch_size)
        return [(n, e[2]) for n, e in zip(nll, encoded, strict=True)]

    def save(self, directory: Path) -> Path:
        """Writes the weights (``adapter/`` on a base, else ``model/``), ``tokenizer/``, ``config.json``, manifest.

        A model built on a pretrained base with ``adapter: lora`` saves its adapter only; the manifest
        names the base (spec, licence, attribution) that :meth:`load` resolves again.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if is_peft_model(self.model):
            self.model.save_pretrained(str(directory / "adapter"))
        elif self.adapter_dir is not None:
            shutil.copytree(self.adapter_dir, directory / "adapter", dirs_exist_ok=True)
        else:
            self.model.save_pretrained(str(directory / "model"))
        self.tokenizer.save_pretrained(str(directory / "tokenizer"))
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        extra = {"base_model": self.config.base_model or None, "parameters": parameter_count(self.model),
                 "layout": "chat" if self.chat else "control-tokens", **self.metadata}
        if (directory / "adapter").is_dir():
            extra["adapter"] = self.config.adapter
        exported = self.export_gguf(directory)
        if exported is not None:
            extra["gguf"] = exported
        write_manifest(directory, self.family, extra)
        return directory

    def export_gguf(self, directory: Path) -> dict[str, Any] | None:
        """Writes ``gguf/model.gguf`` (the adapter merged in) for the llama.cpp runtime; returns its record.

        Only Llama-architecture models export (``config.gguf`` ``none`` skips it); others return None and are
        served by the torch runtime. The record (file, SHA-256, quant, size) goes into the manifest.
        """
        if self.config.gguf == "none" or getattr(self.model.config, "model_type", "") != "llama":
            return None
        import copy

        from weights.export import export_gguf
        from weights.spec import SOURCE_GGUF

        merged = copy.deepcopy(self.model).merge_and_unload() if is_peft_model(self.model) else self.model
        base_gguf = None
        if self.config.base_model:
            from weights.checkpoints import resolve_checkpoint

            source = Path(resolve_checkpoint(self.config.base_model).path) / SOURCE_GGUF
            base_gguf = source if source.is_file() else None
        done = export_gguf(merged, self.tokenizer, directory / "tokenizer", directory / GGUF_FILE, self.config.gguf,
                           base_gguf, name=f"creative-writer {self.family}")
        return {**done.as_dict(), "path": GGUF_FILE}

    @classmethod
    def load(cls, directory: Path, trainable: bool = False) -> TransformerWriter:
        """Restores a model saved with :meth:`save` (resolving its base and merging its adapter if it has one).

        Args:
            directory: What :meth:`save` wrote.
            trainable: Keep an adapter as a trainable adapter on its base instead of merging it (what the
                workers of a multi-process training start from).

        Raises:
            ValueError: If the base of an adapter cannot be resolved (the message names the spec).
        """
        from transformers import AutoModelForCausalLM

        directory = Path(directory)
        config, tokenizer, manifest = read_saved(directory)
        adapter = directory / "adapter"
        if adapter.is_dir():
            from peft import PeftModel

            model, _, _ = load_base(config.base_model)
            if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
                model.resize_token_embeddings(len(tokenizer))
            if trainable:
                return cls(PeftModel.from_pretrained(model, str(adapter), is_trainable=True), tokenizer, config,
                           metadata=manifest)
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            writer = cls(model, tokenizer, config, metadata=manifest)
            writer.adapter_dir = adapter
            return writer
        model = AutoModelForCausalLM.from_pretrained(str(directory / "model"))
        return cls(model, tokenizer, config, metadata=manifest)

    # --- generation internals --------------------------------------------------------------------------
    def generation_config(self, settings: GenerationSettings, max_new_tokens: int) -> Any:
        """Beam search settings as a ``transformers.GenerationConfig`` (sampling runs :meth:`_sample_iter`)."""
        from transformers import GenerationConfig

        return GenerationConfig(do_sample=False, num_beams=settings.num_beams, max_new_tokens=max_new_tokens,
                                eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                                repetition_penalty=float(settings.repetition_penalty))

    def _prefixes(self, prompts: list[str], settings: GenerationSettings, forms: Sequence[str] | None = None,
                  genres: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Left-padded prefix ids and mask ``(B, W)``, and how many tokens may follow within the context.

        Each row uses ``forms[i]``/``genres[i]`` when given, else the settings' form and genre.
        """
        forms = forms or [settings.form] * len(prompts)
        genres = genres or [settings.genre] * len(prompts)
        prefixes = [self.request_prefix(p, settings, f, g) for p, f, g in zip(prompts, forms, genres, strict=True)]
        width = max(len(p) for p in prefixes)
        max_new = self.new_token_budget(width, settings)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prefixes):  # left padding: every row's next token is at the same column
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        return input_ids, mask, max_new

    @torch.inference_mode()
    def _sample_iter(self, prompts: list[str], settings: GenerationSettings, seeds: Sequence[int] | None = None,
                     ignore_end: bool = False, forms: Sequence[str] | None = None,
                     genres: Sequence[str] | None = None) -> Iterator[torch.Tensor]:
        """Yields ``(B,)`` sampled ids per step over the KV cache until every row ended or ``max_new_tokens``.

        Row ``i`` samples with a generator seeded by ``seeds[i]`` (default ``settings.seed``), so its text
        does not depend on the other rows. Rows that ended yield their end token. ``ignore_end`` keeps
        every row going to ``max_new_tokens`` (for speed measurements). ``forms``/``genres`` set each row's.
        """
        input_ids, mask, max_new = self._prefixes(prompts, settings, forms, genres)
        device = self.model.device
        gens = [torch.Generator().manual_seed(int(s)) for s in (seeds or [settings.seed] * len(prompts))]
        stops = torch.tensor(self.stop_ids)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                         position_ids=positions.to(device), use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1].float().cpu()
        next_pos = positions[:, -1] + 1
        history = torch.empty((len(prompts), 0), dtype=torch.long)
        done = torch.zeros(len(prompts), dtype=torch.bool)
        for step in range(max_new):
            boost = self.end_boost(settings, step)
            if boost:
                logits[:, self.eos_id] += boost
            nxt = sample_next(logits, settings, gens, history)
            if not ignore_end:
                nxt = torch.where(done, torch.full_like(nxt, self.eos_id), nxt)
                done |= torch.isin(nxt, stops)
                if done.all():
                    break
            yield nxt
            history = torch.cat([history, nxt.unsqueeze(1)], dim=1)
            mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=torch.long)], dim=1)
            out = self.model(input_ids=nxt.unsqueeze(1).to(device), attention_mask=mask.to(device),
                             position_ids=next_pos.unsqueeze(1).to(device), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1].float().cpu()
            next_pos = next_pos + 1

    def _generate_ids(self, prompts: list[str], settings: GenerationSettings, seeds: Sequence[int] | None = None,
                      forms: Sequence[str] | None = None, genres: Sequence[str] | None = None) -> list[list[int]]:
        """Generated ids per prompt, cut before the first end token."""
        if not prompts:
            return []
        if settings.banned_phrases:  # one row at a time: a row goes back on its own KV cache
            seeds = seeds or [settings.seed] * len(prompts)
            forms = forms or [settings.form] * len(prompts)
            genres = genres or [settings.genre] * len(prompts)
            return [list(self._phrase_free_ids(*row, settings=settings))
                    for row in zip(prompts, seeds, forms, genres, strict=True)]
        if settings.num_beams > 1:
            return self._beam_ids(prompts, settings)
        rows: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        for step in self._sample_iter(prompts, settings, seeds, forms=forms, genres=genres):
            for i, tid in enumerate(step.tolist()):
                finished[i] = finished[i] or tid in self.stop_ids
                if not finished[i]:
                    rows[i].append(tid)
        return rows

    @torch.inference_mode()
    def _phrase_free_ids(self, prompt: str, seed: int, form: str | None = None, genre: str | None = None, *,
                         settings: GenerationSettings) -> Iterator[int]:
        """One row's sampled ids with ``settings.banned_phrases`` kept out (see :mod:`models.banning`)."""
        prefix = self.request_prefix(prompt, settings, form, genre)
        max_new = self.new_token_budget(len(prefix), settings)
        row = _CacheRow(self.model, prefix, settings, seed,
                        lambda written: (self.eos_id, self.end_boost(settings, written)))
        yield from self.phrase_free(row, max_new, settings)

    def _beam_ids(self, prompts: list[str], settings: GenerationSettings) -> list[list[int]]:
        input_ids, mask, max_new = self._prefixes(prompts, settings)
        with self._lock, torch.inference_mode():
            device = self.model.device
            out = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                      generation_config=self.generation_config(settings, max(1, max_new)))
        rows = []
        for row in out[:, input_ids.shape[1]:].cpu().tolist():
            cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
            rows.append(row[:cut])
        return rows


# --- building ------------------------------------------------------------------------------------------
class _CacheRow:
    """One row sampled over its own KV cache that can go back (a :class:`models.banning.Rewindable`)."""

    def __init__(self, model: Any, prefix: Sequence[int], settings: GenerationSettings, seed: int,
                 end_boost: Callable[[int], tuple[int, float]]) -> None:
        self.model, self.prefix, self.settings, self.end_boost = model, list(prefix), settings, end_boost
        self.generator = torch.Generator().manual_seed(int(seed))
        self.written: list[int] = []
        self.past: Any = None
        self._read([*self.prefix])

    def _read(self, ids: list[int]) -> None:
        out = self.model(input_ids=torch.tensor([ids], device=self.model.device), past_key_values=self.past,
                         use_cache=True)
        self.past, self.logits = out.past_key_values, out.logits[0, -1].float().cpu()

    def sample(self, banned: frozenset[int]) -> int:
        end, boost = self.end_boost(len(self.written))
        logits = self.logits
        if boost:
            logits = logits.clone()
            logits[end] += boost
        return draw_one(logits, self.settings, self.generator, self.written, sorted(banned))

    def read(self, token: int) -> None:
        self.written.append(int(token))
        self._read([int(token)])

    def rewind(self, written: Sequence[int]) -> None:
        """Crops the cache to the prefix and ``written`` less its last token, then reads that token again."""
        self.written = list(written)
        sequence = [*self.prefix, *self.written]
        extra = self.past.get_seq_length() - (len(sequence) - 1)
        if extra > 0:
            self.past.crop(-extra)  # a negative count: that many tokens off the end
        self._read(sequence[-1:])


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


def _batched_nll(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int,
                 row_nll: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> list[float]:
    """Runs ``row_nll`` (a collated batch → summed NLL per row) over the pairs in batches of similar length.

    Returns the NLLs in the pairs' order (sorting by length means less padding).
    """
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
    out = [0.0] * len(pairs)
    for start in range(0, len(order), batch_size):
        rows = order[start: start + batch_size]
        for i, n in zip(rows, row_nll(collate_examples([pairs[i] for i in rows], pad_id)).cpu().tolist(),
                        strict=True):
            out[i] = float(n)
    return out


@torch.inference_mode()
def summed_nll(model: Any, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int,
               batch_size: int = 16) -> list[float]:
    """Summed NLL of each ``(input_ids, labels)`` pair under a causal LM, in the pairs' order.

    Pairs run in batches of similar length (less padding); labels of ``-100`` are not scored.
    """
    device = model.device

    def row_nll(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        return sequence_nll(logits, batch["labels"].to(device))

    return _batched_nll(pairs, pad_id, batch_size, row_nll)


@torch.inference_mode()
def selective_nll(model: Any, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int,
                  batch_size: int = 16) -> list[float]:
    """:func:`summed_nll` that runs the output layer only at the positions that are scored.

    A judge that scores a short target after a long context (or one token at the end) spends most of a
    forward pass on the vocabulary projection of positions nobody reads; this skips them. Models without a
    separable body and output layer fall back to :func:`summed_nll`.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", None)
    if head is None or body is None or body is model:
        return summed_nll(model, pairs, pad_id, batch_size)
    device = model.device

    def row_nll(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = body(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))[0]
        target = batch["labels"][:, 1:].to(device)
        scored = target != IGNORE
        nll = F.cross_entropy(head(hidden[:, :-1][scored]).float(), target[scored], reduction="none")
        which = torch.arange(len(target), device=device).unsqueeze(1).expand_as(target)[scored]
        return torch.zeros(len(target), device=device).index_add_(0, which, nll)

    return _batched_nll(pairs, pad_id, batch_size, row_nll)


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def trainable_count(model: torch.nn.Module) -> int:
    """Parameters that receive gradients."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad)


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is wrapped by peft (carries an adapter)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def build_transformer(tokenizer: Any, config: TransformerConfig, forms: Sequence[str] = (),
                      genres: Sequence[str] = ()) -> TransformerWriter:
    """A writer ready to train: a fresh GPT-2 on ``tokenizer``, or ``config.base_model`` prepared to fine-tune.

    Args:
        tokenizer: The shared tokenizer (used from scratch; ignored with a base).
        config: Model settings.
        forms: Forms of the training data (control tokens, or the chat layout's known forms).
        genres: Genres of the training data (empty → ``none``).

    Returns:
        The writer (with a LoRA adapter attached when ``adapter: lora``).

    Raises:
        ValueError: For a base that cannot be resolved or is not a causal language model, a context longer
            than the base allows, a tokenizer without the special tokens the layout needs, or LoRA targets
            the base does not have.
    """
    config.forms = sorted(set(forms))
    config.genres = sorted(set(genres) - {""})
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


def load_base(spec: str) -> tuple[Any, Any, Any]:
    """Resolves a checkpoint spec and loads its causal LM (fp32) and tokenizer.

    Returns:
        ``(model, tokenizer, checkpoint)``.

    Raises:
        ValueError: If the spec cannot be resolved, or is not a loadable causal language model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from weights.checkpoints import CheckpointError, resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(spec)
    except CheckpointError as exc:
        raise ValueError(f"base_model: {exc}") from None
    source = checkpoint.path
    base_config = AutoConfig.from_pretrained(source)
    if base_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"base_model {spec!r} is not a causal language model (model_type "
                         f"'{base_config.model_type}'; decoders such as gpt2 or llama are)")
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ValueError(f"base_model {spec!r} could not be loaded as a causal language model: "
                         f"{str(exc).splitlines()[0]}") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ValueError(f"base_model {spec!r} has no loadable tokenizer: {exc}") from exc
    return model, tokenizer, checkpoint


def _from_pretrained(config: TransformerConfig, forms: Sequence[str], genres: Sequence[str]) -> TransformerWriter:
    model, tokenizer, checkpoint = load_base(config.base_model)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit and config.context > limit:
        raise ValueError(f"context {config.context} is longer than base_model {config.base_model!r} allows ({limit})")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of base_model {config.base_model!r} has no end token (eos_token)")
    chat = config.chat_template == "auto" and has_chat_template(tokenizer)
    added: dict[str, Any] = {}
    if not chat:
        if tokenizer.pad_token is None:
            added["pad_token"] = PAD
        if tokenizer.sep_token is None:
            added["sep_token"] = SEP
        controls = sorted({form_token(f) for f in forms} | {genre_token(g) for g in [*genres, ""]})
        new_controls = [t for t in controls if t not in tokenizer.get_vocab()]
        if new_controls:
            added["extra_special_tokens"] = new_controls
    new_ids: list[int] = []
    if added:
        before = len(tokenizer)
        tokenizer.add_special_tokens(added, replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer))
        new_ids = list(range(before, len(tokenizer)))
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.adapter == "lora":
        model = attach_lora(model, config, new_ids)
    metadata = {"base": checkpoint.as_dict(), "trainable_parameters": trainable_count(model)}
    log.info("base %s (%s layout, %s): %d parameters, %d trainable", config.base_model, "chat" if chat else "control",
             config.adapter, parameter_count(model), metadata["trainable_parameters"])
    return TransformerWriter(model, tokenizer, config, metadata=metadata)


def attach_lora(model: Any, config: TransformerConfig, new_token_ids: Sequence[int] = ()) -> Any:
    """Wraps ``model`` with a LoRA adapter (the base frozen); rows of added tokens train with it.

    Raises:
        ValueError: If ``lora_targets`` names no module of the base (the message lists its linear layers).
    """
    from peft import LoraConfig, get_peft_model

    kwargs: dict[str, Any] = {}
    if new_token_ids:
        kwargs["trainable_token_indices"] = list(new_token_ids)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets or None, task_type="CAUSAL_LM", **kwargs)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"})
        raise ValueError(f"TransformerConfig.lora_targets {config.lora_targets or '(peft default)'} do not fit "
                         f"base_model {config.base_model!r}: {str(exc).splitlines()[0]} (its linear layers: "
                         f"{', '.join(linear)})") from None
