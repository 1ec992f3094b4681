"""The text GAN family: a prompt-conditioned generator trained adversarially against a discriminator.

- **Generator**: the attention seq2seq of :mod:`models.seq2seq` (encoder over ``<form> <genre> prompt``,
  LSTM decoder with attention). The GAN is adversarial *fine-tuning* of a maximum-likelihood generator:
  either the trained seq2seq model artifact (the default, so GAN vs MLE compares the same network
  before and after) or a generator pre-trained here by MLE. :class:`GanWriter` is a seq2seq writer
  under the family name ``gan``: generation, streaming, scoring and packaging are the seq2seq's.
- **Discriminator** (:class:`Discriminator`): an LSTM that reads the piece token by token, its state
  initialised from a GRU summary of the prompt, and emits a real/generated logit at *every* step, so
  it gives dense rewards and can still judge whole sequences (its last step).
- **Training** (:func:`training.gan.train_gan`): discriminator pre-training on real pieces vs
  samples, then rounds of generator policy-gradient updates (REINFORCE with the discriminator's reward,
  a per-step batch-mean baseline, an entropy bonus and an MLE term against collapse) and discriminator
  updates on fresh samples.

Rewards (``reward``): ``dense`` (ScratchGAN-style, de Masson d'Autume et al. 2019: ``r_t = D(x_≤t)``,
discounted returns) or ``rollout`` (SeqGAN, Yu et al. 2017: ``Q_t`` = mean of the discriminator's
whole-sequence score over ``rollouts`` Monte-Carlo completions of ``x_≤t``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.configs import DiscriminatorConfig, GanConfig
from models.seq2seq import Seq2SeqWriter, pad


class GanWriter(Seq2SeqWriter):
    """A seq2seq generator trained adversarially; the ``gan`` family behind the model contract."""

    family: ClassVar[str] = "gan"


def check_conditioning(gan: GanConfig, disc: DiscriminatorConfig) -> None:
    """A conditional GAN needs a discriminator that sees prompts; raises ValueError naming both settings."""
    if gan.conditional and not disc.use_prompt:
        raise ValueError("GanConfig.conditional is true but DiscriminatorConfig.use_prompt is false: the "
                         "discriminator could not tell whether a piece fits its prompt")


class Discriminator(nn.Module):
    """Step-wise real/generated classifier of ``(prompt, piece prefix)`` pairs."""

    def __init__(self, vocab_size: int, pad_id: int, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(vocab_size, config.emb_dim, padding_idx=pad_id)
        self.prompt_rnn = nn.GRU(config.emb_dim, config.hidden, batch_first=True) if config.use_prompt else None
        self.rnn = nn.LSTM(config.emb_dim, config.hidden, batch_first=True)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden, 1)

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T)``: step ``t`` judges ``tokens[:, :t + 1]`` (given the prompt ``src``)."""
        batch = tokens.size(0)
        h0 = torch.zeros(1, batch, self.config.hidden)
        if self.prompt_rnn is not None:
            packed = pack_padded_sequence(self.embed(src), src_len.clamp(min=1).cpu(), batch_first=True,
                                          enforce_sorted=False)
            _, h_prompt = self.prompt_rnn(packed)  # (1, B, H)
            h0 = torch.tanh(h_prompt)
        out, _ = self.rnn(self.drop(self.embed(tokens)), (h0, torch.zeros_like(h0)))  # (B, T, H)
        return self.out(self.drop(out)).squeeze(-1)  # (B, T)


