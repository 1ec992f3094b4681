"""Training the Transformer family with the Hugging Face ``Trainer``.

What the ``Trainer`` brings: evaluation every epoch, early stopping on validation loss with the best
weights restored (``load_best_model_at_end``), a cosine schedule with warm-up, gradient clipping, bf16
autocast when asked (only honoured on CPUs with native bf16, see :func:`training.config.resolve_bf16`),
deterministic seeding and a progress bar. What this module adds: the prompt-masked examples, the exact
validation per-word perplexity (summed NLL over whitespace words, through
``preprocess_logits_for_metrics`` so full logits are never kept), a periodic log line with step, loss
and tokens/s, a stop on a non-finite loss, an optional wall-clock budget, and one history row per
epoch. The ``Trainer``'s own experiment-tracker callbacks are off (``report_to="none"``): the caller
logs to the stack's MLflow run through ``on_epoch``, so there is exactly one MLflow run per step.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from core.threads import configure_threads
from models.transformer import TransformerWriter, collate_examples, sequence_nll
from training.config import TransformerTrainConfig, resolve_bf16, training_pieces

log = logging.getLogger(__name__)


def length_request(prompt: str, text: str) -> int:
    """The length a training example asks for: its own words rounded to tens, for half the examples, else 0.

    Which half is fixed by a hash of the pair, so runs are reproducible; the model learns to follow a
    length request and to choose a length itself.
    """
    digest = hashlib.sha256(f"{prompt}\x00{text}".encode()).digest()
    return max(10, round(len(text.split()) / 10) * 10) if digest[0] % 2 == 0 else 0


class _Examples(torch.utils.data.Dataset):
    """Encoded ``(input_ids, labels)`` pairs as ``Trainer`` rows (chat layout: half with a length request)."""

    def __init__(self, writer: TransformerWriter, frame: pd.DataFrame, length_requests: bool = False) -> None:
        encoded = [writer.encode_scored(p, t, f, g, target_words=length_request(p, t) if length_requests else 0)
                   for p, t, f, g in zip(frame["prompt"], frame["text"], frame["form"], frame["genre"], strict=True)]
        self.rows = [(ids, labels) for ids, labels, _ in encoded]
        self.words = sum(words for _, _, words in encoded)  # of the part of each piece that fits the context
        self.lengths = [len(ids) for ids, _ in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        ids, labels = self.rows[i]
        return {"input_ids": ids, "labels": labels}


class _Collator:
    """Pads rows into a batch and counts the tokens it has handed out (for tokens/s)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id
        self.tokens = 0

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        batch = collate_examples([(r["input_ids"], r["labels"]) for r in rows], self.pad_id)
        self.tokens += int(batch["attention_mask"].sum())
        return batch


EpochCallback = Callable[[int, dict[str, float]], None]


class _Reporter(TrainerCallback):
    """Log line every ``log_every`` steps, NaN stop, time budget, and one history row per epoch."""

    def __init__(self, cfg: TransformerTrainConfig, collator: _Collator, on_epoch: EpochCallback | None,
                 world: int = 1) -> None:
        self.cfg, self.collator, self.on_epoch, self.world = cfg, collator, on_epoch, world
        self.history: list[dict[str, float]] = []
        self.started = self.epoch_started = time.perf_counter()
        self.epoch_tokens_start = 0
        self.losses: list[float] = []
        self.stopped_for_budget = False

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.epoch_started, self.epoch_tokens_start, self.losses = time.perf_counter(), self.collator.tokens, []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"training loss became {logs['loss']} at step {state.global_step}")
        self.losses.append(float(logs["loss"]))
        rate = (self.collator.tokens - self.epoch_tokens_start) / max(1e-9, time.perf_counter() - self.epoch_started)
        elapsed = time.perf_counter() - self.started
        left = (state.max_steps - state.global_step) * elapsed / max(1, state.global_step)
        if self.cfg.time_budget_s:
            left = min(left, max(0.0, self.cfg.time_budget_s - elapsed))
        log.info("step %d/%d loss %.3f lr %.2e %.0f tokens/s, ~%.0f s left", state.global_step, state.max_steps,
                 logs["loss"], logs.get("learning_rate", float("nan")), rate, left)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.cfg.time_budget_s:
            return
        over = time.perf_counter() - self.started > self.cfg.time_budget_s
        if self.world > 1:  # the processes stop together: one that stopped alone would leave the others waiting
            flag = torch.tensor([float(over)])
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            over = bool(flag.item())
        if over:
            log.info("time budget of %.0f s reached at step %d", self.cfg.time_budget_s, state.global_step)
            self.stopped_for_budget = True
            control.should_training_stop = control.should_evaluate = control.should_save = True

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        metrics = metrics or {}
        seconds = time.perf_counter() - self.epoch_started
        tokens = self.collator.tokens - self.epoch_tokens_start
        if self.world > 1:  # every process calls this after the same evaluation: sum their tokens
            counted = torch.tensor([float(tokens)])
            torch.distributed.all_reduce(counted)
            tokens = int(counted.item())
        row = {"train_loss": float(np.mean(self.losses)) if self.losses else float("nan"),
               "val_loss": float(metrics["eval_val_loss"]), "val_ppl_token": float(metrics["eval_val_ppl_token"]),
               "val_ppl_word": float(metrics["eval_val_ppl_word"]),
               "tokens_per_s": tokens / max(1e-9, seconds), "seconds": seconds}
        epoch = len(self.history) + 1
        self.history.append({"epoch": epoch, **row})
        log.info("epoch %d: train loss %.3f, val loss %.3f, val per-word ppl %.2f, %.0f tokens/s", epoch,
                 row["train_loss"], row["val_loss"], row["val_ppl_word"], row["tokens_per_s"])
        if self.on_epoch:
            self.on_epoch(epoch, row)


