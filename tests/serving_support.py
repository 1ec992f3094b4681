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
