"""What every training loop shares: the base optimisation settings, the bf16 decision and the piece sample."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models.contract import require_min

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings (the profile's ``train_seq2seq`` ``train`` parameters).

    ``torch_threads`` (0 = every core) follows :mod:`models.threads` (``$CW_TORCH_THREADS`` wins).
    """

    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    patience: int = 2
    bf16: bool = False
    seed: int = 0
    max_train_pieces: int = 0
    time_budget_s: float = 0.0
    log_every: int = 50
    torch_threads: int = 0

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        require_min(self, ("epochs", "batch_size", "patience"), 1, integer=True)
        require_min(self, ("max_train_pieces", "torch_threads"), 0, integer=True)
        require_min(self, ("time_budget_s",), 0)
        if self.lr <= 0:
            raise ValueError(f"{type(self).__name__}.lr must be > 0, got {self.lr}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX); without them bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_bf16(requested: bool) -> bool:
    """bf16 autocast only where the CPU runs it natively; warns when a request is turned down."""
    if requested and not cpu_has_native_bf16():
        log.warning("bf16 requested but this CPU has no native bf16 matmul (no avx512_bf16/amx_bf16): "
                    "training in fp32, which is faster here (see benchmarks.train_seq2seq)")
        return False
    return requested


def training_pieces(train_frame: pd.DataFrame, val_frame: pd.DataFrame, max_pieces: int, seed: int,
                    what: str = "training") -> pd.DataFrame:
    """The training pieces to use: all of them, or a seeded sample of ``max_pieces`` (0 = all).

    Raises:
        ValueError: If there are no training or no validation pieces (``what`` names the training).
    """
    if train_frame.empty or val_frame.empty:
        raise ValueError(f"{what} needs train and validation pieces, got {len(train_frame)} and {len(val_frame)}")
    if max_pieces:
        return train_frame.sample(n=min(max_pieces, len(train_frame)), random_state=seed)
    return train_frame
