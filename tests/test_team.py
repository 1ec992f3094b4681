"""The team services for real: PostgreSQL and the MLflow server started by ``python -m infra.team`` on loopback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core.paths import PROJECT_ROOT
from infra.local_server import free_port

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


def team(root: Path, ports: tuple[int, int, int], action: str, cwd: Path = PROJECT_ROOT,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.team", action, "--root", str(root), "--pg-port",
                           str(ports[0]), "--mlflow-port", str(ports[1]), "--zenml-port", str(ports[2])], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def layout():
    from tests.conftest import postgres_folder

    base = postgres_folder("cw-team-")
    root, ports = base / "team", (free_port(), free_port(), free_port())
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
    assert stopped.returncode == 0 and "stopped: zenml, mlflow, postgres" in stopped.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(httpx.HTTPError):
        httpx.get(uri + "/health", timeout=2)
    assert "nothing was running" in team(root, ports, "down").stdout


REGISTRY_SQL = """SELECT json_build_object(
  'runs', (SELECT count(*) FROM runs),
  'versions', (SELECT coalesce(json_object_agg(version, status), '{}') FROM model_versions
               WHERE name = 'creative-writer'),
  'champion', (SELECT version::text FROM registered_model_aliases WHERE name = 'creative-writer'
               AND alias = 'champion'))"""

KILL_MLFLOW_IN_PROMOTE = """
import os, signal, sys
import evaluation.promotion as promotion
decide = promotion.decide
def decide_without_a_server(*args, **kwargs):  # the candidates are registered; the alias has not moved yet
    os.killpg(int(open(os.environ["CW_TEST_MLFLOW_PID_FILE"]).read()), signal.SIGKILL)
    return decide(*args, **kwargs)