def distributed_world() -> int:
    """How many training processes this one is part of (``$WORLD_SIZE`` from torchrun; 1 alone)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: per-row summed NLL and counted tokens, ``(B, 2)``."""
    return torch.stack([sequence_nll(logits, labels), (labels[:, 1:] != -100).sum(dim=1).float()], dim=1)


def show_progress_bar(wanted: bool) -> bool:
    """Whether the Trainer draws its progress bars: when wanted and the process writes to a terminal.

    In a log file a bar is hundreds of redrawn lines and cursor-movement codes; the training log lines
    (loss, tokens/s, time left) say the same there. ``sys.__stderr__`` is the process's own stream, not
    the copy ZenML's step logging puts in its place.
    """
    stream = sys.__stderr__
    return wanted and stream is not None and stream.isatty()


def train_transformer(writer: TransformerWriter, train_frame: pd.DataFrame, val_frame: pd.DataFrame,
                      cfg: TransformerTrainConfig, on_epoch: EpochCallback | None = None,
                      output_dir: str | None = None) -> pd.DataFrame:
    """Trains ``writer`` in place with the ``Trainer`` and returns the per-epoch history.

    This is one process's loop; with ``cfg.processes`` > 1 it runs inside each worker that
    :func:`training.transformer_ddp.train` starts.

    Args:
        writer: A writer from :func:`models.transformer.build_transformer`.
        train_frame: Training pieces (``prompt, text, form, genre``).
        val_frame: Validation pieces (early stopping and reported metrics).
        cfg: Optimisation settings.
        on_epoch: Called with ``(epoch, metrics)`` after every evaluation (e.g. to log to MLflow).
        output_dir: The ``Trainer``'s checkpoint folder (a temporary one when None; the workers of one
            multi-process run share theirs).

    Returns:
        One row per epoch: ``epoch, train_loss, val_loss, val_ppl_token, val_ppl_word, tokens_per_s, seconds``.

    Raises:
        ValueError: If there is nothing to train or validate on, or ``cfg.processes`` > 1 outside a worker.
        FloatingPointError: If the training loss stops being finite.
    """
    world = distributed_world()
    if cfg.processes > 1 and world == 1:
        raise ValueError(f"TransformerTrainConfig.processes is {cfg.processes}: train through "
                         "training.transformer_ddp.train, which starts the processes")
    train_frame = training_pieces(train_frame, val_frame, cfg.max_train_pieces, cfg.seed)
    if cfg.max_val_pieces and len(val_frame) > cfg.max_val_pieces:
        val_frame = val_frame.sample(n=cfg.max_val_pieces, random_state=cfg.seed)
    threads = configure_threads(cfg.torch_threads)
    log.info("training on %d pieces, validating on %d, %d torch thread(s)%s", len(train_frame), len(val_frame),
             threads, f" in each of {world} processes" if world > 1 else "")
    set_seed(cfg.seed)
    train_set, val_set = _Examples(writer, train_frame, length_requests=writer.chat), _Examples(writer, val_frame)
    collator = _Collator(writer.pad_id)
    reporter = _Reporter(cfg, collator, on_epoch, world)

    def metrics(pred: Any) -> dict[str, float]:
        nll, tokens = pred.predictions[:, 0].sum(), pred.predictions[:, 1].sum()
        return {"val_loss": float(nll / max(1.0, tokens)), "val_ppl_token": math.exp(min(nll / max(1.0, tokens), 50)),
                "val_ppl_word": math.exp(min(nll / max(1, val_set.words), 50))}

    out_dir = output_dir or tempfile.mkdtemp(prefix="transformer-trainer-")
    per_process = cfg.batch_size // world  # batch_size is the global batch
    args = TrainingArguments(
        output_dir=out_dir, num_train_epochs=cfg.epochs, per_device_train_batch_size=per_process,
        per_device_eval_batch_size=per_process, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine", warmup_steps=cfg.warmup, max_grad_norm=cfg.clip,
        bf16=resolve_bf16(cfg.bf16) if cfg.use_cpu else cfg.bf16,
        eval_strategy="epoch", save_strategy="epoch", save_only_model=True, save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="val_loss", greater_is_better=False,
        logging_strategy="steps", logging_steps=max(1, cfg.log_every), report_to="none", use_cpu=cfg.use_cpu,
        seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0, remove_unused_columns=False,
        train_sampling_strategy="group_by_length", disable_tqdm=not show_progress_bar(cfg.progress_bar),
        ddp_find_unused_parameters=False,  # every trainable weight takes part in each step
    )
    trainer = Trainer(model=writer.model, args=args, data_collator=collator, train_dataset=train_set,
                      eval_dataset=val_set, compute_metrics=metrics, preprocess_logits_for_metrics=_summed_nll,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience), reporter])
    try:
        trainer.train()
    finally:
        if output_dir is None:
            shutil.rmtree(out_dir, ignore_errors=True)
    writer.model = trainer.model.eval()  # on the GPU when use_cpu is false; generation follows the model's device
    return pd.DataFrame(reporter.history)
