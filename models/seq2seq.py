"""LSTM encoder–decoder with attention: reads a writing prompt, writes the piece.

Architecture (one config dataclass, small modules, shapes commented where they change):

- one embedding shared by encoder and decoder and tied to the output layer;
- a bidirectional LSTM encoder over ``<form:…> <genre:…> prompt`` (packed sequences, so padding never
  enters the recurrence); its final states, both directions concatenated and passed through a
  ``tanh`` bridge, initialise the decoder;
- an LSTM decoder over ``<bos> piece``, teacher-forced in training;
- attention of each decoder output over the encoder outputs: ``bahdanau`` (additive,
  ``v·tanh(W_q q + W_k k)``), ``luong`` (multiplicative "general", ``q·W k``) or ``none`` (the ablation);
  padded prompt positions are masked out;
- the attention context is concatenated with the decoder output, projected to the embedding size
  with ``tanh`` and multiplied by the tied embedding matrix to give the logits.

The decoder attends with its *output* (Luong placement) for both scores, so the whole target sequence
is decoded in one LSTM call during training; Bahdanau's additive score is kept, his pre-RNN placement
is not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.banning import require_sampling, without_phrases
from models.configs import Seq2SeqConfig
from models.contract import GenerationSettings, WriterModel
from models.manifest import write_manifest
from models.sampling import beam_search, draw_one, sample_next
from models.text import finish_text, stream_text, words_scored
from models.tokenizer import control_ids, decode_ids, encode_text, load_tokenizer, save_tokenizer

log = logging.getLogger(__name__)
class Attention(nn.Module):
    """Bahdanau (additive) or Luong (general) attention with a padding mask."""

    def __init__(self, kind: str, query_dim: int, key_dim: int, attn_dim: int = 64) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":  # the additive score works in a small space of its own: (B, T, S, A) is big
            self.w_q = nn.Linear(query_dim, attn_dim, bias=False)
            self.w_k = nn.Linear(key_dim, attn_dim, bias=True)
            self.v = nn.Linear(attn_dim, 1, bias=False)
        else:
            self.w = nn.Linear(key_dim, query_dim, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Precomputes the key projection once per prompt: ``(B, S, K) -> (B, S, A or Q)``."""
        return self.w_k(keys) if self.kind == "bahdanau" else self.w(keys)

    def forward(self, query: torch.Tensor, projected: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attends.

        Args:
            query: ``(B, T, Q)`` decoder outputs.
            projected: ``(B, S, Q)`` from :meth:`project_keys`.
            keys: ``(B, S, K)`` encoder outputs.
            mask: ``(B, S)`` True on real (non-padded) prompt positions.

        Returns:
            ``(context (B, T, K), weights (B, T, S))``.
        """
        if self.kind == "bahdanau":
            # (B, T, 1, A) + (B, 1, S, A) -> (B, T, S, A) -> (B, T, S)
            scores = self.v(torch.tanh(self.w_q(query).unsqueeze(2) + projected.unsqueeze(1))).squeeze(-1)
        else:
            scores = torch.bmm(query, projected.transpose(1, 2))  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)  # (B, T, S)
        return torch.bmm(weights, keys), weights  # (B, T, K)


@dataclass
class DecoderState:
    """What incremental decoding carries from step to step (one row per hypothesis)."""

    h: torch.Tensor  # (L, B, H)
    c: torch.Tensor  # (L, B, H)
    keys: torch.Tensor  # (B, S, H) encoder outputs
    projected: torch.Tensor | None  # (B, S, H) attention key projection
    mask: torch.Tensor  # (B, S)

    def select(self, index: torch.Tensor) -> DecoderState:
        """Reorders rows (for beam search)."""
        return DecoderState(self.h[:, index], self.c[:, index], self.keys[index],
                            None if self.projected is None else self.projected[index], self.mask[index])


class Seq2Seq(nn.Module):
    """The network: encoder, bridge, decoder, attention, tied output."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.emb_dim, padding_idx=c.pad_id)
        self.drop = nn.Dropout(c.dropout)
        lstm_dropout = c.dropout if c.layers > 1 else 0.0
        self.encoder = nn.LSTM(c.emb_dim, c.hidden // 2, c.layers, batch_first=True, bidirectional=True,
                               dropout=lstm_dropout)
        self.bridge_h = nn.Linear(c.hidden, c.hidden)
        self.bridge_c = nn.Linear(c.hidden, c.hidden)
        self.decoder = nn.LSTM(c.emb_dim, c.hidden, c.layers, batch_first=True, dropout=lstm_dropout)
        self.attention = Attention(c.attention, c.hidden, c.hidden, c.attn_dim) if c.attention != "none" else None
        combined = c.hidden * (2 if self.attention is not None else 1)
        self.combine = nn.Linear(combined, c.emb_dim)
        self.out_bias = nn.Parameter(torch.zeros(c.vocab_size))

    # --- encoder ---------------------------------------------------------------------------------------
    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> DecoderState:
        """Encodes ``src`` (``(B, S)`` ids, lengths ``(B,)``) into the decoder's initial state."""
        emb = self.drop(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(emb.float(), src_len.cpu(), batch_first=True, enforce_sorted=False)
        with torch.autocast("cpu", enabled=False):  # oneDNN has no bf16 LSTM here: recurrences stay fp32
            out, (h, c) = self.encoder(packed)
        keys, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, H)
        # (2L, B, H/2) -> (L, B, H): concatenate the directions of each layer
        h = torch.cat([h[0::2], h[1::2]], dim=-1)
        c = torch.cat([c[0::2], c[1::2]], dim=-1)
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_len.unsqueeze(1)  # (B, S)
        projected = self.attention.project_keys(keys) if self.attention is not None else None
        return DecoderState(torch.tanh(self.bridge_h(h)), torch.tanh(self.bridge_c(c)), keys, projected, mask)

    # --- decoder ---------------------------------------------------------------------------------------
    def decode(
        self, tgt_in: torch.Tensor, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Decodes ``tgt_in`` (``(B, T)``) from ``state``; returns logits ``(B, T, V)``, state, attention."""
        emb = self.drop(self.embed(tgt_in))  # (B, T, E)
        with torch.autocast("cpu", enabled=False):  # fp32 recurrence (see encode)
            out, (h, c) = self.decoder(emb.float(), (state.h.float().contiguous(), state.c.float().contiguous()))
        weights = None
        if self.attention is not None:
            context, weights = self.attention(out, state.projected, state.keys, state.mask)  # (B, T, H)
            out = torch.cat([out, context], dim=-1)  # (B, T, 2H)
        feat = torch.tanh(self.combine(self.drop(out)))  # (B, T, E)
        logits = feat @ self.embed.weight.t() + self.out_bias  # (B, T, V), tied to the embedding
        return logits, DecoderState(h, c, state.keys, state.projected, state.mask), weights

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor,
                tgt_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Teacher-forced pass.

        Args:
            src: ``(B, S)`` prompt ids (control tokens first), right-padded.
            src_len: ``(B,)`` prompt lengths.
            tgt_in: ``(B, T)`` ``<bos> piece`` ids, right-padded.
            tgt_out: ``(B, T)`` ``piece <eos>`` ids (padding ignored in the loss); optional.

        Returns:
            ``(logits (B, T, V), mean token loss or None, attention weights (B, T, S) or None)``.
        """
        logits, _, weights = self.decode(tgt_in, self.encode(src, src_len))
        loss = None
        if tgt_out is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt_out.reshape(-1),
                                   ignore_index=self.config.pad_id)
        return logits, loss, weights


class _Stepper:
    """Adapts the network to :func:`models.contract.beam_search`'s step function."""

    def __init__(self, net: Seq2Seq) -> None:
        self.net = net

    def __call__(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        logits, state, _ = self.net.decode(tokens.unsqueeze(1), state)
        return torch.log_softmax(logits[:, -1].float(), dim=-1), state

    @staticmethod
    def select(state: DecoderState, index: torch.Tensor) -> DecoderState:
        return state.select(index)


class Seq2SeqWriter(WriterModel):
    """The seq2seq family behind the model contract (network + tokenizer)."""

    family: ClassVar[str] = "seq2seq"

    def __init__(self, net: Seq2Seq, tokenizer: Any, metadata: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.metadata = metadata or {}
        self._warned_long = False

    @property
    def config(self) -> Seq2SeqConfig:
        """The network's config."""
        return self.net.config

    # --- encoding helpers ------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str, form: str, genre: str) -> list[int]:
        """``<form:…> <genre:…> prompt`` ids, truncated to ``max_src_len`` with a warning."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        ids = control_ids(self.tokenizer, form, genre) + encode_text(self.tokenizer, prompt)
        if len(ids) > self.config.max_src_len:
            if not self._warned_long:
                log.warning("prompt of %d tokens truncated to the encoder's limit of %d", len(ids),
                            self.config.max_src_len)
                self._warned_long = True
            ids = ids[: self.config.max_src_len]
        return ids

    def encode_target(self, text: str) -> list[int]:
        """``piece`` ids truncated so that ``<bos>``/``<eos>`` fit in ``max_tgt_len``."""
        return encode_text(self.tokenizer, text)[: self.config.max_tgt_len - 1]

    def target_words(self, text: str, ids: Sequence[int]) -> int:
        """Words of the part of ``text`` that :meth:`encode_target` kept."""
        return words_scored(text, ids, self.config.max_tgt_len - 1, lambda kept: decode_ids(self.tokenizer, kept))

    def _batch_src(
        self, prompts: Sequence[str], forms: Sequence[str], genres: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self.encode_prompt(p, f, g) for p, f, g in zip(prompts, forms, genres, strict=True)]
        return pad(seqs, self.config.pad_id)

    # --- the contract ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], settings: GenerationSettings | None = None) -> list[str]:
        """Generates one piece per prompt (batched; each row has its own seeded generator)."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1 and not settings.banned_phrases:  # (with them, _sample says beams cannot)
            return [self._beam(p, settings) for p in prompts]
        ids = self._sample(list(prompts), settings)
        texts = [decode_ids(self.tokenizer, row) for row in ids]
        return [finish_text(t, settings) for t in texts]

    @torch.inference_mode()
    def generate_rows(self, rows: Sequence[tuple[str, int]], settings: GenerationSettings | None = None) -> list[str]:
        """One text per ``(prompt, seed)`` row in one batch (each row samples with its own seeded generator)."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1 or not rows:
            return super().generate_rows(rows, settings)
        ids = self._sample([p for p, _ in rows], settings, seeds=[s for _, s in rows])
        texts = [decode_ids(self.tokenizer, row) for row in ids]
        return [finish_text(t, settings) for t in texts]

    def stream(self, prompt: str, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yields text as it is generated; the pieces join to ``generate([prompt], settings)[0]``."""
        settings = settings or GenerationSettings()
        if settings.num_beams > 1 and not settings.banned_phrases:  # beam search has no stable prefix until it ends
            yield self.generate([prompt], settings)[0]
            return
        tokens = (self._phrase_free_ids(prompt, settings, settings.seed) if settings.banned_phrases
                  else (int(step[0]) for step in self._sample_iter([prompt], settings)))
        yield from stream_text(tokens, lambda ids: decode_ids(self.tokenizer, ids), settings.trim_to_sentence,
                               settings.stop)

    def prompt_window(self) -> int:
        """The encoder's limit less the form and genre control tokens."""
        return self.config.max_src_len - 2

    def teacher_logits(self, prompt: str, text: str, settings: GenerationSettings) -> tuple[torch.Tensor, list[int]]:
        """The decoder's logits for each token of ``text`` given the prompt (teacher forcing), and the ids."""
        src, src_len = self._batch_src([prompt], [settings.form], [settings.genre])
        ids = self.encode_target(text)
        logits, _, _ = self.net(src, src_len, torch.tensor([[self.config.bos_id, *ids]]))
        return logits[0, : len(ids)], ids

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], texts: Sequence[str], forms: Sequence[str] | None = None,
              genres: Sequence[str] | None = None, batch_size: int = 32) -> list[tuple[float, int]]:
        """Total NLL (nats, ``<eos>`` included) of each text given its prompt, and its word count."""
        forms = forms or ["story"] * len(prompts)
        genres = genres or [""] * len(prompts)
        out: list[tuple[float, int]] = []
        for start in range(0, len(prompts), batch_size):
            sl = slice(start, start + batch_size)
            src, src_len = self._batch_src(prompts[sl], forms[sl], genres[sl])
            tgt = [self.encode_target(t) for t in texts[sl]]
            tgt_in, _ = pad([[self.config.bos_id] + t for t in tgt], self.config.pad_id)
            tgt_out, _ = pad([t + [self.config.eos_id] for t in tgt], self.config.pad_id)
            logits, _, _ = self.net(src, src_len, tgt_in)
            nll = F.cross_entropy(logits.transpose(1, 2).float(), tgt_out, ignore_index=self.config.pad_id,
                                  reduction="none").sum(dim=1)
            out += [(float(n), self.target_words(t, ids))
                    for n, t, ids in zip(nll.tolist(), texts[sl], tgt, strict=True)]
        return out

    def save(self, directory: Path) -> Path:
        """Writes ``model.pt`` (state dict), ``config.json``, the tokenizer and ``manifest.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), directory / "model.pt")
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        save_tokenizer(self.tokenizer, directory / "tokenizer")
        write_manifest(directory, self.family, {"attention": self.config.attention, **self.metadata})
        return directory

    @classmethod
    def load(cls, directory: Path) -> Seq2SeqWriter:
        """Restores a model saved with :meth:`save`."""
        directory = Path(directory)
        config = Seq2SeqConfig(**json.loads((directory / "config.json").read_text()))
        net = Seq2Seq(config)
        net.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
        manifest = json.loads((directory / "manifest.json").read_text())
        return cls(net, load_tokenizer(directory / "tokenizer"), metadata=manifest)

    # --- decoding internals ----------------------------------------------------------------------------
    @torch.inference_mode()  # on a generator, torch enters the mode at every resume, on whichever thread resumes
    def _sample_iter(self, prompts: list[str], settings: GenerationSettings,
                     seeds: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
        """Yields ``(B,)`` sampled ids per step until every row ended or ``max_new_tokens``.

        Row ``i`` samples with a generator seeded by ``seeds[i]`` (default: ``settings.seed`` for every row).
        """
        src, src_len = self._batch_src(prompts, [settings.form] * len(prompts), [settings.genre] * len(prompts))
        state = self.net.encode(src, src_len)
        gens = [torch.Generator().manual_seed(seed) for seed in (seeds or [settings.seed] * len(prompts))]
        tokens = torch.full((len(prompts),), self.config.bos_id, dtype=torch.long)
        history = torch.empty((len(prompts), 0), dtype=torch.long)
        done = torch.zeros(len(prompts), dtype=torch.bool)
        for _ in range(settings.max_new_tokens):
            logits, state, _ = self.net.decode(tokens.unsqueeze(1), state)
            nxt = sample_next(logits[:, -1], settings, gens, history)
            nxt = torch.where(done, torch.full_like(nxt, self.config.eos_id), nxt)
            done |= nxt == self.config.eos_id
            if done.all():
                break
            yield nxt
            history = torch.cat([history, nxt.unsqueeze(1)], dim=1)
            tokens = nxt

    @torch.inference_mode()
    def _phrase_free_ids(self, prompt: str, settings: GenerationSettings, seed: int) -> Iterator[int]:
        """One row's sampled ids with ``settings.banned_phrases`` kept out (see :mod:`models.banning`)."""
        require_sampling(settings.num_beams)
        src, src_len = self._batch_src([prompt], [settings.form], [settings.genre])
        row = _StateRow(self.net, self.net.encode(src, src_len), self.config.bos_id, settings, seed)
        yield from without_phrases(row, lambda ids: decode_ids(self.tokenizer, ids), settings.banned_phrases,
                                   settings.max_new_tokens, [self.config.eos_id])

    def _sample(self, prompts: list[str], settings: GenerationSettings,
                seeds: Sequence[int] | None = None) -> list[list[int]]:
        if settings.banned_phrases:  # one row at a time: each goes back on its own decoder states
            return [list(self._phrase_free_ids(p, settings, s))
                    for p, s in zip(prompts, seeds or [settings.seed] * len(prompts), strict=True)]
        rows: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        for step in self._sample_iter(prompts, settings, seeds):
            for i, tid in enumerate(step.tolist()):
                if tid == self.config.eos_id:
                    finished[i] = True
                if not finished[i]:
                    rows[i].append(tid)
        return rows

    def _beam(self, prompt: str, settings: GenerationSettings) -> str:
        src, src_len = self._batch_src([prompt], [settings.form], [settings.genre])
        ids, _ = beam_search(_Stepper(self.net), self.net.encode(src, src_len), self.config.bos_id,
                             self.config.eos_id, settings.num_beams, settings.max_new_tokens)
        text = decode_ids(self.tokenizer, ids)
        return finish_text(text, settings)

    @torch.inference_mode()
    def attention_map(
        self, prompt: str, settings: GenerationSettings | None = None
    ) -> tuple[list[str], list[str], torch.Tensor]:
        """Generates a piece and returns (prompt tokens, generated tokens, weights ``(T, S)``).

        Raises:
            ValueError: If the model has no attention (the ablation).
        """
        if self.net.attention is None:
            raise ValueError("this seq2seq model was trained without attention")
        settings = settings or GenerationSettings()
        ids = self._sample([prompt], settings)[0]
        src, src_len = self._batch_src([prompt], [settings.form], [settings.genre])
        tgt_in = torch.tensor([[self.config.bos_id] + ids])
        _, _, weights = self.net(src, src_len, tgt_in)
        src_tokens = [self.tokenizer.decode([t]) for t in src[0].tolist()]
        out_tokens = [self.tokenizer.decode([t]) for t in ids] + ["<eos>"]
        return src_tokens, out_tokens[: weights.size(1)], weights[0].float()


class _StateRow:
    """One row of the decoder that can go back (a :class:`models.banning.Rewindable`): its state per position."""

    def __init__(self, net: Seq2Seq, state: Any, bos_id: int, settings: GenerationSettings, seed: int) -> None:
        self.net, self.settings = net, settings
        self.generator = torch.Generator().manual_seed(int(seed))
        self.written: list[int] = []
        self.steps = [self._step(bos_id, state)]  # steps[k]: (logits, state) after k written tokens

    def _step(self, token: int, state: Any) -> tuple[torch.Tensor, Any]:
        logits, state, _ = self.net.decode(torch.tensor([[int(token)]]), state)
        return logits[0, -1], state

    def sample(self, banned: frozenset[int]) -> int:
        return draw_one(self.steps[-1][0], self.settings, self.generator, self.written, sorted(banned))

    def read(self, token: int) -> None:
        self.written.append(int(token))
        self.steps.append(self._step(token, self.steps[-1][1]))

    def rewind(self, written: Sequence[int]) -> None:
        self.written = list(written)
        del self.steps[len(written) + 1:]


def pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads id lists into ``(B, T)`` and returns it with the lengths ``(B,)``."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), max(1, int(lengths.max()) if len(seqs) else 1)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


def build_writer(tokenizer: Any, **overrides: Any) -> Seq2SeqWriter:
    """A freshly initialised writer for ``tokenizer`` with config ``overrides``."""
    config = Seq2SeqConfig(vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id, bos_id=tokenizer.bos_token_id,
                           eos_id=tokenizer.eos_token_id, **overrides)
    return Seq2SeqWriter(Seq2Seq(config), tokenizer)
