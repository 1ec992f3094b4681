"""Steps of the batch inference pipeline: read a prompts file, generate with the champion, report."""

from __future__ import annotations

from typing import Annotated

import pandas as pd
from zenml import step
from zenml.types import HTMLString

from core.paths import REGISTERED_NAME
from serving.planner import BatchGeneration


@step
def load_prompts(prompts_path: str, prompts_sha256: str, max_prompt_chars: int = 1000) -> Annotated[
        pd.DataFrame, "prompts"]:
    """Reads and checks a text or JSONL prompts file (``prompts_sha256`` makes the cache follow its content).

    Args:
        prompts_path: The file (see :mod:`serving.batch_inference` for the formats).
        prompts_sha256: SHA-256 of the file's bytes, computed by ``run.py``.
        max_prompt_chars: Longest prompt accepted.

    Returns:
        ``id, prompt, form, genre, seed`` rows.
    """
    from pathlib import Path

    from infra.zenml_utils import log_step_metadata
    from serving.batch_inference import file_fingerprint, read_prompts

    if file_fingerprint(Path(prompts_path)) != prompts_sha256:
        raise ValueError(f"{prompts_path} changed after the run started (its SHA-256 differs); run again")
    frame = read_prompts(Path(prompts_path), max_prompt_chars)
    log_step_metadata({"prompts": len(frame), "file": prompts_path, "sha256": prompts_sha256})
    return frame


@step
def batch_generate(prompts: pd.DataFrame, model_version: str, alias: str = "champion",
                   registered_name: str = REGISTERED_NAME, generation: BatchGeneration | None = None,
                   batch_size: int = 16, runtime: str = "llama.cpp") -> Annotated[pd.DataFrame, "generations"]:
    """Generates one piece per prompt with a registry version (cached per prompts, version and settings).

    Args:
        prompts: Rows from ``load_prompts``.
        model_version: The registry version to use (``run.py`` resolves the alias before the run, so a
            new champion means a new cache key).
        alias: The alias it was resolved through (provenance only).
        registered_name: The MLflow registered model.
        generation: Generation settings (:class:`~serving.planner.BatchGeneration`; None: its defaults);
            ``preset: steady`` (or balanced, wild) supplies the sampling values it does not set.
        batch_size: Prompts per model call.
        runtime: ``llama.cpp`` writes with a Transformer's GGUF export, ``torch`` with PyTorch (seq2seq and
            GAN always run on torch); the provenance on every row names it.

    Returns:
        The prompts with ``text``, ``tokens``, the settings and the provenance on every row.
    """
    import logging

    from infra.zenml_utils import log_step_metadata
    from serving.batch_inference import generate_for_prompts
    from serving.champion import load
    from serving.config import ModelSource

    log = logging.getLogger(__name__)
    loaded = load(ModelSource(registered_name=registered_name, version=model_version, runtime=runtime))
    provenance = {**loaded.provenance.as_dict(), "alias": alias}

    def progress(done: int, total: int) -> None:
        log.info("generated %d/%d (%.0f%%)", done, total, 100 * done / total)

    frame = generate_for_prompts(loaded.model, prompts, generation or BatchGeneration(), provenance, batch_size,
                                 progress)
    log_step_metadata({"generations": len(frame), "tokens": int(frame["tokens"].sum()),
                       "seconds": float(frame["seconds"].iloc[0]), "family": provenance["family"],
                       "model_version": model_version})
    return frame


@step
def generations_report(generations: pd.DataFrame) -> Annotated[HTMLString, "generations_report"]:
    """The generations as one readable page for the dashboard (prompt, text, seed, provenance)."""
    from serving.batch_inference import generations_html

    return HTMLString(generations_html(generations))
