"""Checks each story-quality measure on pairs whose order is known before the evaluation trusts it.

A pair is a real piece against the same piece made worse in one known way (UNION-style perturbations,
Guan & Huang 2020): its sentences shuffled, a character renamed halfway, another prompt's piece, an ending
taken from another piece, cut off halfway, a paragraph of commentary inserted, or a passage looped. Each
measure is checked on the perturbation it is meant to see; it orders a pair right when it scores the real
piece strictly higher (a tie is a miss). A measure that orders fewer than ``min_accuracy`` of its pairs
right, or has fewer than ``min_pairs`` pairs, is reported and not trusted (the story-quality score leaves
it out). The composite (the mean of the trusted measures) is then checked on those measures' pairs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluation.quality import MEASURES, Judge, names, score_pieces, shuffled, split_ending, story_quality, units

PERTURBATIONS = {
    "coherence": "sentences shuffled",
    "relevance": "another prompt's piece",
    "ending_fit": "last sentence from another piece",
    "closure": "cut off halfway (at a sentence end)",
    "consistency": "a character renamed halfway",
    "in_fiction": "a paragraph of commentary inserted",
    "fresh": "a passage looped",
}
# Written apart from the detector's patterns (evaluation.quality.META) and in other words where possible:
# the check is only as fair as this pool is unlike the patterns.
COMMENTARY = (
    "Great! Let's get started on your story. I will keep it short and sweet.",
    "In this story, the main character learns an important lesson about friendship and trust.",
    "I hope you enjoyed reading this little tale as much as I enjoyed writing it.",
    "Note: this draft can be made longer or shorter; let me know which parts to change.",
    "This story explores themes of courage and loss, and the ending is meant to be open.",
    "Sure, here is a short story based on the prompt you gave me.",
    "As an AI, I do not have feelings, but I tried to capture how the characters feel.",
    "The story above uses vivid imagery to make the setting feel real to the reader.",
    "Would you like me to continue the story or write a different ending?",
    "Word count: about two hundred words. Feel free to ask for changes.",
)
FRESH_NAMES = ("Marisol", "Pell", "Oskarine", "Juniper", "Tobiah", "Wrenna", "Caspian", "Isolde", "Barnaby", "Ottoline")


@dataclass(frozen=True)
class Pair:
    """One known-order pair: the real piece first, the worse one second."""

    measure: str
    source: str
    prompt: str
    good: str
    bad: str


def rename_halfway(text: str, rng: random.Random) -> str | None:
    """The piece with one character's name changed in its second half (None with no name used there)."""
    words = text.split(" ")
    half = len(words) // 2
    second = " ".join(words[half:])
    later = names(second)
    used = [n for n in dict.fromkeys(names(text)) if n in later]
    if not used:
        return None
    recurring = [n for n in used if later.count(n) >= 2]  # a character who keeps appearing, where there is one
    old = rng.choice(recurring or used)
    new = next(n for n in FRESH_NAMES if n not in text)
    return " ".join(words[:half]) + " " + re.sub(rf"\b{old}\b", new, second)


def cut_halfway(text: str, rng: random.Random) -> str | None:
    """The piece cut after 40–60 % of its sentences (None with fewer than four)."""
    parts = units(text)
    if len(parts) < 4:
        return None
    keep = max(1, min(len(parts) - 2, round(len(parts) * rng.uniform(0.4, 0.6))))
    end = text.find(parts[keep - 1]) + len(parts[keep - 1])
    return text[:end].strip() if end > 0 else None


def loop_passage(text: str, rng: random.Random) -> str | None:
    """The piece with a run of two sentences repeated twice more (None with fewer than three sentences)."""
    parts = units(text)
    if len(parts) < 3:
        return None
    start = rng.randrange(len(parts) - 1)
    span = " ".join(parts[start: start + 2])
    at = text.find(parts[start + 1]) + len(parts[start + 1])
    return f"{text[:at]} {span} {span}{text[at:]}"


def insert_commentary(text: str, rng: random.Random) -> str:
    """The piece with a paragraph of commentary before its last paragraph (or at its end)."""
    note = rng.choice(COMMENTARY)
    paragraphs = [p for p in text.strip().split("\n\n") if p.strip()]
    if len(paragraphs) > 1:
        return "\n\n".join([*paragraphs[:-1], note, paragraphs[-1]])
    return f"{text.strip()}\n\n{note}"


def other_ending(text: str, donor: str) -> str | None:
    """The piece's body with the donor's last sentence as its ending (None when either is too short)."""
    mine, theirs = split_ending(text), split_ending(donor)
    if mine is None or theirs is None or mine[1] == theirs[1]:
        return None
    return f"{mine[0]} {theirs[1]}"


