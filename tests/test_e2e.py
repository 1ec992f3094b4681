"""End to end: run.py on the smoke profile in a copy of the project with its own ZenML config.

Asserts what a user sees: every step completed, the stack bootstrapped once, a second identical run
fully cached, and a changed cleaning parameter re-running clean_data and what follows but not ingest.
Statuses are read back through the ZenML client, not inferred from timings. The copy lives under a
hidden folder (``.checkout/``), as a checkout in ``~/.cache`` would. After training: batch inference,
and deployments with their faults (a foreign process on the port, a killed worker, a killed supervisor).
The tests tell one story in file order, and each also runs alone: the ``first_run`` fixture trains the
copy once for all of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e

IGNORE = shutil.ignore_patterns(".git", ".cache", ".zen", ".mlflow", ".runs", "__pycache__", ".pytest_cache",
                                ".ruff_cache", "test-artifacts", "mlruns", ".venv", ".state")

MODELS_SCRIPT = """
import json, mlflow
from infra.stack import tracking_uri
mlflow.set_tracking_uri(tracking_uri())
exp = mlflow.get_experiment_by_name("training_pipeline")
models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
families = sorted({mlflow.get_run(m.source_run_id).data.params.get("family", "") for m in models} - {""})
print(json.dumps({"models": len(models), "families": families}))
"""

STATUS_SCRIPT = """
import json
from zenml.client import Client
runs = Client().list_pipeline_runs(sort_by="asc:created", size=50).items
print(json.dumps([{name: str(s.status.value) for name, s in r.steps.items()} for r in runs]))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:

    # under a hidden folder, as a checkout in ~/.cache or ~/.local would be (BentoML refuses hidden paths)
    root = tmp_path_factory.mktemp("e2e") / ".checkout" / "project"
    shutil.copytree(PROJECT_ROOT, root, ignore=IGNORE)
    # the project's own stack decides where MLflow is: drop what other tests' mlflow.set_tracking_uri() left
    # in this process's environment (MLflow exports it for subprocesses)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env = {**inherited, "ZENML_CONFIG_PATH": str(root.parent / "zenml-config"), "ZENML_ANALYTICS_OPT_IN": "false",
           "PYTHONPATH": str(root), "BENTOML_HOME": str(root.parent / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
           # an empty checkpoint cache, as on a fresh machine: the smoke profile's tiny base is written on first use
           "CW_CHECKPOINT_CACHE": str(root.parent / "checkpoints")}
    return root, env


