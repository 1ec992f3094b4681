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
  (parameters, MB on disk);
- the open-prompt metrics of :mod:`evaluation.writing` (adherence, form, endings, repetition, fluency
  under the reference model) on one sample per open prompt, all prompts in one batch.

Sizes are fixed and seeded so that a 135 M-parameter candidate fits the pipeline's budget on 2 cores:
``ppl_pieces`` test pieces for perplexity (0 = all), ``ranking_pieces`` trials scored on each piece's
first ``ranking_words`` words (0 = whole pieces), ``open_limit`` open prompts (0 = all),
``fluency_samples`` open samples per candidate under the reference model, and per real test set
(:mod:`evaluation.real_tests`) a seeded sample of ``real_pieces`` pieces for perplexity, the first
``real_ranking_pieces`` of them for prompt ranking. The report states them.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.config import SuiteConfig
from evaluation.writing import ReferenceModel, load_open_prompts, open_prompt_metrics
from models.contract import GenerationSettings, WriterModel
from models.metrics import bleu4, distinct_n, repetition, self_bleu4
from models.text import ends_complete


def _score(model: WriterModel, prompts: list[str], texts: list[str], forms: list[str],
           genres: list[str]) -> list[tuple[float, int]]:
    return model.score(prompts, texts, forms=forms, genres=genres)  # type: ignore[call-arg]


def ppl_part(test: pd.DataFrame, cfg: SuiteConfig) -> pd.DataFrame:
    """The test pieces perplexity is measured on: all, or a seeded sample of ``ppl_pieces``."""
    if cfg.ppl_pieces and len(test) > cfg.ppl_pieces:
        return test.sample(n=cfg.ppl_pieces, random_state=cfg.seed).reset_index(drop=True)
    return test


def first_words(text: str, words: int) -> str:
    """The first ``words`` whitespace words of ``text`` (all of it when ``words`` is 0)."""
    return " ".join(text.split()[:words]) if words else text


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


def prompt_ranking(model: WriterModel, test: pd.DataFrame, cfg: SuiteConfig, pieces: int | None = None) -> float:
    """Prompt-ranking accuracy of ``model`` on ``test`` (see the module docstring).

    Args:
        model: The candidate.
        test: The pieces (the first ``pieces`` are the trials; distractor prompts come from all of them).
        cfg: Suite settings (distractors, seed, ranking window).
        pieces: Trials (default ``cfg.ranking_pieces``).
    """
    trials = ranking_trials(test, cfg.ranking_pieces if pieces is None else pieces, cfg.distractors, cfg.seed)
    prompts, texts, forms, genres = [], [], [], []
    for piece, candidates in trials:
        for c in candidates:
            prompts.append(test["prompt"].iloc[c])
            texts.append(first_words(test["text"].iloc[piece], cfg.ranking_words))
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
        settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, **cfg.sampling.model_dump(),
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
            "complete_share": sum(ends_complete(s) for s in samples) / max(1, len(samples))}


def parameters(model: WriterModel) -> int:
    """Distinct parameters of a family's network (``net`` for the LSTM families, ``model`` for the Transformer)."""
    net = getattr(model, "net", None) or getattr(model, "model", None)
    if net is None:
        return 0
    return sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())


def disk_mb(directory: Path) -> float:
    """Size of a saved model directory in MB."""
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file()) / 1e6


def open_prompts(cfg: SuiteConfig) -> pd.DataFrame:
    """The open prompts the suite samples (the first ``open_limit`` when set)."""
    prompts = load_open_prompts(cfg.open_prompts)
    return prompts.head(cfg.open_limit) if cfg.open_limit else prompts


def open_samples(model: WriterModel, prompts: pd.DataFrame, cfg: SuiteConfig) -> tuple[list[str], float]:
    """One sample per open prompt, all in one batch (every row seeded with ``seed``, asking ``open_target_words``).

    Returns the samples and the seconds taken.
    """
    settings = GenerationSettings(max_new_tokens=cfg.open_max_new_tokens, **cfg.sampling.model_dump(),
                                  seed=cfg.seed, target_words=cfg.open_target_words)
    t0 = time.perf_counter()
    texts = model.generate_requests(list(zip(prompts["prompt"], prompts["form"], prompts["genre"], strict=True)),
                                    settings)
    return texts, time.perf_counter() - t0


