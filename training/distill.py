"""Best-of-K self-distillation: the untuned base writes K pieces per training prompt, the best become the data.

The built-in corpus teaches form and control words, not prose: a LoRA fitted to it writes the corpus's
template style and loses some of the base's prose and coherence. Here the base itself is the source of
better data (rejection-sampling fine-tuning): for ``prompts`` training prompts (never an open or test
prompt) it samples ``k`` pieces on the llama.cpp runtime, every piece is scored by the story-quality
measures that passed their check on known-order pairs (:mod:`evaluation.measure_check`), pieces that do
not end on a full sentence, miss their form or use no word of their prompt are dropped, and the best
remaining piece of each prompt becomes its training piece. The best and the worst of each prompt are also
kept as a preference pair (``chosen``, ``rejected``) for preference training.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.validation import STRICT, require_min
from evaluation.config import SuiteConfig
from models.configs import RUNTIMES
from models.params import Sampling
from weights.spec import CheckpointRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """Best-of-K self-distillation (the profile's ``train_transformer`` ``distill`` parameters; ``k`` 0 = off).

    ``judge`` names the likelihood judge (default: the model's own base); the measures are checked on
    ``check_pairs`` pairs each from the test split's pieces and the ``check_sources`` real sets (the same
    check, and the same cache, as the evaluation's with the same settings). ``keep_corpus`` corpus pieces
    are trained on beside the distilled ones (0: only the distilled ones). With ``train_on_distilled`` false
    the corpus is trained on as without distillation, and the distillation gives only its best-against-worst
    preference pairs, for DPO (``train_transformer.dpo``): the method that beat the base in
    ``python -m benchmarks.distill`` (docs/benchmarks.md). Pieces are sampled untrimmed (``trim_to_sentence``
    false): a piece the token limit cut off mid-sentence is ``unfinished``, is never chosen and is the first
    pick for the rejected side, so preference training teaches the writer to finish within its budget. (Trimmed
    samples hid those cut-offs: DPO on them wrote longer pieces that stopped mid-sentence in a third of cases.)
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    k: int = 0
    prompts: int = 64
    max_new_tokens: int = 160
    target_words: int = 80
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0
    runtime: str = "llama.cpp"
    judge: CheckpointRef = ""
    check_pairs: int = SuiteConfig.check_pairs  # one home for the check's defaults: the evaluation's
    check_min_accuracy: float = SuiteConfig.check_min_accuracy
    check_composite_pairs: int = SuiteConfig.check_composite_pairs
    check_sources: list[str] = field(default_factory=list)
    keep_corpus: int = 0
    trim_to_sentence: bool = False
    train_on_distilled: bool = True

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        if isinstance(self.sampling, dict):
            object.__setattr__(self, "sampling", Sampling(**self.sampling))
        require_min(self, ("k", "keep_corpus", "check_pairs", "check_composite_pairs"), 0, integer=True)
        require_min(self, ("prompts", "max_new_tokens", "target_words"), 1, integer=True)
        if self.k == 1:
            raise ValueError("DistillConfig.k must be 0 (off) or at least 2: best-of-1 picks nothing")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"DistillConfig.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if not 0.5 <= self.check_min_accuracy <= 1:
            raise ValueError(f"DistillConfig.check_min_accuracy must be in [0.5, 1], got {self.check_min_accuracy}")


@dataclass(frozen=True)
class Distilled:
    """What distillation made.

    Attributes:
        train: The training pieces (the split's columns, ``source`` ``distilled``), one per kept prompt.
        pairs: ``prompt, form, genre, chosen, rejected, chosen_quality, rejected_quality`` per prompt.
        stats: Counts, seconds and the measures used.
    """

    train: pd.DataFrame
    pairs: pd.DataFrame
    stats: dict[str, Any]


def rejection(prompt: str, form: str, text: str) -> str | None:
    """Why a sampled piece may not be kept (None: it may): ``empty``, ``unfinished``, ``form``, ``off_prompt``."""
    from evaluation.writing import adherence, ends_complete, form_ok

    if not text.strip():
        return "empty"
    if not ends_complete(text):
        return "unfinished"
    if not form_ok(form, text):
        return "form"
    share, used = adherence(prompt, text)
    return None if used or share == 1.0 else "off_prompt"


def eligible(prompt: str, form: str, text: str) -> bool:
    """Whether a sampled piece may be kept: a full last sentence, its form's shape, a word of its prompt."""
    return rejection(prompt, form, text) is None


def sample_prompts(train: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` distinct training prompts (seeded), with their form and genre.

    Raises:
        ValueError: If the training split has no prompts.
    """
    unique = train.drop_duplicates("prompt")
    if unique.empty:
        raise ValueError("distillation needs training prompts; the training split has none")
    return unique.sample(n=min(n, len(unique)), random_state=seed).reset_index(drop=True)


def distill(base_dir: Path, train: pd.DataFrame, check_pieces: pd.DataFrame, cfg: DistillConfig, judge_spec: str,
            threads: int = 0) -> Distilled:
    """Samples ``cfg.k`` pieces per training prompt from the saved base and keeps the best of each.

    Args:
        base_dir: The saved untuned base (``training.tracking.save_untuned``).
        train: The training split (prompts are drawn from it).
        check_pieces: Real pieces the measures are checked on (the test split's).
        cfg: The settings.
        judge_spec: The judge's checkpoint spec (``cfg.judge`` or the model's base).
        threads: Torch/llama.cpp threads (0: the policy's default).

    Raises:
        ValueError: If no measure passes its check (nothing to pick by) or no prompt kept a piece.
    """
    from evaluation.candidates import measure_check as checked
    from evaluation.measure_check import trusted
    from evaluation.quality import Judge, score_pieces, story_quality
    from evaluation.writing import ReferenceModel
    from models.contract import GenerationSettings
    from models.families import load_model

    started = time.perf_counter()
    prompts = sample_prompts(train, cfg.prompts, cfg.seed)
    writer = load_model(Path(base_dir), cfg.runtime, threads)
    requests = list(zip(prompts["prompt"], prompts["form"], prompts["genre"], strict=True))
    texts: list[list[str]] = []
    for k in range(cfg.k):
        settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, **cfg.sampling.model_dump(),
                                      seed=cfg.seed + k, target_words=cfg.target_words,
                                      trim_to_sentence=cfg.trim_to_sentence)
        texts.append(writer.generate_requests(requests, settings))
        log.info("distillation: sample %d of %d for %d prompts written (%.0f s)", k + 1, cfg.k, len(requests),
                 time.perf_counter() - started)
    sampled_s = time.perf_counter() - started
    del writer
    reference = ReferenceModel(judge_spec)
    judge = Judge(reference)
    suite = SuiteConfig(check_pairs=cfg.check_pairs, check_min_accuracy=cfg.check_min_accuracy,
                        check_composite_pairs=cfg.check_composite_pairs, check_sources=list(cfg.check_sources),
                        seed=cfg.seed)
    trust = trusted(checked(check_pieces, judge, reference, suite)[0])
    if not trust:
        raise ValueError("distillation: no story-quality measure passed its check on the test pieces, so there "
                         "is nothing to pick the best piece by; lower check_min_accuracy or set k: 0")
    flat_prompts = [p for _ in range(cfg.k) for p in prompts["prompt"]]
    flat_texts = [t for row in texts for t in row]
    quality = story_quality(score_pieces(flat_prompts, flat_texts, judge, trust, cfg.seed), trust)
    rows, pairs, dropped, reasons = [], [], 0, dict.fromkeys(("empty", "unfinished", "form", "off_prompt"), 0)
    for i, row in prompts.iterrows():
        options = [(quality[k * len(prompts) + i], texts[k][i]) for k in range(cfg.k)]
        why = [rejection(row["prompt"], row["form"], t) for _, t in options]
        for reason in why:
            if reason is not None:
                reasons[reason] += 1
        kept = [(q, t) for (q, t), no in zip(options, why, strict=True) if q == q and no is None]
        dropped += cfg.k - len(kept)
        if not kept:
            continue
        best = max(kept, key=lambda o: o[0])
        worst = min(options, key=lambda o: (eligible(row["prompt"], row["form"], o[1]), o[0] if o[0] == o[0] else -1))
        rows.append({"id": f"distilled-{i}", "source": "distilled", "form": row["form"], "genre": row["genre"],
                     "prompt": row["prompt"], "text": best[1].strip(), "split": "train"})
        if worst[1] != best[1]:
            pairs.append({"prompt": row["prompt"], "form": row["form"], "genre": row["genre"], "chosen": best[1],
                          "rejected": worst[1], "chosen_quality": best[0], "rejected_quality": worst[0]})
    if not rows:
        said = ", ".join(f"{reason} {n}" for reason, n in reasons.items() if n)
        raise ValueError(f"distillation: none of the {cfg.k * len(prompts)} sampled pieces passed the checks "
                         f"(full last sentence, form, a word of the prompt; dropped: {said})")
    kept_q = [r["chosen_quality"] for r in pairs]
    stats = {"prompts": len(prompts), "k": cfg.k, "kept": len(rows), "dropped_pieces": dropped,
             "dropped_by_reason": reasons,
             "pairs": len(pairs), "measures": trust, "sampled_s": round(sampled_s, 1),
             "seconds": round(time.perf_counter() - started, 1),
             "mean_all_quality": _mean(quality), "mean_kept_quality": _mean(kept_q)}
    log.info("distillation: %s", json.dumps(stats))
    return Distilled(pd.DataFrame(rows), pd.DataFrame(pairs, columns=list(PAIR_COLUMNS)), stats)


PAIR_COLUMNS = ("prompt", "form", "genre", "chosen", "rejected", "chosen_quality", "rejected_quality")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return round(sum(finite) / len(finite), 4) if finite else float("nan")


def training_pieces(distilled: Distilled, train: pd.DataFrame, keep_corpus: int, seed: int) -> pd.DataFrame:
    """The distilled pieces and ``keep_corpus`` corpus pieces (seeded), shuffled together."""
    extra = train.sample(n=min(keep_corpus, len(train)), random_state=seed) if keep_corpus else train.head(0)
    both = pd.concat([distilled.train, extra[[c for c in distilled.train.columns if c in extra]]], ignore_index=True)
    return both.sample(frac=1.0, random_state=seed).reset_index(drop=True)
