"""Helpers for the serving tests: a tiny champion in a throw-away MLflow registry, and a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def register_tiny_champion(folder: Path, tokenizer, name: str = "creative-writer") -> str:
    """Registers a tiny seq2seq writer as ``name@champion`` in a SQLite registry under ``folder``.

    Returns:
        The tracking URI of the registry.
    """
    import mlflow
    from mlflow import MlflowClient

    from models.mlflow_logging import log_pyfunc
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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``bentoml serve serving.service:CreativeWriter`` in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        full_env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "PYTHONPATH": str(PROJECT_ROOT), **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:CreativeWriter", "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=PROJECT_ROOT, env=full_env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, ready: bool = True, timeout: float = 120) -> None:
        """Waits until ``/readyz`` answers 200 (``ready``) or ``/livez`` does; raises with the log on failure."""
        deadline = time.monotonic() + timeout
        path = "/readyz" if ready else "/livez"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not up after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """The server's output so far (last 6,000 characters)."""
        self._log.flush()
        return self.log_path.read_text()[-6000:]

    def stop(self) -> None:
        """Stops the server and its workers."""
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
