"""Preference pairs from writers' feedback: what a writer kept, thumbed up or rewrote over what they did not.

A verdict (:class:`workspace.traffic.FeedbackIn`) becomes pairs ``(prompt, chosen, rejected)``:

* ``kept``: the kept draft over each draft left beside it;
* ``edited``: the writer's rewrite over the draft as the model wrote it;
* ``up``/``down``: within one request, each draft thumbed up over each draft thumbed down.

Pairs are deduplicated (the same prompt, chosen and rejected text once, whoever sent them) and pairs whose
sides are equal or empty are dropped. :func:`pairs_fingerprint` names the set, so a training run on the same
pairs is a cache hit and a new verdict trains again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt", "form", "genre", "chosen", "rejected", "source", "writer", "model_version")


def _verdict_pairs(row: pd.Series) -> Iterator[tuple[str, str, str]]:
    if row["kind"] == "kept":
        for other in row["others"] or []:
            yield row["text"], other, "kept"
    elif row["kind"] == "edited" and row["edited"]:
        yield row["edited"], row["text"], "edited"


def feedback_pairs(feedback: pd.DataFrame) -> pd.DataFrame:
    """The preference pairs in ``feedback`` (rows of :func:`workspace.traffic.read_feedback`), deduplicated.

    Returns:
        Columns :data:`PAIR_COLUMNS`; ``source`` is ``kept``, ``edited`` or ``thumbs``.
    """
    rows: list[dict[str, str]] = []

    def add(row: pd.Series, chosen: str, rejected: str, source: str) -> None:
        rows.append({"prompt": row["prompt"], "form": row["form"], "genre": row["genre"], "chosen": chosen.strip(),
                     "rejected": rejected.strip(), "source": source, "writer": row["writer"],
                     "model_version": row.get("model_version", "") or ""})

    for _, row in feedback.iterrows():
        for chosen, rejected, source in _verdict_pairs(row):
            add(row, chosen, rejected, source)
    thumbs = feedback[feedback["kind"].isin(["up", "down"])] if len(feedback) else feedback
    for _, verdicts in thumbs.groupby("request_id") if len(thumbs) else []:
        ups = verdicts[verdicts["kind"] == "up"]
        downs = verdicts[verdicts["kind"] == "down"]
        for (_, up), (_, down) in product(ups.iterrows(), downs.iterrows()):
            add(up, up["text"], down["text"], "thumbs")
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS))
    pairs = pairs[(pairs["chosen"] != "") & (pairs["rejected"] != "") & (pairs["chosen"] != pairs["rejected"])]
    return pairs.drop_duplicates(subset=["prompt", "chosen", "rejected"]).reset_index(drop=True)


def pairs_fingerprint(pairs: pd.DataFrame) -> str:
    """SHA-256 over the pairs' prompt, form, genre, chosen and rejected text, in a fixed order."""
    digest = hashlib.sha256()
    for key in sorted(pairs[["prompt", "form", "genre", "chosen", "rejected"]].itertuples(index=False, name=None)):
        digest.update("\x1f".join(key).encode() + b"\x1e")
    return digest.hexdigest()


def _open(configured_url: str = "") -> Any | None:
    """The workspace database's engine, migrated; None when it is a SQLite file that does not exist yet."""
    from workspace.db import connect, database_url, migrate

    url = database_url(configured_url)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    engine = connect(url)
    migrate(engine)
    return engine


def feedback_state(configured_url: str = "") -> str:
    """A cheap fingerprint of the feedback in the workspace database ('' when there is no database yet).

    ``run.py`` passes it to the training pipeline, so new feedback re-runs the pair builder and the trainer.
    """
    from workspace.traffic import feedback_fingerprint

    try:
        engine = _open(configured_url)
    except Exception as exc:  # an unreachable database is said, not fatal: training runs without its pairs
        log.warning("the workspace database cannot be read (%s): training without writers' pairs", exc)
        return "unavailable"
    return "" if engine is None else feedback_fingerprint(engine)


def writer_pairs(configured_url: str = "") -> pd.DataFrame:
    """Every preference pair in the workspace database's feedback (empty when there is no database yet)."""
    from workspace.traffic import read_feedback

    engine = _open(configured_url)
    if engine is None:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    return feedback_pairs(read_feedback(engine))
