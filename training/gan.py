"""Adversarial training of the GAN family, and the honest comparison with its MLE starting point.

:func:`train_gan` runs the three phases (MLE pre-training when starting from scratch, discriminator
pre-training, adversarial rounds) and returns the trained :class:`~models.gan.GanWriter`, the MLE
generator it started from, and one history row per round. Divergence is caught: a non-finite loss, or
a discriminator that is right ≥ 99 % of the time for ``collapse_patience`` rounds while the generator's
MLE loss has more than doubled, stops training with a message and restores the last good weights.

:func:`quality_diversity` is the comparison: BLEU-4 against the reference pieces, self-BLEU-4 and
distinct-2 of samples for the same validation prompts at several temperatures.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from models.contract import GenerationSettings
from models.gan import (
    Discriminator,
    DiscriminatorConfig,
    GanConfig,
    GanWriter,
    check_conditioning,
    dense_returns,
    dense_rewards,
    discriminator_loss,
    last_logit,
    policy_gradient_loss,
    real_batch,
    rollout_rewards,
    sample_sequences,
    sequence_log_probs,
)
from models.metrics import bleu4, distinct_n, self_bleu4
from models.seq2seq import Seq2SeqWriter
from training.config import training_pieces
from training.seq2seq import encode_frame, evaluate

log = logging.getLogger(__name__)
RoundCallback = Callable[[int, dict[str, float]], None]


@dataclass
class GanResult:
    """What adversarial training produced."""

    writer: GanWriter
    mle_writer: Seq2SeqWriter
    history: pd.DataFrame
    stop_reason: str


class _Batches:
    """Random prompt/piece batches from a frame, seeded."""

    def __init__(self, writer: Seq2SeqWriter, frame: pd.DataFrame, batch_size: int, seed: int) -> None:
        self.writer, self.frame, self.batch_size = writer, frame.reset_index(drop=True), batch_size
        self.rng = random.Random(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """``src, src_len`` of the prompts and the reference texts of one batch."""
        rows = self.frame.iloc[self.rng.sample(range(len(self.frame)), min(self.batch_size, len(self.frame)))]
        src, src_len = self.writer._batch_src(list(rows["prompt"]), list(rows["form"]), list(rows["genre"]))
        return src, src_len, list(rows["text"])


def _accuracy(disc: Discriminator, src: torch.Tensor, src_len: torch.Tensor, tokens: torch.Tensor,
              mask: torch.Tensor, real: bool) -> float:
    with torch.no_grad():
        judged = last_logit(disc(src, src_len, tokens), mask) > 0
    return float((judged == real).float().mean())


def discriminator_step(disc: Discriminator, opt: torch.optim.Optimizer, writer: Seq2SeqWriter, batches: _Batches,
                       cfg: GanConfig, gen: torch.Generator) -> dict[str, float]:
    """One discriminator update on a real batch and generated samples for the same prompts."""
    src, src_len, texts = batches.next()
    real, real_mask = real_batch(writer, texts, cfg.max_len)
    writer.net.eval()
    fake, fake_mask = sample_sequences(writer, src, src_len, cfg.max_len, cfg.temperature, gen)
    disc.train()
    loss = discriminator_loss(disc(src, src_len, real), real_mask, True) + \
        discriminator_loss(disc(src, src_len, fake), fake_mask, False)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
    opt.step()
    disc.eval()
    return {"d_loss": float(loss.detach()), "d_acc_real": _accuracy(disc, src, src_len, real, real_mask, True),
            "d_acc_fake": _accuracy(disc, src, src_len, fake, fake_mask, False),
            "d_tokens": float(real_mask.sum() + fake_mask.sum())}


def generator_step(writer: Seq2SeqWriter, opt: torch.optim.Optimizer, disc: Discriminator, batches: _Batches,
                   cfg: GanConfig, gen: torch.Generator) -> dict[str, float]:
    """One policy-gradient update of the generator with the discriminator's reward (plus entropy and MLE terms)."""
    src, src_len, texts = batches.next()
    writer.net.eval()
    tokens, mask = sample_sequences(writer, src, src_len, cfg.max_len, cfg.temperature, gen)
    disc.eval()
    if cfg.reward == "dense":
        rewards = dense_rewards(disc, src, src_len, tokens, mask)
        returns = dense_returns(rewards, mask, cfg.gamma)
    else:
        rewards = rollout_rewards(writer, disc, src, src_len, tokens, mask, cfg.rollouts, cfg.temperature, gen)
        returns = rewards
    writer.net.train()
    log_probs, entropy = sequence_log_probs(writer, src, src_len, tokens)
    pg = policy_gradient_loss(log_probs, returns, mask, cfg.baseline)
    ent = (entropy * mask).sum() / mask.sum().clamp(min=1)
    loss = pg - cfg.entropy_weight * ent
    mle = torch.tensor(0.0)
    if cfg.mle_weight > 0:
        real, real_mask = real_batch(writer, texts, cfg.max_len)
        real_lp, _ = sequence_log_probs(writer, src, src_len, real)
        mle = -(real_lp * real_mask).sum() / real_mask.sum().clamp(min=1)
        loss = loss + cfg.mle_weight * mle
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(writer.net.parameters(), 1.0)
    opt.step()
    writer.net.eval()
    return {"g_loss": float(loss.detach()), "pg_loss": float(pg.detach()), "entropy": float(ent.detach()),
            "g_mle_loss": float(mle.detach()),
            "mean_reward": float((rewards * mask).sum() / mask.sum().clamp(min=1)), "g_tokens": float(mask.sum())}


