"""Real test sets: held-out text from outside the training data, measured for every candidate.

A profile names them by source spec in ``parameters.real_tests`` (or ``python run.py --real-test SPEC``),
e.g. ``tinystories:FILE?limit=400`` or ``text:BOOK?split=titles&form=story``. Each spec is one test set:

- it is loaded with the data loaders and cleaned by the **training data's cleaning rules** (the profile's
  ``clean_data`` config), so its pieces look like the pieces the models learnt from;
- it must be **held out**: every piece's normalised text is compared with the training and validation
  pieces of the split, and one shared piece stops the run (:func:`check_held_out`); the sets' fingerprints
  are logged next to the training split's, so a reader can check that later too;
- every candidate gets the same seeded sample of ``real_pieces`` pieces per set for per-word perplexity,
  and ``real_ranking_pieces`` prompt-ranking trials against ``distractors`` other prompts *of the same set*,
  scored on the first ``ranking_words`` words (see :mod:`evaluation.suite`).

The figures are reported, not gated on: a real set says how a candidate does on text no template wrote.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from corpus.cleaning import CleaningConfig, clean_corpus
from corpus.loaders import load_one, parse_spec
from corpus.schema import SPLIT_COLUMN, DataError, empty_frame

log = logging.getLogger(__name__)
WORD = re.compile(r"\w+")
HELD_OUT_FROM = ("train", "validation")  # the pieces a trainer reads (validation steers early stopping)
REAL_COLUMNS = ("candidate", "test_set", "pieces", "ppl_word", "ranking_trials", "ranking_acc", "chance")


def set_name(raw_spec: str) -> str:
    """A short, metric-safe name for a test set: ``scheme-stem`` (plus the WritingPrompts split).

    Examples: ``tinystories:data/TinyStories-valid.txt`` → ``tinystories-TinyStories-valid``;
    ``writingprompts:data/wp?split=test`` → ``writingprompts-test``.
    """
    spec = parse_spec(raw_spec)
    stem = Path(spec.target.split(":")[0]).stem if spec.target else ""
    if spec.scheme == "writingprompts":
        stem = spec.opt("split", "train")
    name = f"{spec.scheme}-{stem}" if stem else spec.scheme
    return re.sub(r"[^\w.-]+", "_", name)


def load_real_tests(specs: list[str], cleaning: CleaningConfig | None = None) -> pd.DataFrame:
    """Loads and cleans every real test set; the ``source`` column holds the set's name.

    Args:
        specs: One source spec per test set.
        cleaning: The training data's cleaning rules (defaults when None).

    Returns:
        One frame of the data contract (empty when ``specs`` is empty).

    Raises:
        DataError: If a spec fails to load, two specs share a name, or a set has no piece left after cleaning.
    """
    frames = []
    seen: dict[str, str] = {}
    for raw in specs:
        name = set_name(raw)
        if name in seen:
            raise DataError(f"real tests '{seen[name]}' and '{raw}' are both named '{name}'; "
                            "give one file another name")
        seen[name] = raw
        frame = load_one(raw)
        try:
            cleaned, _ = clean_corpus(frame, cleaning or CleaningConfig())
        except DataError as exc:
            raise DataError(f"real test '{raw}' ({len(frame)} pieces): {exc}") from None
        log.info("real test %s: %d pieces (%d before cleaning)", name, len(cleaned), len(frame))
        cleaned = cleaned.assign(source=name, id=name + "/" + cleaned["id"])
        frames.append(cleaned)
    if not frames:
        return empty_frame()
    return pd.concat(frames, ignore_index=True)


def text_key(text: str) -> str:
    """A piece's text with case, punctuation and spacing normalised away (what "the same piece" means here)."""
    return " ".join(WORD.findall(text.lower()))


def check_held_out(real: pd.DataFrame, split: pd.DataFrame) -> dict[str, int]:
    """Checks that no real test piece is also a training or validation piece.

    Args:
        real: The real test sets (``source`` names the set).
        split: The split corpus the candidates were trained on.

    Returns:
        ``set name -> pieces checked``.

    Raises:
        DataError: If a set shares a piece with the training data, naming the set, the count and an example.
    """
    seen = split[split[SPLIT_COLUMN].isin(HELD_OUT_FROM)]
    trained = dict(zip(seen["text"].map(text_key), seen["id"], strict=True))
    checked = {}
    for name, part in real.groupby("source", sort=False):
        keys = part["text"].map(text_key)
        shared = keys.isin(trained.keys())
        if shared.any():
            first = part.loc[shared, "id"].iloc[0]
            raise DataError(f"real test '{name}': {int(shared.sum())} of {len(part)} pieces are also in the training "
                            f"data (e.g. {first} = training piece {trained[keys[shared].iloc[0]]}); a real test set "
                            "must be held out: drop it from the dataset or name another file")
        checked[str(name)] = len(part)
    return checked


def set_fingerprint(part: pd.DataFrame) -> str:
    """A short fingerprint of one set's content (normalised texts, order-free)."""
    h = hashlib.sha256()
    for key in sorted(part["text"].map(text_key)):
        h.update(key.encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def describe_sets(real: pd.DataFrame, checked: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per set: pieces, content fingerprint and the held-out check's result (for the selection and MLflow)."""
    return {str(name): {"pieces": len(part), "fingerprint": set_fingerprint(part),
                        "checked_against": "+".join(HELD_OUT_FROM), "shared_with_training": 0,
                        "checked": checked.get(str(name), 0)}
            for name, part in real.groupby("source", sort=False)}


def held_out_sets(real: pd.DataFrame, split: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """:func:`check_held_out`, then :func:`describe_sets` (what the load step logs and the evaluation records).

    Raises:
        DataError: If a set shares a piece with the training data.
    """
    return describe_sets(real, check_held_out(real, split))


__all__ = ["REAL_COLUMNS", "check_held_out", "describe_sets", "held_out_sets", "load_real_tests", "set_fingerprint",
           "set_name", "text_key"]