def _donor(i: int, texts: list[str], prompts: list[str]) -> str | None:
    """The next piece (cyclically) written for another prompt."""
    for k in range(1, len(texts)):
        j = (i + k) % len(texts)
        if prompts[j] != prompts[i] and texts[j] != texts[i]:
            return texts[j]
    return None


def build_pairs(pieces: pd.DataFrame, seed: int = 0, per_measure: int = 40) -> list[Pair]:
    """Up to ``per_measure`` known-order pairs per measure from real pieces (``prompt, text``; ``source`` optional).

    Raises:
        ValueError: With fewer than two pieces, or pieces without ``prompt`` and ``text`` columns.
    """
    missing = [c for c in ("prompt", "text") if c not in pieces]
    if missing:
        raise ValueError(f"measure check pieces lack column(s) {missing}")
    if len(pieces) < 2:
        raise ValueError(f"the measure check needs at least two pieces, got {len(pieces)}")
    rng = random.Random(seed)
    rows = pieces.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    texts, prompts = [str(t).strip() for t in rows["text"]], [str(p) for p in rows["prompt"]]
    sources = [str(s) for s in rows["source"]] if "source" in rows else ["pieces"] * len(rows)
    pairs: list[Pair] = []
    for measure in MEASURES:
        made = 0
        for i, text in enumerate(texts):
            if made >= per_measure:
                break
            donor = _donor(i, texts, prompts)
            bad: str | None
            if measure == "coherence":
                bad = shuffled(text, seed + i)
            elif measure == "relevance":
                bad = donor
            elif measure == "ending_fit":
                bad = other_ending(text, donor) if donor else None
            elif measure == "closure":
                bad = cut_halfway(text, rng)
            elif measure == "consistency":
                bad = rename_halfway(text, rng)
            elif measure == "in_fiction":
                bad = insert_commentary(text, rng)
            else:
                bad = loop_passage(text, rng)
            if bad and bad.strip() != text:
                pairs.append(Pair(measure, sources[i], prompts[i], text, bad))
                made += 1
    return pairs


def pairs_by_source(pieces: pd.DataFrame, seed: int, per_measure: int) -> list[Pair]:
    """:func:`build_pairs` within each source (``source`` column; a donor piece comes from the same source)."""
    if "source" not in pieces:
        return build_pairs(pieces, seed, per_measure)
    return [p for _, part in pieces.groupby("source", sort=False) if len(part) >= 2
            for p in build_pairs(part, seed, per_measure)]


def check_measures(pairs: Sequence[Pair], judge: Judge | None, min_accuracy: float = 0.8, min_pairs: int = 10,
                   seed: int = 0, composite_pairs: int = 0) -> pd.DataFrame:
    """Each measure's accuracy on its own pairs, and whether it is trusted, then the composite's on all pairs.

    Args:
        pairs: The known-order pairs (:func:`build_pairs`).
        judge: The likelihood judge (None: the likelihood measures are reported as unchecked).
        min_accuracy: Share of pairs a measure must order right to be trusted.
        min_pairs: Pairs a measure needs to be judged at all.
        seed: Seed of the coherence shuffles.
        composite_pairs: Pairs per measure the composite is checked on (0 = all; the composite scores
            every trusted measure on each, so this bounds its cost).

    Returns:
        One row per measure (and a last row ``story_quality``): ``measure, perturbation, pairs, right,
        accuracy, trusted, why`` and per source its accuracy (``accuracy_<source>``).
    """
    rows = []
    for measure in MEASURES:
        mine = [p for p in pairs if p.measure == measure]
        row = {"measure": measure, "perturbation": PERTURBATIONS[measure], "pairs": len(mine)}
        if judge is None and measure in {"coherence", "relevance", "ending_fit", "closure"}:
            rows.append({**row, "right": 0, "accuracy": float("nan"), "trusted": False,
                         "why": "no judge model (the suite names no reference_model)"})
            continue
        hits = _hits(mine, judge, [measure], seed)
        rows.append({**row, **_verdict(mine, hits, min_accuracy, min_pairs)})
    frame = pd.DataFrame(rows)
    trusted = list(frame.loc[frame["trusted"], "measure"])
    composite = {"measure": "story_quality", "perturbation": "those of the trusted measures"}
    if trusted:
        chosen = [p for m in trusted for p in [q for q in pairs if q.measure == m][: composite_pairs or None]]
        composite["pairs"] = len(chosen)
        hits = _hits(chosen, judge, trusted, seed, composite=True)
        verdict = _verdict(chosen, hits, min_accuracy, min(min_pairs, len(chosen)))
        verdict["why"] = (f"the mean of the trusted measures ({', '.join(trusted)}) on 0…1 "
                          f"{verdict['why'].replace('orders', 'keeps the order of')}")
        composite.update(verdict)
    else:
        composite.update(pairs=0, right=0, accuracy=float("nan"), trusted=False, why="no measure is trusted")
    return pd.concat([frame, pd.DataFrame([composite])], ignore_index=True)


