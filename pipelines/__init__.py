"""ZenML pipelines: they only wire steps (``settings.py`` resolves a run's settings over their defaults)."""

from pipelines.deployment import deployment_pipeline
from pipelines.inference import inference_pipeline
from pipelines.monitoring import monitoring_pipeline
from pipelines.training import training_pipeline

__all__ = ["deployment_pipeline", "inference_pipeline", "monitoring_pipeline", "training_pipeline"]
