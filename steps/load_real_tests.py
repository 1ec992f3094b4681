"""Step: load the profile's real test sets, cleaned by the training data's rules (never trained on)."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step

from corpus.cleaning import CleaningConfig
from infra.zenml_utils import log_step_metadata


@step
def load_real_tests(split: pd.DataFrame, specs: list[str], source_fingerprint: str = "",
                    cleaning: CleaningConfig | None = None) -> Annotated[pd.DataFrame, "real_tests"]:
    """Loads and cleans each real test set (see ``evaluation.real_tests``); ``source`` names the set.

    The sets are checked against the split's training and validation pieces here, so a leaking set stops
    the run before any model trains (``evaluate`` checks again before it measures).

    Args:
        split: The split corpus the candidates train on.
        specs: One source spec per test set (the profile's ``parameters.real_tests`` or ``--real-test``).
        source_fingerprint: Fingerprint of the files behind the specs (a parameter only for ZenML's cache).
        cleaning: The cleaning rules; ``run.py`` fills in the ``clean_data`` step's, so real and training
            pieces are cleaned alike.

    Returns:
        The real test pieces.
    """
    from evaluation.real_tests import held_out_sets
    from evaluation.real_tests import load_real_tests as load

    frame = load(specs, cleaning)
    log_step_metadata({"specs": specs, "sets": held_out_sets(frame, split)})
    return frame
