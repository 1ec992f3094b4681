"""Step: run the cleaning rules and count what each one did."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step

from corpus.cleaning import CleaningConfig, clean_corpus
from infra.zenml_utils import log_step_metadata


@step
def clean_data(
    corpus: pd.DataFrame, config: CleaningConfig | None = None
) -> tuple[Annotated[pd.DataFrame, "clean_corpus"], Annotated[pd.DataFrame, "cleaning_stats"]]:
    """Cleans the corpus (see ``corpus.cleaning`` for the rules).

    Args:
        corpus: The raw corpus.
        config: Every rule's switch and threshold (the profile's ``steps.clean_data.parameters.config``).

    Returns:
        The cleaned corpus and one stats row per rule.
    """
    cleaned, stats = clean_corpus(corpus, config or CleaningConfig())
    removed = dict(zip(stats["rule"], stats["removed"].astype(int).tolist(), strict=True))
    log_step_metadata({"pieces_in": len(corpus), "pieces_out": len(cleaned), "removed_by_rule": removed},
                      artifact_name="clean_corpus")
    return cleaned, stats
