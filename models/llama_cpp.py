"""The Transformer family on llama.cpp: the saved model's GGUF export, sampled by llama.cpp's own sampler chain.

A Transformer candidate built on a Llama-architecture base is saved with ``gguf/model.gguf`` (the
adapter merged in, see :mod:`weights.export`); :class:`LlamaCppWriter` serves that file through
``llama-cpp-python`` behind the same model contract as :class:`models.transformer.TransformerWriter`:

- **the same ids**: prompts are laid out and tokenized by the shared :class:`models.layout.PromptLayout`
  with the model's own tokenizer, and written ids are decoded by it, so both runtimes read and write the
  same tokens for the same request (stop strings, trimming and ``target_words`` are the shared text code);
- **llama.cpp's sampler chain** in the order of our sampler (:func:`models.sampling.sample_next`):
  logit bias, repetition penalty over the written tokens, temperature, min-p, top-k, top-p, then a seeded draw
  (:func:`sampler_chain`). The filters keep the same token sets as ours on the same logits (tested); the
  draw is llama.cpp's own generator, so a seed writes the same text on this runtime every time (streamed
  or not), not the same text as on the torch runtime;
- **one context, a lock**: llama.cpp's context is not thread-safe, so requests take turns (the server
  queues them and refuses what does not fit the queue, see :mod:`serving.engine`). The longest prefix a
  request shares with the previous one is kept in the KV cache and not read again (a Continue on a long
  manuscript reads only what changed);
- **likelihoods from llama.cpp's logits**: ``score`` (per-word perplexity) and ``teacher_logits`` (the
  token-probability view, ``logprobs``) read the logits of every written position in one batch.

Beam search is the torch runtime's only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from models.configs import TransformerConfig
from models.contract import GenerationSettings
from models.layout import PromptLayout, read_saved
from models.params import SamplingParams, check_logit_bias

log = logging.getLogger(__name__)
NO_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed"


class RuntimeLoadError(ValueError):
    """A model the llama.cpp runtime cannot load; the message names the file and what is wrong."""


def llama_seed(seed: int) -> int:
    """A request's seed (up to 2**63) folded into llama.cpp's 32-bit seed (never its 'random' value)."""
    folded = (int(seed) ^ (int(seed) >> 32)) & 0xFFFFFFFF
    return folded if folded != NO_SEED else NO_SEED - 1


def sampler_chain(settings: SamplingParams, n_vocab: int, seed: int | None, history: int, vocab: Any = None) -> Any:
    """llama.cpp's sampler chain for ``settings``, in the order of :func:`models.sampling.sample_next`.

    Args:
        settings: The validated sampling settings.
        n_vocab: The model's vocabulary size.
        seed: The draw's seed; None leaves the draw (and XTC, which draws too) out: the filters alone, for tests.
        history: How many written tokens the repetition penalty and DRY look back over (all of them).
        vocab: The model's vocabulary (``llama_model.vocab``); DRY needs it.

    Returns:
        A ``llama_cpp._internals.LlamaSampler``.

    Raises:
        ValueError: If DRY is asked for without a vocabulary, or a biased token id is not in it.
    """
    from llama_cpp._internals import LlamaSampler

    chain = LlamaSampler()
    if settings.logit_bias:
        check_logit_bias(settings.logit_bias, n_vocab)
        chain.add_logit_bias(n_vocab, {int(k): float(v) for k, v in settings.logit_bias.items()})
    if settings.repetition_penalty != 1.0:
        chain.add_penalties(n_vocab, max(1, history), float(settings.repetition_penalty), 0.0, 0.0)
    if settings.dry_multiplier > 0:
        if vocab is None:
            raise ValueError("DRY needs the model's vocabulary")
        chain.add_dry(_VocabOf(vocab), float(settings.dry_multiplier), float(settings.dry_base),
                      int(settings.dry_allowed_length), max(1, history), [])  # no sequence breakers: as torch
    chain.add_temp(float(settings.temperature))
    if settings.min_p > 0:
        chain.add_min_p(float(settings.min_p), 1)
    if settings.top_k > 0:
        chain.add_top_k(int(settings.top_k))
    if settings.top_p < 1.0:
        chain.add_top_p(float(settings.top_p), 1)
    if seed is not None:
        if settings.xtc_probability > 0:  # its own random stream, apart from the draw's
            chain.add_xtc(float(settings.xtc_probability), float(settings.xtc_threshold), 1,
                          llama_seed(seed) ^ XTC_SEED_SALT)
        chain.add_dist(llama_seed(seed))
    return chain


XTC_SEED_SALT = 0x5EED_C0DE


class _ContextRow:
    """The request in llama.cpp's context, sampled with the chain, able to go back (a ``Rewindable``).

    A token banned at a position is removed from that position's logits (-inf) before the chain samples.
    Going back cuts the context and builds the chain again over the tokens kept, so the repetition penalty's
    and DRY's history holds only text that stays.
    """

    def __init__(self, writer: LlamaCppWriter, prefix: Sequence[int], settings: GenerationSettings, seed: int,
                 history: int) -> None:
        self.writer, self.prefix, self.settings, self.seed, self.history = writer, list(prefix), settings, seed, history
        self.written = 0  # tokens read after the prefix (the wind-down's count)
        self.chain = self._chain(())

    def _chain(self, written: Sequence[int]) -> Any:
        chain = sampler_chain(self.settings, self.writer.n_vocab, self.seed, self.history, self.writer.llm._model.vocab)
        for token in written:
            chain.accept(int(token))
        return chain

    def sample(self, banned: frozenset[int]) -> int:
        self.writer._boost_end(self.writer.end_boost(self.settings, self.written), banned)
        return int(self.chain.sample(self.writer.llm._ctx, -1))

    def read(self, token: int) -> None:
        self.writer._decode([int(token)])
        self.written += 1

    def rewind(self, written: Sequence[int]) -> None:
        self.writer._prime([*self.prefix, *written])
        self.written = len(written)
        self.chain.close()
        self.chain = self._chain(written)


class _VocabOf:
    """What ``LlamaSampler.add_dry`` reads of a model: its ``vocab`` pointer."""

    def __init__(self, vocab: Any) -> None:
        self.vocab = vocab


def chain_keeps(settings: SamplingParams, logits: np.ndarray, previous: Sequence[int] = ()) -> list[int]:
    """The token ids llama.cpp's filters (:func:`sampler_chain` without the draw) leave for one row of logits.

    ``previous`` are the tokens written so far (the repetition penalty's history). What
    :func:`models.sampling.filter_logits` keeps on the same logits is the same set (tested).
    """
    chained = chain_logits(settings, logits, previous)
    return sorted(int(i) for i in np.nonzero(np.isfinite(chained))[0])


def chain_logits(settings: SamplingParams, logits: np.ndarray, previous: Sequence[int] = (),
                 vocab: Any = None) -> np.ndarray:
    """One row of logits after llama.cpp's chain without the draw (removed tokens -inf), by token id.

    ``vocab`` is the model's vocabulary (DRY needs it); the tests compare this with the torch sampler's.
    """
    import ctypes

    import llama_cpp
    from llama_cpp._internals import LlamaTokenDataArray

    logits = np.ascontiguousarray(logits, dtype=np.float32)
    chain = sampler_chain(settings, len(logits), None, max(1, len(previous)), vocab)
    try:
        for token in previous:
            chain.accept(int(token))
        candidates = LlamaTokenDataArray(n_vocab=len(logits))
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(chain.sampler, ctypes.byref(candidates.candidates))
        size = int(candidates.candidates.size)
        kept = candidates.candidates_data[:size]
        out = np.full(len(logits), -np.inf, dtype=np.float32)
        out[np.asarray(kept.id, dtype=np.int64)] = kept.logit
        return out
    finally:
        chain.close()


def check_gguf(path: Path, sha256: str = "", size: int = -1) -> int:
    """Checks a GGUF file before llama.cpp opens it: present, complete, unchanged and of the Llama architecture.

    Returns:
        The context length the model was trained for (``llama.context_length``; 0 when the file does not say).

    Raises:
        RuntimeLoadError: Naming the file and what is wrong.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise RuntimeLoadError(f"GGUF file {path} does not exist")
    if size >= 0 and path.stat().st_size != size:
        raise RuntimeLoadError(f"GGUF file {path} has {path.stat().st_size} bytes where its manifest records {size} "
                               "(truncated or replaced)")
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # the reader raises ValueError, struct.error, ... on a damaged file
        raise RuntimeLoadError(f"GGUF file {path} is not readable ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'damaged'})") from None
    field = reader.fields.get("general.architecture")
    arch = field.contents() if field is not None else ""
    if arch != "llama":
        raise RuntimeLoadError(f"GGUF file {path} holds a {arch or 'model of no stated'!s} architecture; "
                               "this runtime serves Llama-architecture exports")
    if sha256:
        from weights.gguf import file_sha256

        if file_sha256(path) != sha256:
            raise RuntimeLoadError(f"GGUF file {path} does not match the SHA-256 its manifest records")
    trained = reader.fields.get("llama.context_length")
    return int(trained.contents()) if trained is not None else 0


def _private_copy(path: Path) -> Path:
    """A copy (a hard link where it can) of ``path`` that lives as long as the process needs it.

    A model is often loaded from a temporary download folder that is deleted once it is loaded; the
    runtime keeps its own name for the file so that it can open it again (the scoring context).
    """
    folder = Path(tempfile.mkdtemp(prefix="cw-llama-"))
    target = folder / path.name
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    return target


class LlamaCppWriter(PromptLayout):
    """The Transformer family served by llama.cpp (see the module docstring).

    Args:
        gguf_path: The model's GGUF export.
        tokenizer: The model's own tokenizer (prompts are tokenized with it).
        config: The model's settings (``context`` is the llama.cpp context size).
        metadata: The saved manifest.
        threads: llama.cpp threads (0: every core, or ``$CW_TORCH_THREADS`` when set).
    """

    runtime: ClassVar[str] = "llama.cpp"

    def __init__(self, gguf_path: Path, tokenizer: Any, config: TransformerConfig,
                 metadata: dict[str, Any] | None = None, threads: int = 0) -> None:
        super().__init__(tokenizer, config, metadata)
        from llama_cpp import Llama

        from core.threads import thread_count

        self.gguf_path = Path(gguf_path)
        self.threads = thread_count(threads) or os.cpu_count() or 1
        try:
            self.llm = Llama(model_path=str(self.gguf_path), n_ctx=config.context, n_batch=min(512, config.context),
                             n_threads=self.threads, n_threads_batch=self.threads, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise RuntimeLoadError(f"llama.cpp could not load {self.gguf_path} ({exc})") from None
        self.n_vocab = int(self.llm.n_vocab())
        if self.n_vocab < len(tokenizer):
            raise RuntimeLoadError(f"GGUF file {self.gguf_path} has {self.n_vocab} tokens but the model's tokenizer "
                                   f"{len(tokenizer)}: the export does not belong to this model")
        self._lock = threading.Lock()
        weakref.finalize(self, self.llm.close)  # closed before interpreter shutdown tears the bindings down

    @property
    def served_files(self) -> dict[str, str]:
        """The file served and its SHA-256 (from the manifest), for the provenance line and ``/model``."""
        record = self.metadata.get("gguf") or {}
        return {str(record.get("path", self.gguf_path.name)): str(record.get("sha256", ""))}

    @classmethod
    def load(cls, directory: Path, threads: int = 0, context: int = 0) -> LlamaCppWriter:
        """The saved model's GGUF export on llama.cpp, after checking it against the manifest.

        Args:
            directory: The saved model directory.
            threads: llama.cpp threads (0: the thread policy's default).
            context: The context in tokens (0: the one the model was trained with); a longer one than the base
                was trained for is cut to that (with a warning).

        Raises:
            RuntimeLoadError: If the model has no GGUF export, or the file is missing, truncated, changed or
                of another architecture (the message names the file).
        """
        directory = Path(directory)
        config, tokenizer, manifest = read_saved(directory)
        record = manifest.get("gguf")
        if not record:
            raise RuntimeLoadError(f"{directory} has no GGUF export (saved before the llama.cpp runtime, or not a "
                                   "Llama-architecture model): serve it with runtime: torch")
        path = directory / record["path"]
        trained = check_gguf(path, record.get("sha256", ""), int(record.get("bytes", -1)))
        if context and trained and context > trained:
            log.warning("context %d is longer than %s's base was trained for: using %d", context, path.name, trained)
            context = trained
        if context and context != config.context:
            try:
                config = dataclasses.replace(config, context=int(context))
            except ValueError as exc:
                raise RuntimeLoadError(f"context {context}: {exc}") from None
        private = _private_copy(path)
        writer = cls(private, tokenizer, config, metadata=manifest, threads=threads)
        weakref.finalize(writer, shutil.rmtree, private.parent, True)
        return writer

    def save(self, directory: Path) -> Path:
        """Not offered: a served model is saved by the torch runtime (training writes both)."""
        raise NotImplementedError("the llama.cpp runtime serves saved models; save with the torch runtime")

    # --- llama.cpp's context ---------------------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], logits: bool = False) -> np.ndarray | None:
        """Reads ``tokens`` after what the context holds; returns their logits ``(T, V)`` when asked."""
        llm, rows = self.llm, []
        for start in range(0, len(tokens), llm.n_batch):
            batch = list(tokens[start: start + llm.n_batch])
            llm._batch.set_batch(batch=batch, n_past=llm.n_tokens, logits_all=logits)
            llm._ctx.decode(llm._batch)
            llm.input_ids[llm.n_tokens: llm.n_tokens + len(batch)] = batch
            llm.n_tokens += len(batch)
            if logits:
                out = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch) * self.n_vocab,))
                rows.append(out.reshape(len(batch), self.n_vocab).copy())
        return np.concatenate(rows) if logits else None

    def _rewind(self, tokens: Sequence[int]) -> int:
        """Drops what the context holds beyond its common prefix with ``tokens[:-1]``; returns that prefix's length.

        The last token is always read again, since its logits are what comes next.
        """
        llm, keep = self.llm, 0
        for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), tokens[:-1], strict=False):
            if a != b:
                break
            keep += 1
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        llm.n_tokens = keep
        return keep

    def _prime(self, prefix: Sequence[int]) -> None:
        """Puts ``prefix`` in the context, reading only what it does not share with the previous request."""
        self._decode(prefix[self._rewind(prefix):])

    def _sample_ids(self, prefix: list[int], settings: GenerationSettings, seed: int) -> Iterator[int]:
        """Yields sampled ids until an end token or ``max_new_tokens`` (the context holds the request meanwhile)."""
        if settings.num_beams > 1:
            raise ValueError("beam search (num_beams > 1) runs on the torch runtime only; serve with runtime: torch "
                             "or set num_beams 1")
        max_new = self.new_token_budget(len(prefix), settings)
        with self._lock:
            self._prime(prefix)
            if settings.banned_phrases:
                sampler = _ContextRow(self, prefix, settings, seed, max_new)
                try:
                    yield from self.phrase_free(sampler, max_new, settings)
                finally:
                    sampler.chain.close()
                return
            chain = sampler_chain(settings, self.n_vocab, seed, max_new, self.llm._model.vocab)
            try:
                for step in range(max_new):
                    self._boost_end(self.end_boost(settings, step))
                    token = int(chain.sample(self.llm._ctx, -1))
                    if token in self.stop_ids:
                        return
                    yield token
                    self._decode([token])
            finally:
                chain.close()

    def _boost_end(self, boost: float, banned: frozenset[int] = frozenset()) -> None:
        """Adds ``boost`` to the end token's logit and removes ``banned`` in the context's last logits (in place)."""
        if not boost and not banned:
            return
        row = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        if boost:
            row[self.eos_id] += boost
        if banned:
            row[sorted(banned)] = -np.inf

    # --- the contract ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """The GGUF model's vocabulary size (``logit_bias`` ids must be below it)."""
        return self.n_vocab

    def generate(self, prompts: Sequence[str], settings: GenerationSettings | None = None) -> list[str]:
        """One piece per prompt, one after another (each seeded with ``settings.seed``)."""
        settings = settings or GenerationSettings()
        texts = [self._text(list(self._sample_ids(self.request_prefix(p, settings), settings, settings.seed)), settings)
                 for p in prompts]
        return self.with_morals([(p, settings.form, settings.genre, settings.seed) for p in prompts], texts, settings)

    def stream(self, prompt: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yields text as it is sampled; the pieces join to ``generate([prompt], settings)[0]``."""
        settings = settings or GenerationSettings()
        yield from self.stream_ids(prompt, self._sample_ids(self.request_prefix(prompt, settings), settings,
                                                            settings.seed), settings)

    def _logits_after(self, prefix: list[int], ids: list[int]) -> np.ndarray:
        """``(len(ids), V)`` logits: row ``t`` predicts ``ids[t]`` after ``prefix`` (teacher forcing)."""
        if not ids:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        if not prefix:
            raise ValueError("teacher forcing needs a non-empty prefix")
        with self._lock:
            keep = self._rewind(prefix)
            logits = self._decode([*prefix[keep:], *ids[:-1]], logits=True)
        return logits[len(prefix) - 1 - keep:]

    def teacher_logits(self, prompt: str, text: str, settings: GenerationSettings) -> tuple[Any, list[int]]:
        """The logits for each token of ``text`` after the request's prefix, and the ids (what fits the context)."""
        import torch

        prefix, ids = self.teacher_ids(prompt, text, settings)
        return torch.from_numpy(self._logits_after(prefix, ids)), ids

    def score(self, prompts: Sequence[str], texts: Sequence[str], forms: Sequence[str] | None = None,
              genres: Sequence[str] | None = None, batch_size: int = 16,
              max_piece_tokens: int = 0) -> list[tuple[float, int]]:
        """Total NLL (nats, end token included) of each text given its prompt under llama.cpp, and its word count.

        The same ids and labels as the torch runtime's :meth:`models.transformer.TransformerWriter.score`
        (``batch_size`` is accepted for the contract; texts are read one by one).
        """
        forms = forms or ["story"] * len(prompts)
        genres = genres or [""] * len(prompts)
        out = []
        for prompt, text, form, genre in zip(prompts, texts, forms, genres, strict=True):
            ids, labels, words = self.encode_scored(prompt, text, form, genre, max_piece_tokens)
            start = next((i for i, label in enumerate(labels) if label >= 0), len(labels))
            logits = self._logits_after(ids[:start], ids[start:]).astype(np.float64)
            if not len(logits):
                out.append((0.0, words))
                continue
            peak = logits.max(axis=1, keepdims=True)
            log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
            picked = logits[np.arange(len(logits)), ids[start:]]
            out.append((float((log_norm - picked).sum()), words))
        return out
