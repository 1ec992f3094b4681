"""What the training loops share: their optimisation settings, the bf16 decision and the piece sample.

No torch here: the training steps take these settings as typed parameters at import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.validation import STRICT, require_min

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings (the profile's ``train_seq2seq`` ``train`` parameters).

    ``torch_threads`` (0 = every core) follows :mod:`core.threads` (``$CW_TORCH_THREADS`` wins).
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

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


@dataclass
class TransformerTrainConfig(TrainConfig):
    """Optimisation settings (the profile's ``train_transformer`` ``train_config`` parameters).

    The shared :class:`~training.config.TrainConfig` fields with Transformer defaults, plus the
    warm-up fraction, a cap on validation pieces (a seeded sample: validating a 135 M-parameter base on
    every piece costs more than its training), the progress bar (drawn only on a terminal), the device
    choice and the number of training processes (``processes`` > 1: data-parallel, see
    :mod:`training.transformer_ddp`; ``batch_size`` stays the global batch and is split between them;
    ``torch_threads`` is then per process, default 1).
    """

    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    log_every: int = 25
    warmup: float = 0.05
    max_val_pieces: int = 0
    progress_bar: bool = True
    use_cpu: bool = True
    processes: int = 1

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        super().__post_init__()
        require_min(self, ("max_val_pieces",), 0, integer=True)
        require_min(self, ("processes",), 1, integer=True)
        if self.processes > 1 and self.batch_size % self.processes:
            raise ValueError(f"TransformerTrainConfig.batch_size ({self.batch_size}) is the global batch and must "
                             f"divide evenly between processes ({self.processes})")

        if not 0 <= self.warmup < 1:
            raise ValueError(f"TransformerTrainConfig.warmup must be a fraction of steps in [0, 1), got {self.warmup}")


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


@dataclass(frozen=True)
class DPOConfig:
    """The profile's ``train_transformer`` ``dpo`` parameters.

    DPO runs after supervised training when at least ``min_pairs`` pairs exist: writers' pairs (from
    ``POST /feedback``, built by the ``load_preferences`` step) and, with ``distilled``, the best/worst pairs
    of best-of-K distillation. At most ``max_pairs`` are used (writers' first, then a seeded sample).
    """

    __pydantic_config__ = STRICT

    enabled: bool = True
    min_pairs: int = 16
    max_pairs: int = 512
    distilled: bool = True
    beta: float = 0.1
    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 4
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        for name in ("min_pairs", "max_pairs", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "lr", "clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DPOConfig.{name} must be > 0, got {getattr(self, name)}")
