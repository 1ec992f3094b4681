"""ZenML pipelines: they only wire steps."""

from pipelines.training import training_pipeline

__all__ = ["training_pipeline"]
