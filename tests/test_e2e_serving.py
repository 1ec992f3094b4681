"""End to end after training: batch inference, deployments with their faults, and monitoring.

On the smoke profile in a copy of the project trained once for the file (``tests/e2e_support.py``): batch
inference with provenance, a foreign process on the port, a killed worker, a killed supervisor, then the
served traffic monitored and the writers' feedback trained on. Each test also runs alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.e2e_support import run, statuses

pytestmark = pytest.mark.e2e


def champion_version(project) -> str:
    script = ("import mlflow; from infra.stack import tracking_uri; mlflow.set_tracking_uri(tracking_uri()); "
              "print(mlflow.MlflowClient().get_model_version_by_alias('creative-writer', 'champion').version)")
    return run(project, "-c", script).stdout.strip().splitlines()[-1]


def test_inference_writes_generations_with_provenance_and_is_cached_by_content(project, first_run):
    root, env = project
    version = champion_version(project)
    out = run(project, "run.py", "--pipeline", "inference", "--prompts", "examples/prompts.jsonl",
              "--output", "outputs/gen.jsonl").stdout
    assert f"creative-writer v{version} @champion" in out
    rows = [json.loads(line) for line in (root / "outputs" / "gen.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["fable-1", "poem-1", "story-1"]
    assert all(r["text"] and r["version"] == version and r["alias"] == "champion" and r["training_run_id"]
               for r in rows)
    assert rows[1]["seed"] == 7 and rows[0]["seed"] == 0  # the row's seed, else the profile's
    run(project, "run.py", "--pipeline", "inference", "--prompts", "examples/prompts.jsonl",
        "--output", "outputs/gen.csv")
    assert set(statuses(project)[-1].values()) == {"cached"}
    assert (root / "outputs" / "gen.csv").read_text().startswith("id,prompt,form,genre,seed,text")
    edited = root / "outputs" / "prompts.txt"
    edited.write_text("A fox finds a key.\n# a comment\nA crow counts the stars.\n")
    run(project, "run.py", "--pipeline", "inference", "--prompts", str(edited), "--output", "outputs/two.jsonl")
    assert statuses(project)[-1]["load_prompts"] == "completed"
    assert len((root / "outputs" / "two.jsonl").read_text().splitlines()) == 2
    (root / "outputs" / "bad.txt").write_text("A fine prompt.\nA bell \x07 rings.\n")
    for args, message in [((), "needs --prompts FILE"), (("--prompts", "nope.txt"), "prompts file not found"),
                          (("--prompts", "outputs/bad.txt"), "bad.txt:2: the prompt contains a control character")]:
        result = subprocess.run([sys.executable, "run.py", "--pipeline", "inference", *args], cwd=root, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-500:]


DEPLOYMENTS_SCRIPT = """
import json
from zenml.client import Client
from infra.bento_deployment import existing
deployer = Client().active_stack.model_deployer
print(json.dumps([{"id": str(s.uuid), "bento": s.config.bento_tag, "running": s.is_running,
                   "uri": s.config.model_uri, "pid": s.status.pid} for s in existing(deployer)]))
