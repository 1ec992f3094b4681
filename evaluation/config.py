"""The evaluation suite's settings (no torch here: the ``evaluate`` step takes them as a typed parameter)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.validation import STRICT, require_min
from models.configs import RUNTIMES
from models.params import Sampling
from weights.spec import CheckpointRef


@dataclass(frozen=True)
class SuiteConfig:
    """Evaluation settings (the profile's ``evaluate`` ``suite`` parameters; ``sampling`` is the samples' knobs).

    ``runtime`` writes the samples (test and open prompts) of a Transformer candidate with a GGUF export on
    llama.cpp (``torch``: on PyTorch); likelihoods are always scored on PyTorch.
    """

    __pydantic_config__ = STRICT  # unknown keys are refused by name

    ranking_pieces: int = 100
    distractors: int = 9
    sample_prompts: int = 24
    max_new_tokens: int = 120
    sampling: Sampling = field(default_factory=Sampling)  # temperature, top-k/p, min-p, repetition penalty
    seed: int = 0
    ppl_pieces: int = 0
    ranking_words: int = 0
    open_prompts: str = ""
    open_limit: int = 0
    open_max_new_tokens: int = 200
    open_target_words: int = 80
    reference_model: CheckpointRef = ""
    fluency_samples: int = 24
    real_pieces: int = 24
    real_ranking_pieces: int = 16
    torch_threads: int = 0
    runtime: str = "llama.cpp"

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        if self.runtime not in RUNTIMES:
            raise ValueError(f"SuiteConfig.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if isinstance(self.sampling, dict):  # read back from a stored selection (plain JSON)
            object.__setattr__(self, "sampling", Sampling(**self.sampling))
        require_min(self, ("ranking_pieces", "distractors", "sample_prompts", "max_new_tokens", "open_max_new_tokens",
                           "real_pieces"), 1, integer=True)
        require_min(self, ("ppl_pieces", "ranking_words", "open_limit", "open_target_words", "fluency_samples",
                           "torch_threads", "real_ranking_pieces"), 0, integer=True)

    @property
    def chance(self) -> float:
        """Prompt-ranking accuracy of a model that ignores its prompt."""
        return 1.0 / (self.distractors + 1)
