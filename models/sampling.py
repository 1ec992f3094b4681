"""The shared sampler every family draws with: penalties, filters, the seeded draw, token probabilities, beams.

Each function takes the validated :class:`models.params.SamplingParams` (or the settings that contain it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.params import SamplingParams, check_logit_bias


def apply_logit_bias(logits: torch.Tensor, bias: Mapping[int, float]) -> torch.Tensor:
    """``logits`` ``(B, V)`` with ``bias[id]`` added to each biased token's logit (OpenAI's ``logit_bias``).

    Raises:
        ValueError: If an id is not in the vocabulary (naming it and the vocabulary's size).
    """
    if not bias:
        return logits
    check_logit_bias(bias, logits.size(-1))
    ids = torch.tensor(list(bias), dtype=torch.long)
    return logits.index_add(-1, ids, torch.tensor(list(bias.values()), dtype=logits.dtype).expand(logits.size(0), -1))


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """Penalises tokens in ``previous`` (``(B, T)`` ids) in ``logits`` (``(B, V)``), CTRL-style."""
    if previous is None or previous.numel() == 0 or penalty == 1.0:
        return logits
    picked = torch.gather(logits, 1, previous)
    picked = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits.scatter(1, previous, picked)


DRY_MAX_LOG = 88.7228391  # ln(FLT_MAX): llama.cpp caps DRY's exponent so the penalty stays finite


def repeat_lengths(seq: Sequence[int]) -> list[int]:
    """For each position ``i``: how many tokens ending at ``i`` equal the tokens ending at the sequence's end.

    The Z-algorithm on the reversed sequence (linear time), as llama.cpp's DRY sampler computes it.
    """
    rev, n = list(reversed(seq)), len(seq)
    z, left, right = [0] * n, 0, 0
    for k in range(1, n):
        if k <= right:
            z[k] = min(right - k + 1, z[k - left])
        while k + z[k] < n and rev[z[k]] == rev[k + z[k]]:
            z[k] += 1
        if k + z[k] - 1 > right:
            left, right = k, k + z[k] - 1
    return [z[n - 1 - i] for i in range(n - 1)]  # position i ↔ shift n - 1 - i


def apply_dry(logits: torch.Tensor, previous: torch.Tensor | None, multiplier: float, base: float,
              allowed_length: int) -> torch.Tensor:
    """DRY: penalises each token that would continue a sequence already in ``previous`` (``(B, T)`` ids).

    A token that followed an earlier occurrence of the last ``n ≥ allowed_length`` tokens loses
    ``multiplier × base^(n − allowed_length)`` from its logit (the longest such ``n`` per token), as in
    llama.cpp's DRY sampler without sequence breakers (the llama.cpp runtime passes none, so both agree).
    """
    if previous is None or multiplier == 0 or previous.size(-1) <= allowed_length:
        return logits
    max_exponent = int(DRY_MAX_LOG / math.log(base)) if base > 1.000001 else 0
    out = logits.clone()
    for row, seq in enumerate(previous.tolist()):
        longest: dict[int, int] = {}
        for i, n in enumerate(repeat_lengths(seq)):
            if n >= allowed_length and longest.get(seq[i + 1], -1) < n:
                longest[seq[i + 1]] = n
        for token, n in longest.items():
            exponent = n - allowed_length
            if max_exponent > 0:
                exponent = min(exponent, max_exponent)
            out[row, token] -= multiplier * base**exponent
    return out


def exclude_top_choices(logits: torch.Tensor, threshold: float, fires: Sequence[bool]) -> torch.Tensor:
    """XTC: in each row where it ``fires``, removes every token at least ``threshold`` likely but the least likely.

    Nothing is removed when fewer than two tokens reach the threshold (as in llama.cpp's XTC sampler).
    """
    if not any(fires):
        return logits
    probs = torch.softmax(logits, dim=-1)
    out = logits.clone()
    for row, fire in enumerate(fires):
        above = torch.nonzero(probs[row] >= threshold).flatten()
        if not fire or above.numel() < 2:
            continue
        keep = above[torch.argmin(probs[row, above])]
        out[row, above[above != keep]] = float("-inf")
    return out


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


def sample_next(logits: torch.Tensor, settings: SamplingParams,
                generator: torch.Generator | Sequence[torch.Generator],
                previous: torch.Tensor | None = None) -> torch.Tensor:
    """The shared sampler: logit bias, repetition penalty, DRY, temperature, min-p, top-k, top-p, XTC, one draw per row.

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
    logits = apply_logit_bias(logits.float(), settings.logit_bias)
    logits = apply_repetition_penalty(logits, previous, settings.repetition_penalty)
    logits = apply_dry(logits, previous, settings.dry_multiplier, settings.dry_base, settings.dry_allowed_length)
    logits = filter_logits(logits / settings.temperature, settings.top_k, settings.top_p, settings.min_p)
    if settings.xtc_probability > 0:  # its own draw per row, only when on (seeds write what they wrote before)
        fires = [torch.rand((), generator=g).item() <= settings.xtc_probability for g in gens]
        logits = exclude_top_choices(logits, settings.xtc_threshold, fires)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)  # (B, V)
    u = torch.stack([torch.rand((), generator=g) for g in gens]).unsqueeze(1) * cdf[:, -1:]  # (B, 1)
    return (cdf < u).sum(dim=-1).clamp(max=logits.size(-1) - 1)


def draw_one(logits: torch.Tensor, settings: SamplingParams, generator: torch.Generator, written: Sequence[int],
             banned: Sequence[int] = ()) -> int:
    """One row's next token (:func:`sample_next` on ``(V,)`` or ``(1, V)`` logits), never one of ``banned``.

    ``written`` are the tokens written so far (the penalties' history). The banned-phrase sampler
    (:mod:`models.banning`) draws with it on the torch runtimes.
    """
    row = logits.reshape(1, -1).float()
    if banned:
        row = row.clone()
        row[0, list(banned)] = -math.inf
    history = torch.tensor([list(written)], dtype=torch.long).reshape(1, -1)
    return int(sample_next(row, settings, [generator], history)[0])


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


def token_chances(logits: torch.Tensor, ids: Sequence[int], settings: SamplingParams,
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
        row = apply_repetition_penalty(apply_logit_bias(logits[t: t + 1], settings.logit_bias),
                                       previous[:, :t] if t else None, settings.repetition_penalty)
        row = filter_logits(row / settings.temperature, settings.top_k, settings.top_p, settings.min_p)
        probs = torch.softmax(row, dim=-1)[0]
        best = torch.topk(probs, min(top, probs.numel()))
        alternatives = tuple((decode([int(i)]), float(p)) for p, i in zip(best.values, best.indices,
                                                                                     strict=True) if p > 0)
        out.append(TokenChance(piece, float(probs[token]), alternatives))
    return out


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