def run(project: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess:
    root, env = project
    result = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def statuses(project) -> list[dict[str, str]]:
    return json.loads(run(project, "-c", STATUS_SCRIPT).stdout.strip().splitlines()[-1])


STEPS = {"ingest_data", "clean_data", "split_data", "data_report", "train_tokenizer", "train_seq2seq",
         "train_transformer", "train_gan", "evaluate", "promote", "evaluation_report", "load_preferences"}
# promote's cache key holds the registry's state: the run after a registry change runs it (and the report after)
ALWAYS_RUN = {"promote", "evaluation_report"}

CHAMPION_SCRIPT = """
import json, mlflow
from infra.stack import tracking_uri
mlflow.set_tracking_uri(tracking_uri())
model = mlflow.pyfunc.load_model("models:/creative-writer@champion")
text = model.predict({"prompt": "A lighthouse keeper finds a map."}, params={"max_new_tokens": 12, "seed": 1})[0]
version = mlflow.MlflowClient().get_model_version_by_alias("creative-writer", "champion")
print(json.dumps({"text": text, "family": version.tags["family"], "versions": len(
    mlflow.MlflowClient().search_model_versions("name='creative-writer'"))}))
"""


@pytest.fixture(scope="module")
def first_run(project) -> str:
    """The copy's first training run (its output). Every later test asks for it, so each also runs alone
    (``pytest tests/test_e2e.py::test_...``) from a trained project, not only after the tests above it."""
    return run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout


def test_first_run_completes_every_step_and_bootstraps_the_stack(project, first_run):
    out = first_run
    assert "[stack] registered stack 'creative-writer-local'" in out
    assert "[stack] activated stack 'creative-writer-local'" in out
    assert "Where to look:" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert "models:/creative-writer@champion" in out and "evaluation_report" in out
    last = statuses(project)[-1]
    assert set(last) == STEPS and set(last.values()) == {"completed"}
    root, _ = project
    assert (root / ".mlflow" / "mlflow.db").is_file() and (root / ".zen").is_dir()
    logged = run(project, "-c", MODELS_SCRIPT).stdout.strip().splitlines()[-1]
    logged = json.loads(logged)
    assert logged["families"] == ["gan", "seq2seq", "transformer"]  # one model per training step (+ promote's)
    champion = json.loads(run(project, "-c", CHAMPION_SCRIPT).stdout.strip().splitlines()[-1])
    assert isinstance(champion["text"], str) and champion["family"] in {"seq2seq", "transformer", "gan"}
    assert champion["versions"] == 4  # the three families and the Transformer's untuned base
    assert "[promote]" in out and "first champion of 'creative-writer'" in out


def test_identical_reruns_are_cached_promotion_once_more_then_too_and_change_no_stack(project, first_run):
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert "[stack]" not in out
    last = statuses(project)[-1]
    assert {last[s] for s in STEPS - ALWAYS_RUN} == {"cached"}
    assert {last[s] for s in ALWAYS_RUN} == {"completed"}
    assert "is already the champion" in out or "the champion stays" in out
    # the same four models: nothing logged or registered again (content fingerprints match)
    champion = json.loads(run(project, "-c", CHAMPION_SCRIPT).stdout.strip().splitlines()[-1])
    assert champion["versions"] == 4
    # that promotion changed nothing in the registry (its decision record aside): the next run is all cache hits
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert set(statuses(project)[-1].values()) == {"cached"} and "(12 of 12 steps cached)" in out
    # a registry change made by hand (a tag here) runs the promotion again
    run(project, "-c", TAG_BY_HAND_SCRIPT)
    run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml")
    assert statuses(project)[-1]["promote"] == "completed"


TAG_BY_HAND_SCRIPT = """
import mlflow
from infra.stack import tracking_uri
mlflow.set_tracking_uri(tracking_uri())
mlflow.MlflowClient().set_registered_model_tag("creative-writer", "note", "reviewed by hand")
"""


def test_a_checkpoint_that_cannot_resolve_stops_the_run_before_any_step(project, first_run):
    root, env = project
    bad = root / "configs" / "bad-base.yaml"
    bad.write_text((root / "configs" / "smoke.yaml").read_text().replace('base_model: "tiny:llama-chat"',
                                                                          "base_model: ./no/such/base"))
    runs_before = len(statuses(project))
    result = subprocess.run([sys.executable, "run.py", "--config", str(bad)], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    bad.unlink()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("run.py: error:")]
    assert len(error) == 1 and "steps.train_transformer.parameters.model.base_model" in error[0]
    assert len(statuses(project)) == runs_before  # no run was even created


SENTENCES = ["The kettle sang while the rain tapped on the roof of the small house.",
             "Her grandmother kept a jar of buttons that rattled when she walked past it.",
             "They walked along the canal until the bells of the old church rang for supper.",
             "A paper boat drifted past the bakery, and the baker waved at it with floury hands.",
             "He counted the stairs to the attic and always got a different number.",
             "The market smelled of oranges, wet cardboard and the smoke of chestnuts.",
             "When the wind came up, the washing on the line flapped like a row of flags.",
             "She wrote the word on the window with her finger and watched it fade.",
             "The tram was late again, so they shared a bag of warm bread on the bench."]


def write_real_test(path: Path, stories: int = 10) -> Path:
    """A TinyStories-style file of stories no template wrote (seeded shuffles of plain sentences)."""
    import random

    rng = random.Random(3)
    texts = [f"Story {i}: Mira found a note in a library book. " + " ".join(rng.sample(SENTENCES, 6))
             for i in range(stories)]
    path.write_text("\n<|endoftext|>\n".join(texts) + "\n")
    return path


def test_a_real_test_set_is_measured_without_retraining_and_a_leaking_one_stops_the_run(project, first_run):
    root, env = project
    spec = f"tinystories:{write_real_test(root.parent / 'real-stories.txt')}"
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml", "--real-test", spec).stdout
    last = statuses(project)[-1]
    rerun = {"load_real_tests", "evaluate"} | ALWAYS_RUN
    assert {last[s] for s in rerun} == {"completed"} and {last[s] for s in STEPS - rerun} == {"cached"}
    report = json.loads(run(project, "-c", REPORT_SCRIPT).stdout.strip().splitlines()[-1])
    assert "<h2>Real test sets</h2>" in report["page"] and "tinystories-real-stories: per-word ppl" in report["page"]
    assert report["sets"]["tinystories-real-stories"]["pieces"] == 10 and "[promote]" in out
    # the training data itself as a "real test": stopped by the held-out check, before any training
    leak = subprocess.run([sys.executable, "run.py", "--config", "configs/smoke.yaml", "--real-test",
                           "builtin?n=300&seed=13"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert leak.returncode == 1 and leak.stderr.strip().splitlines()[-1].startswith(
        "run.py: error: the training pipeline failed: step load_real_tests failed: real test 'builtin': ")
    assert "pieces are also in the training data" in leak.stderr


REPORT_SCRIPT = """
import json
from zenml.client import Client
run = Client().get_pipeline("training_pipeline").last_run
page = run.steps["evaluation_report"].outputs["evaluation_report"][0].load()
sets = run.steps["evaluate"].outputs["selection"][0].load()["real_tests"]
print(json.dumps({"page": str(page), "sets": sets}))
"""


RUNS_SCRIPT = """
import json, mlflow
from zenml.client import Client
from infra.stack import tracking_uri
runs = Client().list_pipeline_runs(sort_by="asc:created", size=100).items
mlflow.set_tracking_uri(tracking_uri())
client = mlflow.MlflowClient()
aliases = {a: str(client.get_model_version_by_alias("creative-writer", a).version) for a in ("champion",)}
found = client.search_model_versions("name='creative-writer'")
versions = {str(v.version): v.status for v in found}
promotion = {str(v.version): (v.tags or {}).get("promotion", "") for v in found}
print(json.dumps({"runs": [[r.name, str(r.status.value)] for r in runs], "aliases": aliases, "versions": versions,
                  "promotion": promotion}))
"""

KILLED_IN_PROMOTE = """
import os, signal, sys
import evaluation.promotion as promotion
def killed(*args, **kwargs):  # after the candidates are registered, before any alias moves
    os.kill(os.getpid(), signal.SIGKILL)
promotion.decide = killed
import run
sys.exit(run.main(sys.argv[1:]))
"""


def test_a_killed_run_is_marked_failed_at_the_next_start_and_the_rerun_completes(project, first_run):
    import signal

    root, env = project
    before = json.loads(run(project, "-c", RUNS_SCRIPT).stdout.strip().splitlines()[-1])
    process = subprocess.Popen([sys.executable, "run.py", "--config", "configs/smoke.yaml", "--no-cache"], cwd=root,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        for line in process.stdout:  # kill it in the middle of the first trainer
            if "train_seq2seq" in line and "has started" in line:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    killed = json.loads(run(project, "-c", RUNS_SCRIPT).stdout.strip().splitlines()[-1])["runs"][-1]
    assert killed[1] == "running"  # what ZenML shows for a dead run
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert f"[runs] {killed[0]} marked failed: its process (pid {process.pid}) is gone" in out
    after = json.loads(run(project, "-c", RUNS_SCRIPT).stdout.strip().splitlines()[-1])
    statuses_by_name = dict(after["runs"])
    assert statuses_by_name[killed[0]] == "failed" and after["runs"][-1][1] == "completed"
    # the registry stayed consistent: the champion is a version that exists and is ready
    assert after["versions"][after["aliases"]["champion"]] == "READY"
    assert set(before["versions"]) <= set(after["versions"])


def test_changing_only_gan_settings_reruns_only_the_gan_and_a_promote_killed_before_aliasing_heals(project, first_run):
    """A new GAN is trained and registered, then promote is SIGKILLed before deciding: nothing half-done stays."""
    root, env = project
    profile = (root / "configs" / "smoke.yaml").read_text()
    assert "rounds: 2," in profile
    (root / "configs" / "smoke-gan.yaml").write_text(profile.replace("rounds: 2,", "rounds: 1,"))
    before = json.loads(run(project, "-c", RUNS_SCRIPT).stdout.strip().splitlines()[-1])
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_PROMOTE, "--pipeline", "training", "--config",
                             "configs/smoke-gan.yaml"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    last = statuses(project)[-1]
    rerun = {"train_gan", "evaluate"}
    assert {last[s] for s in rerun} == {"completed"} and last["promote"] == "running"
    assert {last[s] for s in STEPS - rerun - ALWAYS_RUN} == {"cached"}  # only the GAN and what follows re-ran
    middle = json.loads(run(project, "-c", RUNS_SCRIPT).stdout.strip().splitlines()[-1])
    new = sorted(set(middle["versions"]) - set(before["versions"]), key=int)
    assert len(new) == 1 and middle["versions"][new[0]] == "READY"  # the new GAN, complete
    assert middle["aliases"] == before["aliases"] and middle["promotion"][new[0]] == ""  # no decision, no alias

    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke-gan.yaml").stdout
    assert "marked failed: its process" in out and "[promote]" in out
    last = statuses(project)[-1]
    assert {last[s] for s in STEPS - ALWAYS_RUN} == {"cached"} and last["promote"] == "completed"
    after = json.loads(run(project, "-c", RUNS_SCRIPT).stdout.strip().splitlines()[-1])
    assert after["versions"] == middle["versions"]  # the GAN registered before the kill is reused, not registered again
    champion = after["aliases"]["champion"]
    assert after["versions"][champion] == "READY" and after["promotion"][champion]  # decided and tagged
    assert after["runs"][-2][1] == "failed" and after["runs"][-1][1] == "completed"


def test_changing_a_cleaning_parameter_reruns_clean_and_downstream_only(project, first_run):
    root, _ = project
    profile = (root / "configs" / "smoke.yaml").read_text()
    assert "        workers: 1\n" in profile and "min_words" not in profile  # the default (40) comes from the code
    edited = profile.replace("        workers: 1\n", "        workers: 1\n        min_words: 41\n")
    (root / "configs" / "smoke-edited.yaml").write_text(edited)
    run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke-edited.yaml")
    last = statuses(project)[-1]
    assert last["ingest_data"] == "cached" and last["load_preferences"] == "cached"  # not downstream of cleaning
    assert {last[s] for s in STEPS - {"ingest_data", "load_preferences"}} == {"completed"}


def test_a_failing_step_ends_with_one_clear_line_and_exit_1(project, first_run):
    root, env = project
    result = subprocess.run([sys.executable, "run.py", "--config", "configs/smoke.yaml", "--dataset", "builtin?n=8"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "run.py: error: the training pipeline failed: step split_data failed: split: 'validation' got")


# --- after training: batch inference and deployment on the champion it promoted ------------------------
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