def sample_metrics(writer: Seq2SeqWriter, frame: pd.DataFrame, temperature: float, max_new_tokens: int,
                   seed: int = 0) -> dict[str, Any]:
    """BLEU-4 against the references, self-BLEU-4 and distinct-2 of one sample per prompt (fixed seed)."""
    texts = []
    for form, group in frame.groupby(["form", "genre"], sort=False):
        settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=0, top_p=1.0,
                                      repetition_penalty=1.0, seed=seed, form=form[0], genre=form[1])
        texts += list(zip(group.index, writer.generate(list(group["prompt"]), settings), strict=True))
    samples = [t for _, t in sorted(texts)]
    refs = list(frame.sort_index()["text"])
    return {"bleu4": bleu4(samples, refs), "self_bleu4": self_bleu4(samples), "distinct2": distinct_n(samples, 2),
            "samples": samples}


def quality_diversity(writers: dict[str, Seq2SeqWriter], frame: pd.DataFrame, temperatures: Sequence[float],
                      max_new_tokens: int, val_ppl: dict[str, float]) -> pd.DataFrame:
    """The temperature sweep: one row per (model, temperature) with BLEU-4, self-BLEU-4, distinct-2, val ppl."""
    rows = []
    for name, writer in writers.items():
        for temperature in temperatures:
            m = sample_metrics(writer, frame, temperature, max_new_tokens)
            rows.append({"model": name, "temperature": temperature, "bleu4": m["bleu4"],
                         "self_bleu4": m["self_bleu4"], "distinct2": m["distinct2"], "val_ppl_word": val_ppl[name]})
    return pd.DataFrame(rows)


