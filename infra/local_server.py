"""Running the service locally in a subprocess: ``bentoml serve`` on a free loopback port.

Used by the HTTP, OpenAI and browser tests and by the serving benchmarks (``serve_load``, ``openai_overhead``);
for everyday use run ``bentoml serve serving.service:CreativeWriter`` yourself, or deploy with
``python run.py --pipeline deployment`` (see docs/serving.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.paths import PROJECT_ROOT
from infra.processes import free_port
from serving.config import PROCESS_ENV

__all__ = ["Server", "free_port"]


class Server:
    """``bentoml serve serving.service:CreativeWriter`` in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        full_env = {**PROCESS_ENV, **os.environ, "BENTOML_DO_NOT_TRACK": "True", "PYTHONPATH": str(PROJECT_ROOT), **env}
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