def evaluate_candidate(name: str, model: WriterModel, model_dir: Path, test: pd.DataFrame, cfg: SuiteConfig,
                       reference: ReferenceModel | None = None, writer: WriterModel | None = None,
                       ) -> tuple[dict[str, Any], list[str], list[str], list[list[str]]]:
    """The whole suite for one candidate.

    Returns its metrics row, its test-prompt samples, its open-prompt samples and, per open sample, the
    prompt words it uses.

    Args:
        name: Candidate name (the family, normally).
        model: The loaded model.
        model_dir: Its saved directory (for the size on disk).
        test: The test split.
        cfg: Suite settings.
        reference: The fluency judge (None: no fluency figure).
        writer: The same model on the runtime that writes the samples (``cfg.runtime``; None: ``model``),
            while ``model`` scores.
    """
    from models.tokenizer import encode_text

    writer = writer or model
    prompts = test.head(cfg.sample_prompts)
    samples, seconds = generate_samples(writer, prompts, cfg)
    tokenizer = getattr(model, "tokenizer", None)
    tokens = sum(len(encode_text(tokenizer, s)) for s in samples) if tokenizer is not None else 0
    opened = open_prompts(cfg)
    open_texts, open_seconds = open_samples(writer, opened, cfg)
    open_metrics, matched = open_prompt_metrics(opened, open_texts)
    fluency = (reference.per_word_perplexity(open_texts[: cfg.fluency_samples] if cfg.fluency_samples else open_texts)
               if reference is not None else float("nan"))
    row = {"candidate": name, "family": getattr(model, "family", name),
           "ppl_word": per_word_perplexity(model, ppl_part(test, cfg)), "ranking_acc": prompt_ranking(model, test, cfg),
           **sample_metrics(samples, list(prompts["text"])), **open_metrics, "open_fluency_ppl": fluency,
           "tokens_per_s": tokens / max(seconds, 1e-9), "open_seconds": open_seconds,
           "parameters": parameters(model), "disk_mb": disk_mb(model_dir)}
    return row, samples, open_texts, matched


def real_test_metrics(name: str, model: WriterModel, real: pd.DataFrame, cfg: SuiteConfig) -> list[dict[str, Any]]:
    """Per-word perplexity and prompt ranking of one candidate on every real test set.

    Each set (``source`` column) is sampled once with the suite's seed (``real_pieces`` pieces), so every
    candidate sees the same pieces; ranking uses the first ``real_ranking_pieces`` of them as trials and
    the sample's other prompts as distractors.

    Returns:
        One row per set: ``candidate, test_set, pieces, ppl_word, ranking_trials, ranking_acc, chance``.

    Raises:
        ValueError: If a set has too few distinct prompts for the distractors (the set is named).
    """
    rows = []
    for set_name, part in real.groupby("source", sort=False):
        sample = part.sample(n=min(len(part), cfg.real_pieces), random_state=cfg.seed).reset_index(drop=True)
        trials = min(len(sample), cfg.real_ranking_pieces)
        try:
            ranking = prompt_ranking(model, sample, cfg, trials) if trials else float("nan")
        except ValueError as exc:
            raise ValueError(f"real test '{set_name}': {exc}; raise real_pieces or use a larger set") from None
        rows.append({"candidate": name, "test_set": str(set_name), "pieces": len(sample),
                     "ppl_word": per_word_perplexity(model, sample), "ranking_trials": trials,
                     "ranking_acc": ranking, "chance": cfg.chance})
    return rows


def suite_dict(cfg: SuiteConfig) -> dict[str, Any]:
    """The settings as a plain dict (for reports and tags)."""
    return {**asdict(cfg), "sampling": cfg.sampling.model_dump()}