def train_gan(start: Seq2SeqWriter, train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: GanConfig,
              disc_cfg: DiscriminatorConfig, on_round: RoundCallback | None = None,
              pretrain: Callable[[Seq2SeqWriter], Any] | None = None) -> GanResult:
    """Trains a GAN generator from ``start`` (a copy is made; ``start`` is left untouched).

    Args:
        start: The MLE generator to fine-tune (``start_from: seq2seq``) or a fresh one (``scratch``).
        train_frame: Training pieces.
        val_frame: Validation pieces (per-word perplexity and the BLEU / self-BLEU prompts).
        cfg: Adversarial settings.
        disc_cfg: Discriminator settings.
        on_round: Called with ``(round, metrics)`` after every round (round 0 = before adversarial training).
        pretrain: MLE pre-training applied to the generator when ``cfg.start_from == "scratch"``.

    Returns:
        The GAN writer, the MLE writer it started from, per-round history and why training stopped.

    Raises:
        ValueError: For inconsistent settings (named) or empty frames.
    """
    check_conditioning(cfg, disc_cfg)
    training_pieces(train_frame, val_frame, 0, cfg.seed, what="GAN training")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mle_writer = start
    if cfg.start_from == "scratch":
        if pretrain is None:
            raise ValueError("GanConfig.start_from is 'scratch' but no MLE pre-training was given")
        pretrain(mle_writer)
    writer = GanWriter(copy.deepcopy(mle_writer.net), mle_writer.tokenizer)
    disc = Discriminator(writer.config.vocab_size, writer.config.pad_id, disc_cfg)
    g_opt = torch.optim.Adam(writer.net.parameters(), lr=cfg.g_lr)  # no weight decay: only the losses move it
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr)
    batches = _Batches(writer, train_frame, cfg.batch_size, cfg.seed)
    val_examples = encode_frame(writer, val_frame.head(cfg.eval_pieces))
    eval_frame = val_frame.head(cfg.eval_prompts)

    def snapshot(round_no: int, extra: dict[str, float]) -> dict[str, float]:
        m = sample_metrics(writer, eval_frame, 1.0, cfg.eval_max_new_tokens)
        row = {"round": round_no, **extra, "val_ppl_word": evaluate(writer, val_examples)["val_ppl_word"],
               "bleu4": m["bleu4"], "self_bleu4": m["self_bleu4"], "distinct2": m["distinct2"]}
        if on_round:
            on_round(round_no, {k: v for k, v in row.items() if k != "round"})
        return row

    t0 = time.perf_counter()
    d_stats: dict[str, float] = {}
    for _ in range(cfg.d_pretrain_steps):
        d_stats = discriminator_step(disc, d_opt, writer, batches, cfg, gen)
    history = [snapshot(0, {**d_stats, "seconds": time.perf_counter() - t0})]
    log.info("discriminator pre-trained (%d steps): accuracy real %.2f, generated %.2f", cfg.d_pretrain_steps,
             d_stats.get("d_acc_real", float("nan")), d_stats.get("d_acc_fake", float("nan")))
    good_state, stop_reason, suspicious = copy.deepcopy(writer.net.state_dict()), "completed", 0
    first_mle: float | None = None
    for round_no in range(1, cfg.rounds + 1):
        g_stats = [generator_step(writer, g_opt, disc, batches, cfg, gen) for _ in range(cfg.g_steps)]
        stats = {k: sum(s[k] for s in g_stats) / len(g_stats) for k in g_stats[0]}
        weights_ok = all(bool(torch.isfinite(p).all()) for p in writer.net.parameters())
        if not weights_ok or not all(math.isfinite(v) for v in stats.values()):
            stop_reason = f"diverged: non-finite loss in round {round_no}; kept the weights of round {round_no - 1}"
            break
        d_all = [discriminator_step(disc, d_opt, writer, batches, cfg, gen) for _ in range(cfg.d_steps)]
        stats |= {k: sum(s[k] for s in d_all) / len(d_all) for k in d_all[0]}
        if not all(math.isfinite(v) for v in stats.values()):
            stop_reason = f"diverged: non-finite discriminator loss in round {round_no}; kept the weights of round " \
                f"{round_no - 1}"
            break
        first_mle = first_mle if first_mle is not None else stats["g_mle_loss"]
        confident = stats["d_acc_real"] >= 0.99 and stats["d_acc_fake"] >= 0.99
        exploding = cfg.mle_weight > 0 and stats["g_mle_loss"] > 2 * first_mle
        suspicious = suspicious + 1 if confident and exploding else 0
        if suspicious >= cfg.collapse_patience:
            stop_reason = (f"diverged: the discriminator was right ≥ 99 % of the time for {suspicious} rounds while "
                           f"the generator's MLE loss rose from {first_mle:.2f} to {stats['g_mle_loss']:.2f}; "
                           f"kept the last good weights")
            break
        history.append(snapshot(round_no, {**stats, "seconds": time.perf_counter() - t0}))
        log.info("round %d: reward %.3f, D acc real %.2f / generated %.2f, MLE loss %.3f, val ppl/word %.2f, "
                 "BLEU-4 %.3f, self-BLEU-4 %.3f", round_no, stats["mean_reward"], stats["d_acc_real"],
                 stats["d_acc_fake"], stats["g_mle_loss"], history[-1]["val_ppl_word"], history[-1]["bleu4"],
                 history[-1]["self_bleu4"])
        if suspicious == 0:
            good_state = copy.deepcopy(writer.net.state_dict())
    if stop_reason != "completed":
        log.warning("GAN training stopped: %s", stop_reason)
    writer.net.load_state_dict(good_state)
    writer.net.eval()
    return GanResult(writer, mle_writer, pd.DataFrame(history), stop_reason)