def _hits(pairs: list[Pair], judge: Judge | None, measures: list[str], seed: int,
          composite: bool = False) -> list[bool]:
    if not pairs:
        return []
    prompts = [p.prompt for p in pairs] * 2
    texts = [p.good for p in pairs] + [p.bad for p in pairs]
    scores = score_pieces(prompts, texts, judge, measures, seed)
    values = story_quality(scores, measures) if composite else scores.raw[measures[0]]
    n = len(pairs)
    return [values[i] > values[i + n] for i in range(n)]


def _verdict(pairs: list[Pair], hits: list[bool], min_accuracy: float, min_pairs: int) -> dict:
    right = sum(hits)
    accuracy = right / len(hits) if hits else float("nan")
    by_source: dict[str, list[bool]] = {}
    for pair, hit in zip(pairs, hits, strict=True):
        by_source.setdefault(pair.source, []).append(hit)
    trusted = len(hits) >= min_pairs and accuracy >= min_accuracy
    if len(hits) < min_pairs:
        why = f"only {len(hits)} pairs (at least {min_pairs} needed)"
    elif accuracy < min_accuracy:
        why = f"orders {accuracy:.0%} of its pairs right, under {min_accuracy:.0%}"
    else:
        why = f"orders {accuracy:.0%} of its pairs right"
    return {"right": right, "accuracy": accuracy, "trusted": trusted, "why": why,
            **{f"accuracy_{s}": sum(h) / len(h) for s, h in by_source.items()}}


CHECK_VERSION = 1  # raise when a measure or a perturbation changes: cached checks are then made again


def trusted(check: pd.DataFrame) -> list[str]:
    """The measures a check trusts (the composite row left out), in ``MEASURES`` order."""
    ok = set(check.loc[check["trusted"].astype(bool) & (check["measure"] != "story_quality"), "measure"])
    return [m for m in MEASURES if m in ok]


def cached_check(pieces: pd.DataFrame, judge: Judge | None, judge_id: str, pairs: int, min_accuracy: float,
                 composite_pairs: int, seed: int, cache: Path | None = None) -> pd.DataFrame:
    """:func:`check_measures` on pairs built from ``pieces``, kept on disk under a key of everything it depends on.

    The key is the pieces (prompt and text), the judge (``judge_id``: its checkpoint's fingerprint), the
    settings and :data:`CHECK_VERSION`, so a training run that only retrains a model reuses the check.

    Args:
        pieces: Real pieces (``prompt, text``; ``source`` optional: pairs are made within each source).
        judge: The likelihood judge, or None.
        judge_id: What identifies the judge's weights ("" without a judge).
        pairs: Pairs per measure.
        min_accuracy: Share a measure must order right to be trusted.
        composite_pairs: Pairs per measure for the composite's check.
        seed: Seed of the pairs and shuffles.
        cache: The folder (default: ``measure-checks`` beside the checkpoint cache).
    """
    import hashlib
    import json
    import os
    import tempfile

    from weights.checkpoints import cache_root

    sources = pieces["source"] if "source" in pieces else [""] * len(pieces)
    payload = json.dumps({"pieces": [[str(s), str(p), str(t)] for s, p, t in zip(sources, pieces["prompt"],
                                                                                 pieces["text"], strict=True)],
                          "judge": judge_id, "pairs": pairs, "min_accuracy": min_accuracy,
                          "composite": composite_pairs, "seed": seed, "version": CHECK_VERSION}, sort_keys=True)
    key = hashlib.sha256(payload.encode()).hexdigest()[:20]
    folder = cache or cache_root().parent / "measure-checks"
    path = folder / f"{key}.json"
    if path.is_file():
        return pd.read_json(path, orient="records")
    built = pairs_by_source(pieces, seed, pairs)
    result = check_measures(built, judge, min_accuracy, min(10, pairs), seed, composite_pairs)
    folder.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(fd)
    result.to_json(scratch, orient="records", double_precision=15)
    os.replace(scratch, path)  # whole or not at all
    return result