def last_logit(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The logit at each row's last valid step ``(B,)`` (the whole-sequence judgement)."""
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    return logits.gather(1, last.unsqueeze(1)).squeeze(1)


def discriminator_loss(logits: torch.Tensor, mask: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy at every valid step (real → 1, generated → 0)."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp(min=1)


# --- sampling and log-probabilities ---------------------------------------------------------------------
@torch.no_grad()
def sample_sequences(writer: Seq2SeqWriter, src: torch.Tensor, src_len: torch.Tensor, max_len: int,
                     temperature: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples one piece per prompt: ``tokens (B, L)`` (``<eos>`` kept, then padding) and ``mask (B, L)``."""
    c = writer.config
    state = writer.net.encode(src, src_len)
    token = torch.full((src.size(0),), c.bos_id, dtype=torch.long)
    done = torch.zeros(src.size(0), dtype=torch.bool)
    out, mask = [], []
    for _ in range(max_len):
        logits, state, _ = writer.net.decode(token.unsqueeze(1), state)
        probs = torch.softmax(logits[:, -1].float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        out.append(torch.where(done, torch.full_like(token, c.pad_id), token))
        mask.append(~done)
        done |= token == c.eos_id
        if done.all():
            break
    return torch.stack(out, dim=1), torch.stack(mask, dim=1).float()


def sequence_log_probs(writer: Seq2SeqWriter, src: torch.Tensor, src_len: torch.Tensor,
                       tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step ``log π(x_t | x_<t, prompt)`` and entropy, both ``(B, L)``, with gradients (teacher forcing)."""
    c = writer.config
    tgt_in = torch.cat([torch.full((tokens.size(0), 1), c.bos_id, dtype=torch.long), tokens[:, :-1]], dim=1)
    tgt_in = tgt_in.masked_fill(tgt_in == c.pad_id, c.eos_id)  # positions after the end are masked anyway
    logits, _, _ = writer.net(src, src_len, tgt_in)
    log_p = torch.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    picked = log_p.gather(2, tokens.clamp(min=0).unsqueeze(2)).squeeze(2)
    entropy = -(log_p.exp() * log_p).sum(dim=-1)
    return picked, entropy


# --- rewards -----------------------------------------------------------------------------------------
def dense_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted returns ``R_t = Σ_{s≥t} γ^(s-t) r_s`` over valid steps, ``(B, L)``."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.size(0))
    for t in range(rewards.size(1) - 1, -1, -1):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


@torch.no_grad()
def dense_rewards(disc: Discriminator, src: torch.Tensor, src_len: torch.Tensor, tokens: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """``r_t = D(prompt, x_≤t)`` in [0, 1] at valid steps, 0 elsewhere, ``(B, L)``."""
    return torch.sigmoid(disc(src, src_len, tokens)) * mask


@torch.no_grad()
def rollout_rewards(writer: Seq2SeqWriter, disc: Discriminator, src: torch.Tensor, src_len: torch.Tensor,
                    tokens: torch.Tensor, mask: torch.Tensor, rollouts: int, temperature: float,
                    generator: torch.Generator) -> torch.Tensor:
    """SeqGAN's ``Q_t``: mean whole-sequence score of ``rollouts`` completions of each prefix, ``(B, L)`` in [0, 1].

    The last valid step of a row is scored on the sampled sequence itself.
    """
    c = writer.config
    batch, length = tokens.shape
    rewards = torch.zeros(batch, length)
    state = writer.net.encode(src, src_len)
    prev = torch.full((batch,), c.bos_id, dtype=torch.long)
    src_rep, len_rep = src.repeat_interleave(rollouts, 0), src_len.repeat_interleave(rollouts, 0)
    for t in range(length):
        _, state, _ = writer.net.decode(prev.unsqueeze(1), state)  # state after reading x_<t; x_t decided next
        prev = tokens[:, t].masked_fill(mask[:, t] == 0, c.eos_id)
        if t == length - 1:
            break
        # continue from x_≤t: feed x_t, then sample the rest, `rollouts` times per row
        roll_state = state.select(torch.arange(batch).repeat_interleave(rollouts))
        token = prev.repeat_interleave(rollouts)
        done = (mask[:, t] == 0).repeat_interleave(rollouts) | (token == c.eos_id)
        cont = [token]
        for _ in range(t + 1, length):
            logits, roll_state, _ = writer.net.decode(token.unsqueeze(1), roll_state)
            token = torch.multinomial(torch.softmax(logits[:, -1].float() / temperature, dim=-1), 1,
                                      generator=generator).squeeze(1)
            token = torch.where(done, torch.full_like(token, c.pad_id), token)
            cont.append(token)
            done |= token == c.eos_id
        prefix = tokens[:, :t].repeat_interleave(rollouts, 0)
        full = torch.cat([prefix, torch.stack(cont, dim=1)], dim=1)  # (B·N, L)
        full_mask = _mask_through_eos(full, c.eos_id, c.pad_id)
        scores = torch.sigmoid(last_logit(disc(src_rep, len_rep, full), full_mask)).view(batch, rollouts)
        rewards[:, t] = scores.mean(dim=1)
    whole = torch.sigmoid(last_logit(disc(src, src_len, tokens), mask))
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    rewards[torch.arange(batch), last] = whole
    return rewards * mask


def _mask_through_eos(tokens: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """1 up to and including each row's first ``<eos>`` (or all non-padding when there is none)."""
    is_end = (tokens == eos_id).long()
    before_end = (is_end.cumsum(dim=1) - is_end) == 0
    return (before_end & (tokens != pad_id)).float()


# --- losses ------------------------------------------------------------------------------------------
def policy_gradient_loss(log_probs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                         baseline: str) -> torch.Tensor:
    """REINFORCE: ``-Σ (R_t − b_t) log π(x_t) / Σ mask``; ``b_t`` the batch mean of ``R_t`` at step t (or 0)."""
    if baseline == "batch":
        b = (returns * mask).sum(dim=0) / mask.sum(dim=0).clamp(min=1)  # (L,)
        advantage = (returns - b) * mask
    else:
        advantage = returns * mask
    return -(advantage.detach() * log_probs * mask).sum() / mask.sum().clamp(min=1)


def real_batch(writer: Seq2SeqWriter, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real pieces cut to ``max_len`` tokens (``<eos>`` kept when it fits), ``(B, L)`` and mask."""
    c = writer.config
    seqs = []
    for text in texts:
        ids = writer.encode_target(text)
        seqs.append(ids[:max_len] if len(ids) >= max_len else ids + [c.eos_id])
    tokens, _ = pad(seqs, c.pad_id)
    return tokens, _mask_through_eos(tokens, c.eos_id, c.pad_id)
