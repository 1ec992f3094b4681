"""Deterministic train/validation/test split by a stable hash of each piece's id.

A piece's split depends only on its id and the salt, never on the other pieces: adding data later does
not move existing pieces between splits, and a piece never leaks from test into train across runs.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from corpus.schema import SPLIT_COLUMN, SPLITS, DataError, validate_frame


def bucket(piece_id: str, salt: str) -> float:
    """Maps an id to a stable number in [0, 1) (SHA-256 of ``salt:id``)."""
    digest = hashlib.sha256(f"{salt}:{piece_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(frame: pd.DataFrame, validation: float = 0.1, test: float = 0.1, salt: str = "creative-writer",
                  min_rows: int = 1) -> pd.DataFrame:
    """Adds the ``split`` column (``train`` / ``validation`` / ``test``).

    Args:
        frame: A frame of the data contract.
        validation: Share of pieces for validation.
        test: Share of pieces for test.
        salt: Changes the assignment as a whole (keep it fixed to keep splits stable).
        min_rows: Each split must get at least this many pieces.

    Returns:
        A copy of the frame with the ``split`` column.

    Raises:
        DataError: If the shares are out of range or a split ends up with fewer than ``min_rows`` pieces.
    """
    for name, share in (("validation", validation), ("test", test)):
        if not 0.0 < share < 1.0:
            raise DataError(f"split: '{name}' share must be between 0 and 1, got {share}")
    if validation + test >= 1.0:
        raise DataError(f"split: validation + test must leave room for train, got {validation} + {test}")
    out = validate_frame(frame, where="split_data input")
    u = out["id"].map(lambda i: bucket(i, salt))
    out[SPLIT_COLUMN] = "train"
    out.loc[u < test, SPLIT_COLUMN] = "test"
    out.loc[(u >= test) & (u < test + validation), SPLIT_COLUMN] = "validation"
    counts = out[SPLIT_COLUMN].value_counts()
    for split in SPLITS:
        if counts.get(split, 0) < min_rows:
            raise DataError(
                f"split: '{split}' got {counts.get(split, 0)} piece(s) of {len(out)}, fewer than min_rows={min_rows}; "
                "use more data or larger shares"
            )
    return out


def split_fingerprint(frame: pd.DataFrame, split: str = "test") -> str:
    """A short fingerprint of one split's content (ids, prompts and texts), to tell when it changed."""
    part = frame[frame[SPLIT_COLUMN] == split].sort_values("id")
    h = hashlib.sha256()
    for row in part[["id", "prompt", "text"]].itertuples(index=False):
        h.update("\x1f".join(row).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]
