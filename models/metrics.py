r"""Text-quality and diversity metrics shared by the GAN comparison and the evaluation step.

Words are lower-cased word and punctuation tokens (``\w+`` or one non-space symbol), so BLEU does not
depend on any model's tokenizer. BLEU uses NLTK with Chen & Cherry's method-1 smoothing (an n-gram
order with no match counts a small epsilon instead of zeroing the score), as is usual for short texts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return WORD.findall(text.lower())


def _smoothing():  # noqa: ANN202 - NLTK's smoothing function object
    from nltk.translate.bleu_score import SmoothingFunction

    return SmoothingFunction().method1


def bleu4(samples: Sequence[str], references: Sequence[str]) -> float:
    """Mean sentence BLEU-4 of each sample against its own reference piece (smoothed).

    Raises:
        ValueError: If the two lists differ in length.
    """
    from nltk.translate.bleu_score import sentence_bleu

    if len(samples) != len(references):
        raise ValueError(f"bleu4 needs one reference per sample, got {len(references)} for {len(samples)}")
    smooth = _smoothing()
    scores = [sentence_bleu([words(r)], words(s), smoothing_function=smooth) if words(s) else 0.0
              for s, r in zip(samples, references, strict=True)]
    return sum(scores) / max(1, len(scores))


def self_bleu4(samples: Sequence[str]) -> float:
    """Mean BLEU-4 of each sample against all the others as references (higher = less diverse).

    Identical samples give 1.0; fewer than two samples give 0.0 (nothing to compare).
    """
    from nltk.translate.bleu_score import sentence_bleu

    tokenized = [words(s) for s in samples]
    if len(tokenized) < 2:
        return 0.0
    smooth = _smoothing()
    scores = []
    for i, hyp in enumerate(tokenized):
        refs = tokenized[:i] + tokenized[i + 1:]
        scores.append(sentence_bleu(refs, hyp, smoothing_function=smooth) if hyp else 0.0)
    return sum(scores) / len(scores)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of a token list, in order."""
    return [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Distinct n-grams ÷ all n-grams over all samples (Li et al. 2016); 0.0 when there are none."""
    grams = [g for s in samples for g in ngrams(words(s), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition(sample: str, n: int = 4) -> float:
    """Share of a sample's n-grams that repeat an earlier n-gram of the same sample (0 = none repeated)."""
    grams = ngrams(words(sample), n)
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)