promotion.decide = decide_without_a_server
import run
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.fixture
def team_project(layout, tmp_path_factory):
    """A copy of the project (as the e2e tests make) whose runs go to the team servers of ``layout``."""
    from tests.e2e_support import IGNORE

    root, _ = layout
    project = tmp_path_factory.mktemp("team-e2e") / ".checkout" / "project"
    shutil.copytree(PROJECT_ROOT, project, ignore=IGNORE)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ZENML_"))}
    env = {**inherited, "ZENML_ANALYTICS_OPT_IN": "false", "PYTHONPATH": str(project),
           "BENTOML_HOME": str(project.parent / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    yield project, env
    subprocess.run([sys.executable, "-m", "infra.bento_deployment", "stop", "--stack", "team", "--team-root",
                    str(root)], cwd=project, env=env, capture_output=True, timeout=300)


def test_pipelines_run_on_the_team_servers_survive_a_killed_mlflow_server_and_serve_the_team_champion(
        layout, team_project):
    from infra.team import TeamLayout, psql

    root, ports = layout
    project, env = team_project
    started = team(root, ports, "up", project, env)
    assert started.returncode == 0, started.stderr
    servers = TeamLayout(root, *ports)

    def run_py(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=project, env={**env, **(extra or {})},
                              capture_output=True, text=True, timeout=900)

    def train(profile: str = "configs/smoke.yaml") -> str:
        result = run_py("run.py", "--stack", "team", "--team-root", str(root), "--config", profile)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    def registry() -> dict:
        return json.loads(psql(servers, REGISTRY_SQL, database="mlflow"))

    def zenml_runs() -> list[tuple[str, str]]:
        with sqlite3.connect(root / "zenml" / "zenml.db") as db:
            return db.execute("SELECT name, status FROM pipeline_run ORDER BY created").fetchall()

    out = train()
    assert "(0 of 12 steps cached)" in out
    assert f"MLflow UI: http://127.0.0.1:{ports[1]}" in out and f"dashboard: http://127.0.0.1:{ports[2]}/" in out
    first = registry()  # in PostgreSQL, through the MLflow server
    assert first["runs"] >= 3 and set(first["versions"].values()) == {"READY"} and len(first["versions"]) == 4  # + base
    assert first["champion"] in first["versions"]
    assert [status for name, status in zenml_runs()] == ["completed"]  # in the ZenML server's database
    assert not any((project / name).exists() for name in (".mlflow", ".zen", "mlruns"))  # nothing local

    assert "(10 of 12 steps cached)" in train()  # caching works on the server as locally

    # the MLflow server dies after a new GAN is registered, before the decision and the alias move
    profile = (project / "configs" / "smoke.yaml").read_text()
    assert "rounds: 2," in profile
    (project / "configs" / "smoke-gan.yaml").write_text(profile.replace("rounds: 2,", "rounds: 1,"))
    killed = run_py("-c", KILL_MLFLOW_IN_PROMOTE, "--stack", "team", "--team-root", str(root), "--config",
                    "configs/smoke-gan.yaml", extra={"CW_TEST_MLFLOW_PID_FILE": str(servers.mlflow_pid),
                                                     "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert killed.returncode == 1, killed.stdout[-3000:] + killed.stderr[-3000:]
    error = killed.stderr.strip().splitlines()[-1]
    assert error.startswith("run.py: error: the training pipeline failed: step promote failed: the MLflow tracking "
                            f"server at http://127.0.0.1:{ports[1]} did not answer"), error
    restarted = team(root, ports, "up", project, env)
    assert restarted.returncode == 0, restarted.stderr
    middle = registry()  # consistent: the new version complete, the alias where it was
    new = sorted(set(middle["versions"]) - set(first["versions"]), key=int)
    assert len(new) == 1 and set(middle["versions"].values()) == {"READY"}
    assert middle["champion"] == first["champion"]

    assert "[promote]" in train("configs/smoke-gan.yaml")  # the rerun completes
    after = registry()
    assert after["versions"] == middle["versions"]  # the GAN registered before the failure is reused
    assert after["champion"] in after["versions"]
    assert [status for name, status in zenml_runs()] == ["completed", "completed", "failed", "completed"]

    # the team champion is served by the deployment pipeline, from the team registry
    port = free_port()
    deployed = run_py("run.py", "--stack", "team", "--team-root", str(root), "--pipeline", "deployment", "--port",
                      str(port))
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    served = httpx.get(f"http://127.0.0.1:{port}/model", timeout=30).json()["provenance"]
    assert served["version"] == after["champion"] and served["alias"] == "champion"
    answer = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "A fox finds a key.",
                                                                   "max_new_tokens": 8}, timeout=60)
    assert answer.status_code == 200 and answer.json()["drafts"][0]["text"]
    stop = run_py("-m", "infra.bento_deployment", "stop", "--stack", "team", "--team-root", str(root))
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/model", timeout=2)

    stopped = team(root, ports, "down", project, env)
    assert "stopped: zenml, mlflow, postgres" in stopped.stdout
    import psutil

    left = [p.info for p in psutil.process_iter(["pid", "cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])]
    assert not left


STACK_SCRIPT = """
import sys
from pathlib import Path
from infra.team import select_stack
repository = select_stack("team", Path(sys.argv[1]))
from infra.stack import STACK_CONFIGS, ensure_stack
print("\\n".join(ensure_stack(STACK_CONFIGS["team"], repository=repository)))
"""


def test_the_zenml_server_can_keep_its_database_in_mariadb(layout):
    import shutil as shell

    from infra.team import TeamLayout, mariadb_sql

    if not (shell.which("mariadbd") or Path("/usr/sbin/mariadbd").is_file()):
        pytest.skip("MariaDB is not installed (apt-get install mariadb-server; .ci/run installs it)")
    root, ports = layout
    maria_port = free_port()
    args = [sys.executable, "-m", "infra.team", "up", "--root", str(root), "--pg-port", str(ports[0]),
            "--mlflow-port", str(ports[1]), "--zenml-port", str(ports[2]), "--mariadb-port", str(maria_port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ZENML_"))}
    try:
        started = subprocess.run([*args, "--mariadb"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                 timeout=300)
        assert started.returncode == 0, started.stderr
        servers = TeamLayout(root, *ports, maria_port)
        registered = subprocess.run([sys.executable, "-c", STACK_SCRIPT, str(root)], cwd=PROJECT_ROOT, env=env,
                                    capture_output=True, text=True, timeout=300)
        assert registered.returncode == 0, registered.stderr[-3000:]
        assert "registered stack 'creative-writer-team'" in registered.stdout
        # the server's tables, the secret and the new stack are rows in MariaDB; no SQLite file
        rows = mariadb_sql(servers, "SELECT (SELECT group_concat(name) FROM zenml.secret), "
                                     "(SELECT group_concat(name ORDER BY name) FROM zenml.stack)").split()
        assert rows == ["cw_mlflow", "creative-writer-team,default"]
        assert not (root / "zenml" / "zenml.db").exists()
        again = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
        status = json.loads(team(root, ports, "status").stdout)
        assert again.returncode == 0 and status["zenml_healthy"] is True
        assert status["mariadb"] is True and not (root / "zenml" / "zenml.db").exists()  # it kept MariaDB
    finally:
        stopped = subprocess.run([*args[:3], "down", *args[4:]], cwd=PROJECT_ROOT, env=env, capture_output=True,
                                 text=True, timeout=300)
    assert "stopped: zenml, mlflow, postgres, mariadb" in stopped.stdout, stopped.stdout + stopped.stderr
    assert not (root / "mariadb" / "mysqld.sock").exists()
