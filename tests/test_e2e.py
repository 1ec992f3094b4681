"""End to end: run.py on the smoke profile in a copy of the project with its own ZenML config.

Asserts what a user sees: every step completed, the stack bootstrapped once, a second identical run
fully cached, and a changed cleaning parameter re-running clean_data and what follows but not ingest.
Statuses are read back through the ZenML client, not inferred from timings. The copy lives under a
hidden folder (``.checkout/``), as a checkout in ``~/.cache`` would. What follows training (batch
inference, deployments, monitoring) is in ``tests/test_e2e_serving.py``, on a copy of its own. The tests
tell one story in file order, and each also runs alone: the ``first_run`` fixture trains the copy once
for all of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e_support import ALWAYS_RUN, STEPS, run, statuses

pytestmark = pytest.mark.e2e


MODELS_SCRIPT = """
import json, mlflow
from infra.stack import tracking_uri
mlflow.set_tracking_uri(tracking_uri())
exp = mlflow.get_experiment_by_name("training_pipeline")
models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
families = sorted({mlflow.get_run(m.source_run_id).data.params.get("family", "") for m in models} - {""})
print(json.dumps({"models": len(models), "families": families}))
"""

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
import os
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


