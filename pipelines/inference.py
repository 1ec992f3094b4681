"""The batch inference pipeline: a prompts file and the champion in, generations with provenance out."""

from __future__ import annotations

from zenml import pipeline

from core.paths import REGISTERED_NAME
from serving.planner import BatchGeneration
from steps import batch_generate, generations_report, load_prompts


@pipeline(name="inference_pipeline")
def inference_pipeline(prompts_path: str, prompts_sha256: str, model_version: str, alias: str = "champion",
                       registered_name: str = REGISTERED_NAME, generation: BatchGeneration | None = None,
                       batch_size: int = 16, max_prompt_chars: int = 1000, runtime: str = "llama.cpp") -> None:
    """load_prompts → batch_generate → generations_report.

    ``run.py --pipeline inference --prompts FILE`` resolves ``@champion`` to a version before the run, so
    identical prompts (by content) with the same champion version and settings are served from ZenML's
    cache, and a new champion re-generates.

    Args:
        prompts_path: A text or JSONL prompts file.
        prompts_sha256: SHA-256 of its bytes.
        model_version: The registry version that writes.
        alias: The alias it was resolved through.
        registered_name: The MLflow registered model.
        generation: Generation settings (None: the defaults of :class:`~serving.planner.BatchGeneration`).
        batch_size: Prompts per model call.
        max_prompt_chars: Longest prompt accepted.
        runtime: What writes a Transformer champion: ``llama.cpp`` (its GGUF export) or ``torch``.
    """
    prompts = load_prompts(prompts_path=prompts_path, prompts_sha256=prompts_sha256,
                           max_prompt_chars=max_prompt_chars)
    generations = batch_generate(prompts=prompts, model_version=model_version, alias=alias,
                                 registered_name=registered_name, generation=generation, batch_size=batch_size,
                                 runtime=runtime)
    generations_report(generations=generations)
