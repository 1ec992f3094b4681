"""Step: writers' preference pairs from the feedback in the workspace database."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step

from infra.zenml_utils import log_step_metadata


@step
def load_preferences(feedback_state: str = "", database_url: str = "") -> Annotated[pd.DataFrame, "writer_preferences"]:
    """Builds the preference pairs (kept over not kept, edited over as written, thumb up over down).

    Args:
        feedback_state: The feedback's fingerprint when the run started (``run.py`` sets it): the cache key,
            so new feedback builds the pairs again and the same feedback is a cache hit.
        database_url: The workspace database ('' = ``$CW_DATABASE_URL``, else ``.state/workspace.db``).

    Returns:
        The deduplicated pairs (``training.preferences.PAIR_COLUMNS``); their fingerprint, count per source
        and number of writers are the artifact's metadata.
    """
    from training.preferences import pairs_fingerprint, writer_pairs

    pairs = writer_pairs(database_url)
    log_step_metadata({"pairs": len(pairs), "fingerprint": pairs_fingerprint(pairs),
                       "writers": int(pairs["writer"].nunique()), "feedback_state": feedback_state,
                       **{f"from_{k}": int(v) for k, v in pairs["source"].value_counts().items()}},
                      artifact_name="writer_preferences")
    return pairs
