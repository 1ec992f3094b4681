"""The one data contract every loader returns and every later step reads.

A corpus is a :class:`pandas.DataFrame` with the columns ``id, source, form, genre, prompt, text``
(all strings; ``genre`` may be empty). The split step adds a ``split`` column.
"""

from __future__ import annotations

import pandas as pd

COLUMNS: tuple[str, ...] = ("id", "source", "form", "genre", "prompt", "text")
SPLIT_COLUMN = "split"
SPLITS: tuple[str, ...] = ("train", "validation", "test")


class DataError(ValueError):
    """Bad input data: the message names the file, source or rule and what was wrong."""


def empty_frame() -> pd.DataFrame:
    """Returns an empty corpus frame with the contract's columns."""
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in COLUMNS})


def make_frame(records: list[dict[str, str]], where: str) -> pd.DataFrame:
    """Builds a corpus frame from records and checks it against the contract.

    Args:
        records: One dict per piece with (at least) the contract's columns.
        where: What produced the records (a file or spec), named in errors.

    Returns:
        The frame with exactly the contract's columns, in order, as strings.

    Raises:
        DataError: If a column is missing or the ids are not unique.
    """
    if not records:
        return empty_frame()
    frame = pd.DataFrame.from_records(records)
    return validate_frame(frame, where)


def validate_frame(frame: pd.DataFrame, where: str, *, require_split: bool = False) -> pd.DataFrame:
    """Checks that a frame follows the data contract and normalises its dtypes.

    Args:
        frame: The frame to check.
        where: What produced the frame, named in errors.
        require_split: Whether the ``split`` column must be present too.

    Returns:
        The frame with the contract's columns first (as Python strings), extra columns dropped
        except ``split``.

    Raises:
        DataError: If a column is missing, a value is null, or ids repeat.
    """
    wanted = list(COLUMNS) + ([SPLIT_COLUMN] if require_split or SPLIT_COLUMN in frame else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; a corpus needs {list(COLUMNS)}")
    out = frame[wanted].copy()
    for col in wanted:
        nulls = out[col].isna()
        if col == "genre":
            out[col] = out[col].where(~nulls, "")
        elif nulls.any():
            first = out.loc[nulls, "id"].iloc[0] if col != "id" else "?"
            raise DataError(f"{where}: column '{col}' is empty for {int(nulls.sum())} row(s), e.g. id={first}")
        out[col] = out[col].astype(str).astype(object)
    dupes = out["id"].duplicated()
    if dupes.any():
        raise DataError(f"{where}: ids must be unique; repeated id '{out.loc[dupes, 'id'].iloc[0]}'")
    return out.reset_index(drop=True)
