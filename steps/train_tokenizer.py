"""Step: train the shared byte-level BPE tokenizer on the train split."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import pandas as pd
from zenml import step

from infra.zenml_utils import log_step_metadata


@step
def train_tokenizer(
    split: pd.DataFrame, vocab_size: int = 4000, min_frequency: int = 2
) -> Annotated[Path, "tokenizer"]:
    """Trains the tokenizer on the train split's prompts and pieces (never validation or test).

    Args:
        split: The split corpus.
        vocab_size: Target vocabulary size.
        min_frequency: Minimum pair frequency for a merge.

    Returns:
        A directory that ``PreTrainedTokenizerFast.from_pretrained`` loads.
    """
    from models.tokenizer import save_tokenizer, train_on_split  # transformers loads only when this runs

    tok = train_on_split(split, vocab_size=vocab_size, min_frequency=min_frequency)
    log_step_metadata({"vocab_size": len(tok), "special_tokens": tok.all_special_tokens})
    return save_tokenizer(tok, Path(tempfile.mkdtemp(prefix="tokenizer-")))
