"""Cleaning: a fixed sequence of configurable rules, each counted.

Rules (in order; each can be switched off in the profile's ``clean_data`` parameters):

=================  =====================================================================================
``unicode``        NFKC normalisation, typographic quotes/dashes/ellipses to plain ones, control chars out
``writingprompts`` ``<newline>`` → line breaks, ``[ WP ]``-style tags stripped from prompts, tokenised text
                   (``ca n't``, ``` `` ```) restored with NLTK's Treebank detokenizer (rows that look tokenised)
``gutenberg``      Project Gutenberg boilerplate lines (licence, "produced by", e-text notes) removed
``whitespace``     spaces collapsed, lines stripped, at most one blank line, runs of ``!!!!``/``????`` cut
``truncate``       pieces over ``max_words`` cut at the last spaCy sentence boundary that fits
``length``         pieces under ``min_words`` or prompts outside ``[min_prompt_words, max_prompt_words]`` out
``exact_dupes``    pieces whose normalised text repeats an earlier piece out
``near_dupes``     MinHash (word 5-gram shingles) near-duplicates with Jaccard ≥ ``near_dupe_threshold`` out
``english``        pieces whose share of English stop words is below ``min_stopword_ratio`` out
``blocklist``      pieces whose prompt or text contains a blocklisted word out (off when the list is empty)
=================  =====================================================================================

Each rule reports rows in, rows out and rows changed; :func:`clean_corpus` returns those counts with the
cleaned frame.
"""

from __future__ import annotations

import itertools
import re
import time
import unicodedata
import zlib
from collections.abc import Callable
from functools import lru_cache, partial

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from corpus.schema import DataError, validate_frame


