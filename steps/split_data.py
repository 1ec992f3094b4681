"""Step: deterministic train/validation/test split by a stable hash of each piece's id."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step

from corpus.split import assign_splits, split_fingerprint
from infra.zenml_utils import log_step_metadata


@step
def split_data(
    corpus: pd.DataFrame, validation: float = 0.1, test: float = 0.1, salt: str = "creative-writer",
    min_rows: int = 1,
) -> Annotated[pd.DataFrame, "split_corpus"]:
    """Adds the ``split`` column.

    Args:
        corpus: The cleaned corpus.
        validation: Share of pieces for validation.
        test: Share of pieces for test.
        salt: Hash salt; keep it fixed to keep splits stable as data grows.
        min_rows: Minimum pieces per split.

    Returns:
        The corpus with its ``split`` column.
    """
    frame = assign_splits(corpus, validation=validation, test=test, salt=salt, min_rows=min_rows)
    log_step_metadata({"sizes": frame["split"].value_counts().to_dict(),
                  "test_fingerprint": split_fingerprint(frame, "test")})
    return frame
