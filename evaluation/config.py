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

    The story-quality measures (:mod:`evaluation.quality`) are checked on ``check_pairs`` known-order pairs
    each, built from the test split's pieces (:mod:`evaluation.measure_check`); one that orders fewer than
    ``check_min_accuracy`` of them right is reported, not scored. The composite is checked on
    ``check_composite_pairs`` pairs per measure. ``check_sources`` names real data (source specs) whose
    pieces are checked on too, pooled with the test split's (each source's accuracy is reported; a source
    whose file is absent is skipped and said so). ``check_pairs`` 0 checks nothing: then no measure is
    trusted and the rule falls back to its word-overlap quality.
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
    check_pairs: int = 20
    check_min_accuracy: float = 0.8
    check_composite_pairs: int = 5
    check_sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Validates the settings; raises ValueError naming the field."""
        if self.runtime not in RUNTIMES:
            raise ValueError(f"SuiteConfig.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if not isinstance(self.check_sources, list) or not all(isinstance(x, str) for x in self.check_sources):
            raise ValueError(f"SuiteConfig.check_sources must be a list of source specs, got {self.check_sources!r}")
        if isinstance(self.sampling, dict):  # read back from a stored selection (plain JSON)
            object.__setattr__(self, "sampling", Sampling(**self.sampling))
        require_min(self, ("ranking_pieces", "distractors", "sample_prompts", "max_new_tokens", "open_max_new_tokens",
                           "real_pieces"), 1, integer=True)
        require_min(self, ("ppl_pieces", "ranking_words", "open_limit", "open_target_words", "fluency_samples",
                           "torch_threads", "real_ranking_pieces", "check_pairs", "check_composite_pairs"), 0,
                    integer=True)
        if not isinstance(self.check_min_accuracy, int | float) or not 0.5 <= self.check_min_accuracy <= 1:
            raise ValueError(f"SuiteConfig.check_min_accuracy must be in [0.5, 1], got {self.check_min_accuracy!r}")

    @property
    def chance(self) -> float:
        """Prompt-ranking accuracy of a model that ignores its prompt."""
        return 1.0 / (self.distractors + 1)
