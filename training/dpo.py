"""Direct preference optimisation (DPO, Rafailov et al. 2023) of the Transformer's LoRA adapter.

For a pair (prompt, chosen, rejected) the loss is ``-log σ(β [(log π(c) − log π_ref(c)) − (log π(r) − log
π_ref(r))])``, where ``log π`` is the summed log-likelihood of the piece given the prompt (the same
prompt-masked examples supervised training uses) and ``π_ref`` is the model before this step. With a LoRA
adapter the reference is the same network with the adapter switched off for a moment, so no second copy is
held; a fully fine-tuned model is copied once. The reference's likelihoods are computed once, up front.

The trainer is plain PyTorch (AdamW, gradient clipping, seeded shuffles): the loss is a few lines over the
model's own scoring, and it runs on the pairs from writers' feedback (:mod:`training.preferences`) and from
best-of-K distillation (:mod:`training.distill`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from training.config import DPOConfig

log = logging.getLogger(__name__)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean DPO loss and each pair's implicit reward margin ``β[(πc − refc) − (πr − refr)]`` (log-probs)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), margin.detach()


def encode_side(writer: Any, prompt: str, text: str, form: str, genre: str) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one side of a pair; a piece cut off mid-sentence gets no end token.

    A piece the token limit cut off was never ended by the model. Scored with an end token after its broken
    sentence, a rejected cut-off piece would teach the model that ending is what is wrong, and DPO on such
    pairs made the writer stop mid-sentence more often, not less (complete endings 83 % → 59 % on the open
    prompts). Without the end token the pair says what is wrong: the piece ran on.
    """
    from models.text import ends_complete

    ids, labels, _ = writer.encode_scored(prompt, text, form, genre)
    if not ends_complete(text) and ids and ids[-1] == writer.eos_id:
        ids, labels = ids[:-1], labels[:-1]
    return ids, labels


def _encode(writer: Any, pairs: pd.DataFrame) -> list[tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]]:
    return [(encode_side(writer, prompt, chosen, form, genre), encode_side(writer, prompt, rejected, form, genre))
            for prompt, form, genre, chosen, rejected in zip(pairs["prompt"], pairs["form"], pairs["genre"],
                                                             pairs["chosen"], pairs["rejected"], strict=True)]


def _logps(model: Any, rows: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    from models.transformer import collate_examples, sequence_nll

    batch = collate_examples(rows, pad_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return -sequence_nll(logits, batch["labels"])


@contextlib.contextmanager
def _reference(model: Any) -> Any:
    """The model as it was before DPO: the adapter off (LoRA), else a frozen copy."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        frozen = copy.deepcopy(model).eval()
        yield frozen


def choose_pairs(writers: pd.DataFrame, distilled: pd.DataFrame | None, cfg: DPOConfig) -> pd.DataFrame:
    """The pairs DPO trains on, with their ``origin`` (writers, distilled).

    Writers' pairs first, then distilled ones (when ``cfg.distilled``), at most ``cfg.max_pairs`` (a seeded
    sample of the distilled ones fills what is left).
    """
    columns = ["prompt", "form", "genre", "chosen", "rejected"]
    parts = [writers[columns].assign(origin="writers").head(cfg.max_pairs)]
    room = cfg.max_pairs - len(parts[0])
    if cfg.distilled and distilled is not None and len(distilled) and room > 0:
        sample = distilled.sample(n=min(room, len(distilled)), random_state=cfg.seed)
        parts.append(sample[columns].assign(origin="distilled"))
    return pd.concat(parts, ignore_index=True)


def train_dpo(writer: Any, pairs: pd.DataFrame, cfg: DPOConfig) -> dict[str, float]:
    """Trains ``writer.model`` in place on ``pairs`` (``prompt, form, genre, chosen, rejected``) with DPO.

    Returns:
        ``pairs``, ``steps``, ``seconds``, ``loss_first``/``loss_last`` (mean loss of the first and last
        epoch), ``prefers_before``/``prefers_after``: the share of pairs whose chosen side is more likely than
        the rejected one (``log π(c) > log π(r)``) before and after, and ``reward_accuracy``: the share with a
        positive implicit reward margin after training (what DPO optimises).

    Raises:
        ValueError: If ``pairs`` is empty.
    """
    if pairs.empty:
        raise ValueError("DPO needs at least one preference pair")
    started = time.perf_counter()
    encoded = _encode(writer, pairs)
    model, pad = writer.model, writer.pad_id
    model.eval()
    with torch.no_grad(), _reference(model) as reference:
        ref = [(_logps(reference, [c], pad)[0], _logps(reference, [r], pad)[0]) for c, r in encoded]
    before = sum(float(c > r) for c, r in ref) / len(ref)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    order = list(range(len(encoded)))
    shuffle = random.Random(cfg.seed)
    epoch_losses: list[float] = []
    steps = 0
    model.train()
    for epoch in range(cfg.epochs):
        shuffle.shuffle(order)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            chosen_at = order[start:start + cfg.batch_size]
            rows = [encoded[i][0] for i in chosen_at] + [encoded[i][1] for i in chosen_at]
            logps = _logps(model, rows, pad)
            n = len(chosen_at)
            ref_c = torch.stack([ref[i][0] for i in chosen_at])
            ref_r = torch.stack([ref[i][1] for i in chosen_at])
            loss, _ = dpo_loss(logps[:n], logps[n:], ref_c, ref_r, cfg.beta)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DPO loss became {float(loss)} at step {steps}")
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            optimiser.step()
            losses.append(loss.detach().item())
            steps += 1
        epoch_losses.append(sum(losses) / len(losses))
        log.info("DPO epoch %d/%d: loss %.4f over %d pairs", epoch + 1, cfg.epochs, epoch_losses[-1], len(order))
    model.eval()
    with torch.no_grad():
        now = [(_logps(model, [c], pad)[0], _logps(model, [r], pad)[0]) for c, r in encoded]
    after = sum(float(c > r) for c, r in now) / len(now)
    rewarded = sum(float(c - rc > r - rr) for (c, r), (rc, rr) in zip(now, ref, strict=True)) / len(now)
    return {"pairs": float(len(encoded)), "steps": float(steps), "seconds": round(time.perf_counter() - started, 2),
            "loss_first": epoch_losses[0], "loss_last": epoch_losses[-1], "prefers_before": before,
            "prefers_after": after, "reward_accuracy": rewarded}
