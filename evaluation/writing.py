"""What a writer sees: samples on open prompts the project wrote itself, scored on adherence, form and endings.

The open prompts (``evaluation/data/open_prompts.jsonl``, 66 of them: stories, fables and poems over
every genre) name people, places and objects that the built-in corpus never uses, and no training source
contains them (a test checks it against the corpus's word lists), so a model that memorised the corpus's
templates cannot score well on them by recalling a template.

Metrics, each on one sample per prompt at fixed settings and seeds:

- **adherence**: the prompt's *content words* (spaCy's lookup lemmatiser from ``spacy-lookups-data``;
  stop words, words under three letters and the instruction's own words — write, tell, story, fable,
  poem, … — left out) that the piece uses, as a share (``open_coverage``, averaged over prompts), and the
  share of pieces that use at least one (``open_use``);
- **form** (``open_form``): a poem has at least three lines; a fable states its moral in its last two
  sentences ("moral", "lesson", "learned", …); a story of 80 words or more runs in at least two paragraphs,
  a shorter one has at least two sentences;
- **complete ending** (``open_complete``): the piece ends on ``.``, ``!`` or ``?`` (closing quotes allowed);
- **repetition** (``open_repetition``, share of repeated 4-grams inside a piece) and **distinct-2**
  (``open_distinct2``) over all pieces;
- **fluency** (``open_fluency_ppl``): per-word perplexity of the pieces under a fixed *reference* language
  model that is not a candidate (:class:`ReferenceModel`). Lower reads more like ordinary English to that
  model; it also rewards bland and repetitive text, so it is reported, never gated on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from models.metrics import distinct_n, repetition
from models.text import ends_complete, sentences, states_moral

OPEN_PROMPTS = Path(__file__).resolve().parent / "data" / "open_prompts.jsonl"
INSTRUCTION_WORDS = frozenset({"write", "tell", "story", "fable", "poem", "short", "prompt", "moral", "rhyming",
                               "name", "named", "call", "called"})
FIELDS = ("id", "form", "genre", "prompt")


class OpenPromptError(ValueError):
    """A bad open-prompts file; the message names the file and line."""


def load_open_prompts(path: Path | str = "") -> pd.DataFrame:
    """The open prompts (``id, form, genre, prompt``) from a JSONL file (default: the project's own).

    Raises:
        OpenPromptError: For a missing file, bad JSON, a missing field, an empty prompt or a repeated id,
            naming ``file:line``.
    """
    path = Path(path) if path else OPEN_PROMPTS
    if not path.is_file():
        raise OpenPromptError(f"open prompts file {path} does not exist")
    rows, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise OpenPromptError(f"{path}:{number}: not JSON ({exc})") from None
        missing = [f for f in FIELDS if not isinstance(row.get(f), str)]
        if missing:
            raise OpenPromptError(f"{path}:{number}: missing or non-text field(s) {missing}")
        if not row["prompt"].strip() or not row["form"].strip():
            raise OpenPromptError(f"{path}:{number}: empty prompt or form")
        if row["id"] in seen:
            raise OpenPromptError(f"{path}:{number}: id {row['id']!r} appears twice")
        seen.add(row["id"])
        rows.append({f: row[f].strip() for f in FIELDS})
    if not rows:
        raise OpenPromptError(f"open prompts file {path} holds no prompts")
    return pd.DataFrame(rows)


def prompts_fingerprint(prompts: pd.DataFrame) -> str:
    """SHA-256 (first 16 hex digits) of the prompts, in order."""
    payload = json.dumps(prompts[list(FIELDS)].to_dict("records"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _nlp() -> Any:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    nlp.initialize()  # reads the lookup table from spacy-lookups-data (installed, never downloaded)
    return nlp


def content_words(text: str, skip_instruction: bool = False) -> set[str]:
    """Lower-cased lemmas of the content words of ``text`` (see the module docstring)."""
    out = set()
    for token in _nlp()(text):
        lemma = token.lemma_.lower()
        if not token.is_alpha or token.is_stop or len(token.text) < 3 or lemma in {"be", "have", "do"}:
            continue
        if skip_instruction and (lemma in INSTRUCTION_WORDS or token.lower_ in INSTRUCTION_WORDS):
            continue
        out.add(lemma)
    return out


def adherence(prompt: str, piece: str) -> tuple[float, list[str]]:
    """Share of the prompt's content words that the piece uses, and those words (sorted).

    A prompt with no content words counts as fully covered (there is nothing to miss).
    """
    wanted = content_words(prompt, skip_instruction=True)
    if not wanted:
        return 1.0, []
    used = sorted(wanted & content_words(piece))
    return len(used) / len(wanted), used


def paragraphs(text: str) -> list[str]:
    """Blocks of ``text`` separated by blank lines."""
    return [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def form_ok(form: str, text: str) -> bool:
    """Whether ``text`` has the shape of its form (see the module docstring); unknown forms pass."""
    text = text.strip()
    if form == "poem":
        return sum(1 for line in text.splitlines() if line.strip()) >= 3
    if form == "fable":
        return states_moral(text)
    if form == "story":
        if len(text.split()) >= 80:
            return len(paragraphs(text)) >= 2
        return len(sentences(text)) >= 2
    return True


def open_prompt_metrics(prompts: pd.DataFrame, samples: Sequence[str]) -> tuple[dict[str, float], list[list[str]]]:
    """The open-prompt metrics of one candidate's samples, and each sample's matched prompt words.

    Args:
        prompts: The open prompts (``prompt, form`` columns), one row per sample.
        samples: One piece per prompt, in order.

    Returns:
        ``open_use, open_coverage, open_form, open_complete, open_repetition, open_distinct2, open_words``,
        and the matched words per sample.
    """
    if len(prompts) != len(samples):
        raise ValueError(f"{len(samples)} samples for {len(prompts)} open prompts")
    coverage, matched = [], []
    for prompt, piece in zip(prompts["prompt"], samples, strict=True):
        share, words = adherence(prompt, piece)
        coverage.append(share)
        matched.append(words)
    n = max(1, len(samples))
    metrics = {
        "open_use": sum(1 for words, s in zip(matched, coverage, strict=True) if words or s == 1.0) / n,
        "open_coverage": sum(coverage) / n,
        "open_form": sum(form_ok(f, s) for f, s in zip(prompts["form"], samples, strict=True)) / n,
        "open_complete": sum(ends_complete(s) for s in samples) / n,
        "open_repetition": sum(repetition(s) for s in samples) / n,
        "open_distinct2": distinct_n(list(samples), 2),
        "open_words": sum(len(s.split()) for s in samples) / n,
    }
    return metrics, matched


class ReferenceModel:
    """A fixed causal language model that judges fluency (per-word perplexity of text on its own).

    Args:
        spec: A checkpoint spec (see :mod:`weights.checkpoints`), resolved through the checkpoint cache.
    """

    def __init__(self, spec: str) -> None:
        from models.transformer import load_base

        self.spec = spec
        self.model, self.tokenizer, self.checkpoint = load_base(spec)
        self.model.eval()
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        self.start_id = int(start)

    def per_word_perplexity(self, texts: Sequence[str], batch_size: int = 16, max_tokens: int = 256) -> float:
        """``exp(Σ NLL ÷ Σ words)`` of the texts (each after a start token, its first ``max_tokens`` tokens)."""
        from models.tokenizer import decode_ids, encode_text
        from models.transformer import IGNORE, summed_nll

        pairs, words = [], 0
        for text in texts:
            ids = encode_text(self.tokenizer, text)[:max_tokens]
            if not ids:
                continue
            words += len(decode_ids(self.tokenizer, ids).split())
            pairs.append(([self.start_id, *ids], [IGNORE, *ids]))
        if not pairs:
            return float("nan")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.start_id
        total = sum(summed_nll(self.model, pairs, int(pad), batch_size))
        return math.exp(min(total / max(1, words), 50))
