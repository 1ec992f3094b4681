"""One metric suite for every candidate: the same test pieces, the same prompts, the same seeds.

- **per-word perplexity**: ``exp(Σ NLL ÷ Σ words)`` of each test piece given its prompt, from the
  model's ``score()``; tokenizer-independent, so families with different tokenizers compare;
- **prompt-ranking accuracy** (Fan et al. 2018): each of ``ranking_pieces`` test pieces is scored under
  its own prompt and ``distractors`` other test prompts drawn with a fixed seed; a hit is a *strictly*
  lowest NLL under the true prompt (ties count as misses); chance is ``1 / (distractors + 1)``;
- from one sample for each of ``sample_prompts`` fixed test prompts at fixed settings: distinct-1/2,
  self-BLEU-4, repetition (share of repeated 4-grams inside a sample, averaged), BLEU-4 against the
  reference pieces, mean length in words, share ending on a complete sentence;
- generation speed (tokens of the model's own tokenizer per second over those samples) and model size
  (parameters, MB on disk).
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from models.contract import GenerationSettings, WriterModel, require_min
from models.metrics import bleu4, distinct_n, repetition, self_bleu4

COMPLETE = re.compile(r"[.!?][\"')\]]*\s*$")


@dataclass(frozen=True)
class SuiteConfig:
    """Evaluation settings (the profile's ``evaluate`` ``suite`` parameters)."""

    ranking_pieces: int = 100
    distractors: int = 9
    sample_prompts: int = 24
    max_new_tokens: int = 120
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    seed: int = 0

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        require_min(self, ("ranking_pieces", "distractors", "sample_prompts", "max_new_tokens"), 1, integer=True)

    @property
    def chance(self) -> float:
        """Prompt-ranking accuracy of a model that ignores its prompt."""
        return 1.0 / (self.distractors + 1)


def _score(model: WriterModel, prompts: list[str], texts: list[str], forms: list[str],
           genres: list[str]) -> list[tuple[float, int]]:
    return model.score(prompts, texts, forms=forms, genres=genres)  # type: ignore[call-arg]


def per_word_perplexity(model: WriterModel, test: pd.DataFrame) -> float:
    """``exp(Σ NLL ÷ Σ words)`` over the test pieces given their prompts."""
    scored = _score(model, list(test["prompt"]), list(test["text"]), list(test["form"]), list(test["genre"]))
    words = sum(w for _, w in scored)
    return math.exp(min(sum(n for n, _ in scored) / max(1, words), 50))


def ranking_trials(test: pd.DataFrame, pieces: int, distractors: int, seed: int) -> list[tuple[int, list[int]]]:
    """``(piece row, candidate prompt rows with the true one first)`` for each trial, fixed by ``seed``.

    Raises:
        ValueError: If the test split has too few distinct prompts for the distractors.
    """
    n = len(test)
    if n < distractors + 1:
        raise ValueError(f"prompt ranking needs at least {distractors + 1} test pieces, got {n}")
    rng = random.Random(seed)
    trials = []
    for i in range(min(pieces, n)):
        others = [j for j in range(n) if test["prompt"].iloc[j] != test["prompt"].iloc[i]]
        if len(others) < distractors:
            raise ValueError(f"prompt ranking needs {distractors} other prompts per piece; the test split has "
                             f"{len(others)} distinct ones")
        trials.append((i, [i, *rng.sample(others, distractors)]))
    return trials


def ranking_accuracy(nll: list[list[float]]) -> float:
    """Share of trials whose first (true-prompt) NLL is strictly the lowest."""
    hits = [row[0] < min(row[1:]) for row in nll]
    return sum(hits) / max(1, len(hits))


def prompt_ranking(model: WriterModel, test: pd.DataFrame, cfg: SuiteConfig) -> float:
    """Prompt-ranking accuracy of ``model`` on the test split (see the module docstring)."""
    trials = ranking_trials(test, cfg.ranking_pieces, cfg.distractors, cfg.seed)
    prompts, texts, forms, genres = [], [], [], []
    for piece, candidates in trials:
        for c in candidates:
            prompts.append(test["prompt"].iloc[c])
            texts.append(test["text"].iloc[piece])
            forms.append(test["form"].iloc[piece])
            genres.append(test["genre"].iloc[piece])
    scored = [n for n, _ in _score(model, prompts, texts, forms, genres)]
    width = cfg.distractors + 1
    return ranking_accuracy([scored[k * width: (k + 1) * width] for k in range(len(trials))])


def generate_samples(model: WriterModel, prompts: pd.DataFrame, cfg: SuiteConfig) -> tuple[list[str], float]:
    """One sample per prompt row (its form and genre, the suite's settings); returns them and seconds taken."""
    out: dict[int, str] = {}
    t0 = time.perf_counter()
    for (form, genre), group in prompts.groupby(["form", "genre"], sort=False):
        settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                      top_k=cfg.top_k, top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
                                      seed=cfg.seed, form=form, genre=genre)
        for idx, text in zip(group.index, model.generate(list(group["prompt"]), settings), strict=True):
            out[idx] = text
    return [out[i] for i in prompts.index], time.perf_counter() - t0


def sample_metrics(samples: list[str], references: list[str]) -> dict[str, float]:
    """Diversity, repetition, closeness and shape of a set of samples."""
    return {"distinct1": distinct_n(samples, 1), "distinct2": distinct_n(samples, 2),
            "self_bleu4": self_bleu4(samples),
            "repetition": sum(repetition(s) for s in samples) / max(1, len(samples)),
            "bleu4": bleu4(samples, references),
            "mean_words": sum(len(s.split()) for s in samples) / max(1, len(samples)),
            "complete_share": sum(bool(COMPLETE.search(s)) for s in samples) / max(1, len(samples))}


def parameters(model: WriterModel) -> int:
    """Distinct parameters of a family's network (``net`` for the LSTM families, ``model`` for the Transformer)."""
    net = getattr(model, "net", None) or getattr(model, "model", None)
    if net is None:
        return 0
    return sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())


def disk_mb(directory: Path) -> float:
    """Size of a saved model directory in MB."""
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file()) / 1e6


def evaluate_candidate(name: str, model: WriterModel, model_dir: Path, test: pd.DataFrame,
                       cfg: SuiteConfig) -> tuple[dict[str, Any], list[str]]:
    """The whole suite for one candidate; returns its metrics row and its samples.

    Args:
        name: Candidate name (the family, normally).
        model: The loaded model.
        model_dir: Its saved directory (for the size on disk).
        test: The test split.
        cfg: Suite settings.
    """
    from models.tokenizer import encode_text

    prompts = test.head(cfg.sample_prompts)
    samples, seconds = generate_samples(model, prompts, cfg)
    tokenizer = getattr(model, "tokenizer", None)
    tokens = sum(len(encode_text(tokenizer, s)) for s in samples) if tokenizer is not None else 0
    row = {"candidate": name, "family": getattr(model, "family", name),
           "ppl_word": per_word_perplexity(model, test), "ranking_acc": prompt_ranking(model, test, cfg),
           **sample_metrics(samples, list(prompts["text"])),
           "tokens_per_s": tokens / max(seconds, 1e-9), "parameters": parameters(model), "disk_mb": disk_mb(model_dir)}
    return row, samples


def suite_dict(cfg: SuiteConfig) -> dict[str, Any]:
    """The settings as a plain dict (for reports and tags)."""
    return asdict(cfg)
