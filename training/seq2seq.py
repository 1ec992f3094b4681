"""Training loop for the seq2seq family (and the GAN's MLE phase): plain PyTorch, measured.

Batches group pieces of similar length (less padding), the order is reshuffled each epoch with a fixed
seed, gradients are clipped, bf16 autocast is used on the CPU when asked, validation loss and per-word
perplexity are computed every epoch, and training stops early when validation stops improving; the
best weights are restored at the end.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from core.threads import configure_threads
from models.seq2seq import Seq2SeqWriter, pad
from models.text import word_count
from training.config import TrainConfig, resolve_bf16, training_pieces

log = logging.getLogger(__name__)


@dataclass
class Example:
    """One encoded training pair."""

    src: list[int]
    tgt: list[int]
    words: int


def encode_frame(writer: Seq2SeqWriter, frame: pd.DataFrame) -> list[Example]:
    """Encodes a corpus frame (``prompt, text, form, genre``) into examples."""
    out = []
    for p, t, f, g in zip(frame["prompt"], frame["text"], frame["form"], frame["genre"], strict=True):
        tgt = writer.encode_target(t)
        out.append(Example(writer.encode_prompt(p, f, g), tgt, writer.target_words(t, tgt)))
    return out


def make_batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Length-bucketed batches: shuffle, sort chunks of 50 batches by target length, cut, shuffle batches."""
    order = list(examples)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start: start + chunk], key=lambda e: len(e.tgt))
        batches += [part[i: i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(batch: Sequence[Example], writer: Seq2SeqWriter) -> dict[str, torch.Tensor]:
    """Pads a batch into ``src, src_len, tgt_in, tgt_out`` tensors."""
    c = writer.config
    src, src_len = pad([e.src for e in batch], c.pad_id)
    tgt_in, _ = pad([[c.bos_id, *e.tgt] for e in batch], c.pad_id)
    tgt_out, _ = pad([[*e.tgt, c.eos_id] for e in batch], c.pad_id)
    return {"src": src, "src_len": src_len, "tgt_in": tgt_in, "tgt_out": tgt_out}


@torch.inference_mode()
def evaluate(writer: Seq2SeqWriter, examples: Sequence[Example], batch_size: int = 64,
             bf16: bool = False) -> dict[str, float]:
    """Validation token loss and per-word perplexity (total NLL ÷ whitespace words)."""
    net = writer.net.eval()
    total_nll, tokens, words = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start: start + batch_size])
        b = collate(batch, writer)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _, _ = net(b["src"], b["src_len"], b["tgt_in"])
        nll = F.cross_entropy(logits.transpose(1, 2).float(), b["tgt_out"], ignore_index=writer.config.pad_id,
                              reduction="sum")
        total_nll += float(nll)
        tokens += int((b["tgt_out"] != writer.config.pad_id).sum())
        words += sum(e.words for e in batch)
    loss = total_nll / max(1, tokens)
    return {"val_loss": loss, "val_ppl_token": math.exp(min(loss, 50)),
            "val_ppl_word": math.exp(min(total_nll / max(1, words), 50))}


EpochCallback = Callable[[int, dict[str, float]], None]


def train(writer: Seq2SeqWriter, train_frame: pd.DataFrame, val_frame: pd.DataFrame, cfg: TrainConfig,
          on_epoch: EpochCallback | None = None) -> pd.DataFrame:
    """Trains ``writer`` in place and returns the per-epoch history.

    Args:
        writer: A seq2seq writer (fresh or pre-trained).
        train_frame: Training pieces.
        val_frame: Validation pieces (early stopping and reported metrics).
        cfg: Optimisation settings.
        on_epoch: Called with ``(epoch, metrics)`` after every epoch (e.g. to log to MLflow).

    Returns:
        One row per epoch: ``epoch, train_loss, val_loss, val_ppl_token, val_ppl_word, tokens_per_s, seconds``.

    Raises:
        ValueError: If there is nothing to train or validate on.
    """
    train_frame = training_pieces(train_frame, val_frame, cfg.max_train_pieces, cfg.seed)
    configure_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    bf16 = resolve_bf16(cfg.bf16)
    train_ex, val_ex = encode_frame(writer, train_frame), encode_frame(writer, val_frame)
    net = writer.net
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_total = cfg.epochs * math.ceil(len(train_ex) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps_total, 1),
                                                pct_start=0.05, anneal_strategy="cos")
    best, best_state, bad_epochs, history = float("inf"), None, 0, []
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        t0, seen_tokens, loss_sum, n_batches = time.perf_counter(), 0, 0.0, 0
        for i, batch in enumerate(make_batches(train_ex, cfg.batch_size, rng), start=1):
            b = collate(batch, writer)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, loss, _ = net(b["src"], b["src_len"], b["tgt_in"], b["tgt_out"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}, batch {i}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
            sched.step()
            seen_tokens += int((b["tgt_out"] != writer.config.pad_id).sum())
            loss_sum += float(loss.detach())
            n_batches += 1
            if cfg.log_every and i % cfg.log_every == 0:
                log.info("epoch %d step %d loss %.3f %.0f tokens/s", epoch, i, loss_sum / n_batches,
                         seen_tokens / (time.perf_counter() - t0))
            if cfg.time_budget_s and time.perf_counter() - started > cfg.time_budget_s:
                break
        seconds = time.perf_counter() - t0
        metrics = {"train_loss": loss_sum / max(1, n_batches), **evaluate(writer, val_ex, bf16=bf16),
                   "tokens_per_s": seen_tokens / seconds, "seconds": seconds}
        history.append({"epoch": epoch, **metrics})
        log.info("epoch %d: train loss %.3f, val loss %.3f, val per-word ppl %.2f, %.0f tokens/s", epoch,
                 metrics["train_loss"], metrics["val_loss"], metrics["val_ppl_word"], metrics["tokens_per_s"])
        if on_epoch:
            on_epoch(epoch, metrics)
        if metrics["val_loss"] < best - 1e-4:
            best, best_state, bad_epochs = metrics["val_loss"], copy.deepcopy(net.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                log.info("early stop after epoch %d: no validation improvement in %d epochs", epoch, cfg.patience)
                break
        if cfg.time_budget_s and time.perf_counter() - started > cfg.time_budget_s:
            log.info("time budget of %.0f s reached after epoch %d", cfg.time_budget_s, epoch)
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return pd.DataFrame(history)


def unigram_per_word_ppl(train_texts: Sequence[str], val_texts: Sequence[str], tokenizer: object) -> float:
    """Per-word perplexity of a unigram token model (add-one smoothed) fit on the train texts.

    The baseline a trained model must beat: it knows token frequencies but nothing of context.
    """
    from models.tokenizer import encode_text

    counts = torch.ones(len(tokenizer))  # add-one
    for t in train_texts:
        ids = encode_text(tokenizer, t) + [tokenizer.eos_token_id]
        counts += torch.bincount(torch.tensor(ids), minlength=len(tokenizer)).float()
    logp = torch.log(counts / counts.sum())
    nll, words = 0.0, 0
    for t in val_texts:
        ids = encode_text(tokenizer, t) + [tokenizer.eos_token_id]
        nll -= float(logp[torch.tensor(ids)].sum())
        words += word_count(t)
    return math.exp(nll / max(1, words))