"""


def deployments(project) -> list[dict]:
    return json.loads(run(project, "-c", DEPLOYMENTS_SCRIPT).stdout.strip().splitlines()[-1])


def answers(url: str) -> tuple[int, str]:
    import httpx

    try:
        reply = httpx.get(url, timeout=2)
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__
    return reply.status_code, reply.text


def test_a_port_held_by_another_process_is_refused_before_anything_is_built(project, first_run):
    from infra.processes import free_port

    root, env = project
    port = free_port()
    squatter = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while answers(f"http://127.0.0.1:{port}/")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        result = subprocess.run([sys.executable, "run.py", "--pipeline", "deployment", "--port", str(port)], cwd=root,
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
        error = [line for line in result.stderr.splitlines() if line.startswith("run.py: error:")]
        assert len(error) == 1 and f"port {port} is held by pid {squatter.pid} (" in error[0], result.stderr[-2000:]
        assert "http.server" in error[0] and f"kill {squatter.pid}" in error[0] and "--port N" in error[0]
        assert deployments(project) == [] and answers(f"http://127.0.0.1:{port}/")[0] == 200  # nothing touched
    finally:
        squatter.kill()
        squatter.wait(10)


def test_deployments_verify_what_they_serve_and_survive_killed_processes(project, first_run):
    """Serve, replace, kill the worker, kill the supervisor, redeploy over the orphan, stop the orphan."""
    import signal

    import httpx

    from infra.processes import free_port, listeners, port_in_use

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    version = champion_version(project)
    try:
        out = run(project, "run.py", "--pipeline", "deployment", "--port", str(port)).stdout
        assert f"{base}/ui/" in out and f"v{version} @champion" in out
        first = deployments(project)
        assert len(first) == 1 and first[0]["running"] and first[0]["uri"] == f"models:/creative-writer/{version}"
        info = httpx.get(f"{base}/model", timeout=30).json()
        assert info["deployment"] == first[0]["id"]  # the new deployment answers, not something else
        assert info["ready"] and info["provenance"]["version"] == version and info["provenance"]["alias"] == "champion"
        reply = httpx.post(f"{base}/generate", json={"prompt": "A fox finds a key.", "seed": 2, "max_new_tokens": 16},
                           timeout=60)
        assert reply.status_code == 200 and reply.json()["drafts"][0]["text"]
        assert httpx.get(f"{base}/ui/", timeout=30).status_code == 200

        run(project, "run.py", "--pipeline", "deployment", "--port", str(port))  # replaces it
        second = deployments(project)
        assert len(second) == 1 and second[0]["running"] and second[0]["bento"] != first[0]["bento"]
        assert httpx.get(f"{base}/model", timeout=30).json()["deployment"] == second[0]["id"]

        # the worker dies: the supervisor starts another; meanwhile /readyz answers 503 with the reason
        daemon = second[0]["pid"]
        worker = [p.pid for p in listeners(port) if p.pid != daemon]
        assert len(worker) == 1, listeners(port)
        os.kill(worker[0], signal.SIGKILL)
        seen, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline:
            status, body = answers(f"{base}/readyz")
            seen.append((status, body[:80]))
            if status == 200:
                break
            time.sleep(0.2)
        assert seen[-1][0] == 200, seen[-5:]
        assert any(s == 503 and b.startswith("not ready:") for s, b in seen), seen  # said why while loading
        assert all(s in (0, 503, 200) for s, _ in seen), seen
        assert [p.pid for p in listeners(port) if p.pid != daemon] != worker  # a new worker

        # the supervisor dies (SIGKILL): its worker keeps the port, unmanaged; list shows it as an orphan
        os.kill(daemon, signal.SIGKILL)
        time.sleep(1)
        assert httpx.get(f"{base}/readyz", timeout=30).status_code == 200  # the orphan still answers
        listing = run(project, "-m", "infra.bento_deployment", "list").stdout
        assert "orphaned server process pid" in listing and "stop it with" in listing
        # the next deployment stops the orphan and serves, and checks it is the one answering
        run(project, "run.py", "--pipeline", "deployment", "--port", str(port))
        third = deployments(project)
        assert len(third) == 1 and third[0]["running"]
        assert httpx.get(f"{base}/model", timeout=30).json()["deployment"] == third[0]["id"]

        # once more, and `stop` finds the orphan and frees the port
        os.kill(third[0]["pid"], signal.SIGKILL)
        time.sleep(1)
        stopped = run(project, "-m", "infra.bento_deployment", "stop").stdout
        assert "stopped orphaned server process pid" in stopped
        assert not port_in_use("127.0.0.1", port)
        assert "no creative-writer deployment" in run(project, "-m", "infra.bento_deployment", "list").stdout
    finally:
        run(project, "-m", "infra.bento_deployment", "stop")


DPO_SCRIPT = """
import json, mlflow
from infra.stack import tracking_uri
mlflow.set_tracking_uri(tracking_uri())
runs = mlflow.search_runs(search_all_experiments=True, filter_string="params.family = 'transformer'",
                          order_by=["start_time DESC"], max_results=1, output_format="list")
params, metrics = runs[0].data.params, runs[0].data.metrics
print(json.dumps({"writer_pairs": params.get("dpo.writer_pairs"), "ran": params.get("dpo.ran"),
                  "reward_accuracy": metrics.get("dpo.reward_accuracy")}))
"""


def test_served_traffic_is_monitored_and_writers_feedback_is_trained_on(project, first_run):
    """The loop: serve, drive traffic with feedback, monitor it, train on the writers' pairs, decide a promotion."""
    import httpx

    from infra.drive_traffic import drive
    from infra.processes import free_port

    root, env = project
    port = free_port()
    champion = champion_version(project)
    challenger = "1" if champion != "1" else "2"
    run(project, "-m", "serving.aliases", "set", "challenger", challenger)
    canary = root / "configs" / "deployment-canary.yaml"
    canary.write_text((root / "configs" / "deployment.yaml").read_text().replace("challenger_share: 0 ",
                                                                                "challenger_share: 0.5 "))
    try:
        out = run(project, "run.py", "--pipeline", "deployment", "--config", str(canary), "--port", str(port)).stdout
        assert "models:/creative-writer@challenger is " in out and f"creative-writer v{challenger} " in out, out[-1500:]
        served = httpx.get(f"http://127.0.0.1:{port}/model", timeout=30).json()["canary"]
        assert served["share"] == 0.5 and served["challenger"]["version"] == challenger, served
        counts = drive(f"http://127.0.0.1:{port}", requests=16, seconds=300, max_new_tokens=16)
    finally:
        run(project, "-m", "infra.bento_deployment", "stop")
    assert counts["ok"] >= 12 and counts["4xx"] == 1 and counts["feedback"] >= 6, counts

    out = run(project, "run.py", "--pipeline", "monitoring", "--since", "1h").stdout
    logged = re.search(r"(\d+) requests \(ok ", out)  # the 16 driven, and any an earlier test sent here
    assert logged and int(logged.group(1)) >= 16 and "0 log rows lost" in out and "feedback: " in out, out[-2000:]
    assert "thresholds not judged: fewer than 20 requests" in out
    assert f"v{challenger} challenger: " in out and f"v{champion} champion: " in out, out[-2000:]
    assert "challenger vs champion: " in out

    strict = root / "configs" / "monitoring-strict.yaml"
    strict.write_text("parameters:\n  since: 1h\n  thresholds: {min_requests: 5, max_p95_ms: 1}\n")
    failed = subprocess.run([sys.executable, "run.py", "--pipeline", "monitoring", "--config", str(strict)], cwd=root,
                            env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and "p95 latency" in failed.stderr and "max_p95_ms 1" in failed.stderr, \
        failed.stderr[-1500:]

    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert statuses(project)[-1]["load_preferences"] == "completed" and "[promote]" in out
    trained = json.loads(run(project, "-c", DPO_SCRIPT).stdout.strip().splitlines()[-1])
    assert int(trained["writer_pairs"]) >= 4 and trained["ran"] == "True", trained