class CleaningConfig(BaseModel):
    """Every cleaning rule's switch and threshold (the ``clean_data`` step's ``config`` parameter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unicode: bool = True
    writingprompts: bool = True
    gutenberg: bool = True
    whitespace: bool = True
    truncate: bool = True
    max_words: int = Field(300, ge=10, description="pieces are cut at a sentence boundary to at most this many words")
    length: bool = True
    min_words: int = Field(40, ge=1)
    min_prompt_words: int = Field(3, ge=1)
    max_prompt_words: int = Field(80, ge=1)
    exact_dupes: bool = True
    near_dupes: bool = True
    near_dupe_threshold: float = Field(0.9, gt=0.0, le=1.0)
    english: bool = True
    min_stopword_ratio: float = Field(0.25, ge=0.0, le=1.0)
    blocklist: list[str] = Field(default_factory=list)
    workers: int = Field(2, ge=1, le=64, description="processes for the per-text rules on large corpora")


# --- text-level rules -----------------------------------------------------------------------------------

PUNCT_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": " - ", "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\u00ad": "",
})
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\ufeff]")


def normalise_unicode(text: str) -> str:
    """NFKC-normalises, maps typographic punctuation to plain ASCII and drops control characters."""
    text = unicodedata.normalize("NFKC", text).translate(PUNCT_MAP)
    return CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


WP_TAG = re.compile(r"^\s*(\[\s*[A-Za-z]{1,4}\s*\]\s*)+|\(\s*[A-Za-z]{1,4}\s*\)\s*$")
WP_TAG_ANY = re.compile(r"\[\s*(?:WP|SP|EU|CW|TT|IP|PI|OT|RF|MP|FF|PM|CC)\s*\]", re.I)
NEWLINE_TOKEN = re.compile(r"\s*<newline>\s*", re.I)
TOKENISED = re.compile(r" (n't|'s|'re|'ve|'ll|'m|'d|[.,!?;:]) |``|''")


@lru_cache(maxsize=1)
def _detokenizer():  # noqa: ANN202 - NLTK has no type stubs
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    return TreebankWordDetokenizer()


def looks_tokenised(text: str) -> bool:
    """Whether text looks Penn-Treebank tokenised (``ca n't``, `` , ``, ``` `` ```)."""
    return len(TOKENISED.findall(text)) >= 2 or " n't " in text or "``" in text


LOOSE_CONTRACTION = re.compile(r"(?i)(\w) (n't|'s|'re|'ve|'ll|'m|'d)(?=\W|$)")
PARAGRAPH_MARK = "QQPARAGRAPHQQ"  # a plain token the detokenizer leaves alone; stands for a line break


def detokenise(text: str) -> str:
    """Restores tokenised text with NLTK's Treebank detokenizer, keeping line breaks.

    The whole text goes through the detokenizer in one call (per-line calls cost ten times more),
    with line breaks carried through as a placeholder token.
    """
    tokens = text.replace("\n", f" {PARAGRAPH_MARK} ").split()
    out = _detokenizer().detokenize(tokens)
    # Contractions glued to punctuation ("were n't,") slip past the detokenizer's patterns.
    out = LOOSE_CONTRACTION.sub(r"\1\2", out)
    return re.sub(rf" ?{PARAGRAPH_MARK} ?", "\n", out)


def fix_writingprompts_text(text: str, force: bool = False) -> str:
    """``<newline>`` markers to paragraph breaks, then Treebank detokenisation.

    Args:
        text: A story.
        force: Detokenise even when the text does not look tokenised (WritingPrompts rows always are).
    """
    text = NEWLINE_TOKEN.sub("\n", text) if "<newline>" in text.lower() else text
    return detokenise(text) if force or looks_tokenised(text) else text


def fix_writingprompts_prompt(prompt: str, force: bool = False) -> str:
    """Strips ``[ WP ]``-style tags and detokenises a prompt (see :func:`fix_writingprompts_text`)."""
    prompt = WP_TAG_ANY.sub(" ", prompt)
    prompt = WP_TAG.sub("", prompt).strip()
    return detokenise(prompt) if force or looks_tokenised(prompt) else prompt


GUTENBERG_LINE = re.compile(
    r"project gutenberg|gutenberg\.org|gutenberg-tm|^\s*produced by\b|^\s*\*\*\*.*\*\*\*\s*$|"
    r"^\s*end of (the )?(project gutenberg|e-?text|ebook)|this e-?text was prepared|^\s*transcriber'?s note",
    re.I,
)


def remove_gutenberg_lines(text: str) -> str:
    """Drops lines of Project Gutenberg boilerplate left inside a piece."""
    if "gutenberg" not in text.lower() and "***" not in text and "produced by" not in text.lower():
        return text
    return "\n".join(ln for ln in text.split("\n") if not GUTENBERG_LINE.search(ln))


MULTI_SPACE = re.compile(r"[ \t]+")
MANY_BLANKS = re.compile(r"\n\s*\n(\s*\n)+")
REPEATED_PUNCT = re.compile(r"([!?])\1{2,}")
SPACE_BEFORE_PUNCT = re.compile(r"(?<=\w) +([,;:!?](?!\w))")


def normalise_whitespace(text: str) -> str:
    """Collapses spaces, strips lines, keeps at most one blank line, cuts ``!!!!`` to ``!!!``."""
    text = MULTI_SPACE.sub(" ", text)
    text = "\n".join(ln.strip() for ln in text.split("\n"))
    text = MANY_BLANKS.sub("\n\n", text)
    text = REPEATED_PUNCT.sub(r"\1\1\1", text)
    text = SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text.strip()


@lru_cache(maxsize=1)
def sentencizer():  # noqa: ANN201 - spaCy Language
    """A blank English spaCy pipeline with the rule-based sentencizer (no downloaded model needed).

    A trained pipeline (``en_core_web_sm``) is used instead when one is installed.
    """
    import spacy

    try:
        nlp = spacy.load("en_core_web_sm", exclude=["ner", "lemmatizer", "textcat"])
    except OSError:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")
    return nlp


WORD_SPANS = re.compile(r"\S+")


def truncate_at_sentence(text: str, max_words: int, window: int = 80) -> str:
    """Cuts ``text`` to at most ``max_words`` whitespace words at the last sentence boundary that fits.

    Sentence boundaries come from spaCy's sentencizer, which decides each boundary from the tokens
    around it, so only a window of ``window`` words before the cut is segmented (the whole head is
    segmented when no boundary falls inside the window). Line breaks are kept. If even the first
    sentence is too long, the text is cut at ``max_words`` words.
    """
    spans = [m.span() for m in WORD_SPANS.finditer(text)]
    if len(spans) <= max_words:
        return text
    limit = spans[max_words - 1][1]  # end of the last word allowed
    for first in (max(0, max_words - window), 0):
        offset = spans[first][0]
        doc = sentencizer()(text[offset: spans[min(len(spans) - 1, max_words)][1]])
        ends = [offset + sent.end_char for sent in doc.sents if offset + sent.end_char <= limit]
        # The window's last "sentence" may stop at the window edge, not at punctuation: only whole ones count.
        ends = [e for e in ends if e < limit or text[e - 1] in ".!?\"')]*"]
        if ends and (first == 0 or ends[-1] > offset):
            return text[: ends[-1]].rstrip()
        if first == 0:
            break
    return text[:limit]


# --- frame-level rules ----------------------------------------------------------------------------------

def _word_count(series: pd.Series) -> pd.Series:
    return series.str.split().str.len().fillna(0).astype(int)


def _minhash_signatures(texts: list[str], num_perm: int = 64, shingle: int = 5, seed: int = 1) -> np.ndarray:
    """MinHash signatures of word ``shingle``-grams (a ``(len(texts), num_perm)`` uint32 array).

    Vectorised over the whole corpus: words are hashed once each (CRC-32, so signatures are the same
    in every process), all texts' word hashes are laid end to end, shingle hashes are combined from
    shifted slices, shingles that would cross into the next text are dropped, and each permutation
    (a multiply-add hash in wrapping uint32 arithmetic, which numpy vectorises) is reduced per text
    with ``np.minimum.reduceat``. A text shorter than ``shingle`` words gets one shingle of all its words.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    mix = np.array([(0x9E3779B1 * (2 * k + 1)) & 0xFFFFFFFF for k in range(shingle)], dtype=np.uint32)
    docs = [t.lower().split() or [""] for t in texts]
    vocab = {w: zlib.crc32(w.encode()) for w in set().union(*docs)} if docs else {}
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    ids = np.fromiter((vocab[w] for d in docs for w in d), dtype=np.uint32, count=int(lengths.sum()))
    ids = np.concatenate([ids, np.zeros(shingle, dtype=np.uint32)])  # room for the last shifted slices
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n = len(ids) - shingle
    pos = np.arange(n)
    owner_end = np.repeat(starts + lengths, lengths)  # end of the text each position belongs to
    with np.errstate(over="ignore"):  # wrapping arithmetic is the point
        values = np.zeros(n, dtype=np.uint32)
        for k in range(shingle):
            # Words past the text's end contribute nothing, so a short text's shingle is all its words.
            values += np.where(pos + k < owner_end, ids[k: k + n] * mix[k], np.uint32(0))
        # Keep shingles that start a full window inside their text, plus position 0 of short texts.
        short_start = (pos == np.repeat(starts, lengths)) & (np.repeat(lengths, lengths) < shingle)
        keep = (pos + shingle <= owner_end) | short_start
        values, kept_pos = values[keep], pos[keep]
        offsets = np.searchsorted(kept_pos, starts)
        perm = values[None, :] * a[:, None] + b[:, None]  # (num_perm, shingles)
        sigs = np.minimum.reduceat(perm, offsets, axis=1).T  # (texts, num_perm)
    return np.ascontiguousarray(sigs)


def near_duplicate_mask(texts: list[str], threshold: float, num_perm: int = 64, bands: int = 16) -> np.ndarray:
    """Marks texts whose estimated Jaccard similarity to an *earlier* text is ≥ ``threshold``.

    Candidate pairs come from locality-sensitive hashing over ``bands`` bands of the MinHash
    signature; each candidate is confirmed by the signature agreement.
    """
    n = len(texts)
    drop = np.zeros(n, dtype=bool)
    if n < 2:
        return drop
    sigs = _minhash_signatures(texts, num_perm=num_perm)
    rows = num_perm // bands
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for i in range(n):
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, sigs[i, band * rows: (band + 1) * rows].tobytes())
            seen = buckets.setdefault(key, [])
            candidates.update(seen)
            seen.append(i)
        if candidates:
            cand = np.fromiter(candidates, dtype=np.int64)
            cand = cand[~drop[cand]]
            if cand.size and (np.mean(sigs[cand] == sigs[i], axis=1) >= threshold).any():
                drop[i] = True
    return drop


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


WORD = re.compile(r"[a-z']+")


def stopword_ratio(text: str) -> float:
    """Share of the words of ``text`` that are English stop words (spaCy's list)."""
    words = WORD.findall(text.lower())
    if not words:
        return 0.0
    stops = _stop_words()
    return sum(w in stops for w in words) / len(words)


# --- the pipeline of rules ------------------------------------------------------------------------------

Rule = Callable[[pd.DataFrame, CleaningConfig], pd.DataFrame]


PARALLEL_MIN_CHARS = 400_000  # below this, forking costs more than it saves


def _map_text(frame: pd.DataFrame, fn: Callable[[str], str], columns: tuple[str, ...] = ("prompt", "text"),
              mask: pd.Series | None = None) -> pd.DataFrame:
    out = frame.copy()
    for col in columns:
        if mask is None:
            out[col] = [fn(t) for t in out[col]]
        elif mask.any():
            out.loc[mask, col] = [fn(t) for t in out.loc[mask, col]]
    return out


def rule_unicode(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Unicode normalisation of prompt and text."""
    return _map_text(frame, normalise_unicode)


def rule_writingprompts(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """WritingPrompts artefacts, on rows that have them (any source: users may feed WP-style CSV files)."""
    out = frame.copy()
    has_wp = out["text"].str.contains("<newline>", case=False, regex=False) | out["prompt"].str.contains(
        WP_TAG_ANY) | (out["source"] == "writingprompts")
    from_wp = out["source"] == "writingprompts"
    for mask, force in ((has_wp & from_wp, True), (has_wp & ~from_wp, False)):
        out = _map_text(out, partial(fix_writingprompts_text, force=force), columns=("text",), mask=mask)
        out = _map_text(out, partial(fix_writingprompts_prompt, force=force), columns=("prompt",), mask=mask)
    return out


def rule_gutenberg(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Project Gutenberg boilerplate lines."""
    return _map_text(frame, remove_gutenberg_lines, columns=("text",))


def rule_whitespace(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Whitespace and repeated punctuation."""
    return _map_text(frame, normalise_whitespace)


def rule_truncate(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Long pieces cut at a sentence boundary."""
    long = _word_count(frame["text"]) > cfg.max_words
    return _map_text(frame, partial(truncate_at_sentence, max_words=cfg.max_words), columns=("text",), mask=long)


def rule_length(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Length filters on pieces and prompts."""
    words, pwords = _word_count(frame["text"]), _word_count(frame["prompt"])
    keep = (words >= cfg.min_words) & (pwords >= cfg.min_prompt_words) & (pwords <= cfg.max_prompt_words)
    return frame[keep]


def _dedupe_key(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def rule_exact_dupes(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Exact duplicates of (normalised) text."""
    keys = frame["text"].map(_dedupe_key)
    return frame[~keys.duplicated()]


def rule_near_dupes(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """MinHash near-duplicates."""
    return frame[~near_duplicate_mask(frame["text"].tolist(), cfg.near_dupe_threshold)]


def rule_english(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Stop-word-ratio English filter."""
    ratios = frame["text"].map(stopword_ratio)
    return frame[ratios >= cfg.min_stopword_ratio]


def rule_blocklist(frame: pd.DataFrame, cfg: CleaningConfig) -> pd.DataFrame:
    """Blocklisted words (whole words, case-insensitive) in prompt or text."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in cfg.blocklist) + r")\b", re.I)
    hit = frame["text"].str.contains(pattern) | frame["prompt"].str.contains(pattern)
    return frame[~hit]


# Per-row rules look at one piece at a time (and run in parallel over chunks of rows); the dedupe rules
# compare pieces with each other and run last, over the whole frame.
ROW_RULES: list[tuple[str, Rule]] = [
    ("unicode", rule_unicode),
    ("writingprompts", rule_writingprompts),
    ("gutenberg", rule_gutenberg),
    ("whitespace", rule_whitespace),
    ("truncate", rule_truncate),
    ("length", rule_length),
    ("english", rule_english),
    ("blocklist", rule_blocklist),
]
CORPUS_RULES: list[tuple[str, Rule]] = [
    ("exact_dupes", rule_exact_dupes),
    ("near_dupes", rule_near_dupes),
]
RULE_NAMES: tuple[str, ...] = tuple(name for name, _ in ROW_RULES + CORPUS_RULES)


def _enabled(name: str, cfg: CleaningConfig) -> bool:
    if name == "blocklist":
        return bool(cfg.blocklist)
    return bool(getattr(cfg, name))


def _run_rules(
    frame: pd.DataFrame, cfg: CleaningConfig, rules: list[tuple[str, Rule]]
) -> tuple[pd.DataFrame, list[dict]]:
    """Runs ``rules`` in order on ``frame``; returns the result and one stats dict per rule."""
    stats = []
    for name, rule in rules:
        rows_in, enabled = len(frame), _enabled(name, cfg)
        row = {"rule": name, "enabled": enabled, "rows_in": rows_in, "rows_out": rows_in, "removed": 0,
               "changed": 0, "seconds": 0.0}
        if enabled and rows_in:
            t0 = time.perf_counter()
            result = rule(frame, cfg)
            kept = frame.loc[result.index]
            row.update(rows_out=len(result), removed=rows_in - len(result), seconds=time.perf_counter() - t0,
                       changed=int(((kept["prompt"] != result["prompt"]) | (kept["text"] != result["text"])).sum()))
            frame = result
        stats.append(row)
    return frame, stats


def _run_row_rules_chunk(args: tuple[pd.DataFrame, CleaningConfig]) -> tuple[pd.DataFrame, list[dict]]:
    return _run_rules(args[0], args[1], ROW_RULES)


def _sum_stats(parts: list[list[dict]]) -> list[dict]:
    total = [dict(row) for row in parts[0]]
    for part in parts[1:]:
        for acc, row in zip(total, part, strict=True):
            for key in ("rows_in", "rows_out", "removed", "changed"):
                acc[key] += row[key]
            acc["seconds"] = max(acc["seconds"], row["seconds"])  # wall time: the chunks ran side by side
    return total


def clean_corpus(frame: pd.DataFrame, cfg: CleaningConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs every enabled rule: the per-row rules (in ``cfg.workers`` processes on large frames), then dedupe.

    Args:
        frame: A frame of the data contract.
        cfg: The rules' settings; defaults when None.

    Returns:
        ``(cleaned, stats)``: the cleaned frame and one stats row per rule with the columns
        ``rule, enabled, rows_in, rows_out, removed, changed, seconds``. The result does not depend on
        the number of workers.

    Raises:
        DataError: If the frame breaks the contract, or no piece survives; the message names the rule
            that removed the last pieces.
    """
    cfg = cfg or CleaningConfig()
    current = validate_frame(frame, where="clean_data input")
    chars = int(current["text"].str.len().sum())
    if cfg.workers > 1 and chars >= PARALLEL_MIN_CHARS and len(current) >= 2 * cfg.workers:
        import multiprocessing as mp

        # Build the cached NLP objects here, so that forked workers inherit them instead of each
        # building its own on every call.
        if cfg.truncate:
            sentencizer()
        if cfg.writingprompts:
            _detokenizer()
        _stop_words()
        bounds = np.linspace(0, len(current), cfg.workers + 1).astype(int)
        chunks = [(current.iloc[lo:hi], cfg) for lo, hi in itertools.pairwise(bounds)]
        with mp.get_context("fork").Pool(cfg.workers) as pool:
            results = pool.map(_run_row_rules_chunk, chunks)
            pool.close()  # let the workers exit: the with-block's terminate() would SIGTERM them, and the
            pool.join()   # signal handler a forked ZenML step inherits logs "Received signal 15" for each
        current = pd.concat([r[0] for r in results])
        row_stats = _sum_stats([r[1] for r in results])
    else:
        current, row_stats = _run_rules(current, cfg, ROW_RULES)
    current, corpus_stats = _run_rules(current, cfg, CORPUS_RULES)
    stats = pd.DataFrame(row_stats + corpus_stats)
    stats["seconds"] = stats["seconds"].round(4)
    emptied = stats[(stats["rows_out"] == 0) & (stats["rows_in"] > 0)]
    if current.empty:
        culprit = emptied["rule"].iloc[0] if len(emptied) else "?"
        raise DataError(
            f"cleaning removed every piece (rule '{culprit}' dropped the last ones; per rule: "
            f"{dict(zip(stats['rule'], stats['removed'], strict=True))}); loosen the rules in the profile's "
            "clean_data parameters"
        )
    return current.reset_index(drop=True), stats
