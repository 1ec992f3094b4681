"""The prompts served traffic is compared with: the newest training run's split, plus the open prompts."""

from __future__ import annotations

import logging

import pandas as pd

log = logging.getLogger(__name__)


def reference_prompts(split: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str]:
    """``prompt, form, genre`` of the training/evaluation prompts, and where they came from.

    Args:
        split: The training pipeline's ``split_corpus`` (None: the newest one in ZenML, else the built-in
            corpus as the default training profile makes it).
    """
    from evaluation.config import SuiteConfig
    from evaluation.suite import load_open_prompts

    origin = "the newest training run's split_corpus"
    if split is None:
        try:
            from zenml.client import Client

            split = Client().get_artifact_version("split_corpus").load()
        except Exception as exc:  # no training run yet (or no ZenML store): the built-in corpus
            log.info("no split_corpus artifact (%s): comparing with the built-in corpus", type(exc).__name__)
            from corpus.builtin import generate_corpus

            split, origin = generate_corpus(n=2000), "the built-in corpus (no training run found)"
    opened = load_open_prompts(SuiteConfig().open_prompts)
    both = pd.concat([split[["prompt", "form", "genre"]], opened[["prompt", "form", "genre"]]], ignore_index=True)
    return both.assign(genre=both["genre"].fillna("").replace("none", "")), origin + " and the open prompts"
