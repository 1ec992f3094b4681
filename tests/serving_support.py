"""Helpers for the serving tests: a tiny champion in a throw-away MLflow registry."""

from __future__ import annotations

from pathlib import Path


def register_tiny_champion(folder: Path, tokenizer, name: str = "creative-writer") -> str:
    """Registers a tiny seq2seq writer as ``name@champion`` in a SQLite registry under ``folder``.

    Returns:
        The tracking URI of the registry.
    """
    import mlflow
    from mlflow import MlflowClient

    from registry.mlflow_model import log_pyfunc
    from tests.conftest import tiny_writer

    uri = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving-test", artifact_location=(folder / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_pyfunc(tiny_writer(tokenizer).save(folder / "model"), name="seq2seq")
    version = mlflow.register_model(info.model_uri, name, tags={
        "family": "seq2seq", "zenml_run_id": "0123456789abcdef", "metric.ppl_word": "12.5",
        "metric.ranking_acc": "0.4"})
    MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return uri


def register_tiny_llama_champion(folder: Path, name: str = "creative-writer",
                                 genres: tuple[str, ...] = ("fantasy",)) -> tuple[str, Path]:
    """Registers a tiny Llama + LoRA Transformer (saved with its GGUF export) as ``name@champion``.

    ``genres`` are the ones it knows (the benchmarks' requests name four).

    Returns:
        The tracking URI of the registry, and the artifact folder of the logged model (its ``model_dir``).
    """
    import mlflow
    import torch
    from mlflow import MlflowClient

    from models.configs import TransformerConfig
    from models.transformer import build_transformer
    from registry.mlflow_model import log_pyfunc
    from weights.tiny import write_tiny_llama

    base = write_tiny_llama(folder / "base")
    torch.manual_seed(0)
    writer = build_transformer(None, TransformerConfig(base_model=str(base), context=256, lora_r=4, lora_alpha=8),
                               forms=["fable", "poem", "story"], genres=list(genres))
    uri = f"sqlite:///{folder}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving-llama", artifact_location=(folder / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_pyfunc(writer.save(folder / "model"), name="transformer")
    version = mlflow.register_model(info.model_uri, name, tags={"family": "transformer", "zenml_run_id": "feedc0de"})
    MlflowClient().set_registered_model_alias(name, "champion", version.version)
    logged = next((folder / "artifacts").rglob("gguf/model.gguf")).parent.parent
    return uri, logged
