"""The team services for real: PostgreSQL and the MLflow server started by ``python -m infra.team`` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from core.paths import PROJECT_ROOT
from serving.local import free_port

pytestmark = pytest.mark.team

CLIENT_SCRIPT = """
import json, pathlib, sys, tempfile
from mlflow import MlflowClient
client = MlflowClient()
experiment = client.create_experiment("team-check")
run = client.create_run(experiment)
client.log_param(run.info.run_id, "family", "seq2seq")
client.log_metric(run.info.run_id, "ppl_word", 12.5)
note = pathlib.Path(tempfile.mkdtemp()) / "model-card.txt"
note.write_text("a model card")
client.log_artifact(run.info.run_id, str(note))
client.set_terminated(run.info.run_id)
client.create_registered_model("creative-writer")
version = client.create_model_version("creative-writer", f"{run.info.artifact_uri}/model-card.txt", run.info.run_id)
client.set_registered_model_alias("creative-writer", "champion", version.version)
champion = client.get_model_version_by_alias("creative-writer", "champion")
print(json.dumps({"run": run.info.run_id, "artifact_uri": run.info.artifact_uri, "champion": champion.version}))
"""


def team(root: Path, ports: tuple[int, int], action: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.team", action, "--root", str(root), "--pg-port",
                           str(ports[0]), "--mlflow-port", str(ports[1])], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def layout():
    from infra.team import TeamError, pg_bin

    try:
        pg_bin("initdb")
    except TeamError as exc:
        pytest.skip(f"PostgreSQL is not installed ({exc}); .ci/run installs it")
    base = Path(tempfile.mkdtemp(prefix="cw-team-", dir="/tmp"))  # reachable by the postgres user
    base.chmod(0o755)
    root, ports = base / "team", (free_port(), free_port())
    yield root, ports
    team(root, ports, "down")  # whatever the test left running


def test_up_serves_a_registry_on_postgres_with_proxied_artifacts_and_down_leaves_nothing(layout, tmp_path):
    root, ports = layout
    started = team(root, ports, "up")
    assert started.returncode == 0, started.stderr + started.stdout
    uri = f"http://127.0.0.1:{ports[1]}"
    assert f"export MLFLOW_TRACKING_URI={uri}" in started.stdout
    assert (root / "pg" / "password").stat().st_mode & 0o777 == 0o600
    again = team(root, ports, "up")  # idempotent: the same server keeps running
    assert again.returncode == 0 and json.loads(team(root, ports, "status").stdout)["mlflow_healthy"] is True
    pid = int((root / "mlflow.pid").read_text())

    client_dir = tmp_path / "client"  # the client's own folder: artifacts must not land here
    client_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"MLFLOW_TRACKING_URI": uri}
    out = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], cwd=client_dir, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    logged = json.loads(out.stdout.strip().splitlines()[-1])
    assert logged["champion"] == "1" and logged["artifact_uri"].startswith("mlflow-artifacts:")
    # the artifact went through the server to its folder; nothing local on the client's side
    assert list((root / "artifacts").rglob("model-card.txt")) and not list(client_dir.rglob("*"))
    # the run, the version and the alias are rows in PostgreSQL
    from infra.team import TeamLayout, psql

    query = (f"SELECT (SELECT count(*) FROM runs WHERE run_uuid = '{logged['run']}') || ',' || "
             "(SELECT version FROM registered_model_aliases WHERE name = 'creative-writer' AND alias = 'champion')")
    assert psql(TeamLayout(root, *ports), query, database="mlflow").strip() == "1,1"

    stopped = team(root, ports, "down")
    assert stopped.returncode == 0 and "stopped: mlflow, postgres" in stopped.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(httpx.HTTPError):
        httpx.get(uri + "/health", timeout=2)
    assert "nothing was running" in team(root, ports, "down").stdout
