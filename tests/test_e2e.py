"""End to end: run.py on the smoke profile in a copy of the project with its own ZenML config.

Asserts what a user sees: every step completed, the stack bootstrapped once, a second identical run
fully cached, and a changed cleaning parameter re-running clean_data and what follows but not ingest.
Statuses are read back through the ZenML client, not inferred from timings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e

IGNORE = shutil.ignore_patterns(".git", ".zen", ".mlflow", ".runs", "__pycache__", ".pytest_cache", ".ruff_cache",
                                "test-artifacts", "mlruns", ".venv")

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
    root = tmp_path_factory.mktemp("e2e") / "project"
    shutil.copytree(PROJECT_ROOT, root, ignore=IGNORE)
    env = {**os.environ, "ZENML_CONFIG_PATH": str(root.parent / "zenml-config"), "ZENML_ANALYTICS_OPT_IN": "false",
           "PYTHONPATH": str(root)}
    return root, env


def run(project: tuple[Path, dict[str, str]], *args: str) -> subprocess.CompletedProcess:
    root, env = project
    result = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def statuses(project) -> list[dict[str, str]]:
    return json.loads(run(project, "-c", STATUS_SCRIPT).stdout.strip().splitlines()[-1])


STEPS = {"ingest_data", "clean_data", "split_data", "data_report", "train_tokenizer", "train_seq2seq",
         "train_transformer", "train_gan", "evaluate", "promote", "evaluation_report"}
ALWAYS_RUN = {"promote", "evaluation_report"}  # promotion is a side effect (enable_cache=False); the report follows it

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


def test_first_run_completes_every_step_and_bootstraps_the_stack(project):
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
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
    assert champion["versions"] == 3
    assert "[promote]" in out and "first champion of 'creative-writer'" in out


def test_second_identical_run_is_cached_except_promotion_and_changes_no_stack(project):
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert "[stack]" not in out
    last = statuses(project)[-1]
    assert {last[s] for s in STEPS - ALWAYS_RUN} == {"cached"}
    assert {last[s] for s in ALWAYS_RUN} == {"completed"}
    assert "the champion stays" in out


def test_changing_only_gan_settings_reruns_only_the_gan_and_what_follows(project):
    root, _ = project
    profile = (root / "configs" / "smoke.yaml").read_text()
    assert "rounds: 2," in profile
    (root / "configs" / "smoke-gan.yaml").write_text(profile.replace("rounds: 2,", "rounds: 1,"))
    run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke-gan.yaml")
    last = statuses(project)[-1]
    rerun = {"train_gan", "evaluate"} | ALWAYS_RUN
    assert {last[s] for s in rerun} == {"completed"}
    assert {last[s] for s in STEPS - rerun} == {"cached"}


def test_changing_a_cleaning_parameter_reruns_clean_and_downstream_only(project):
    root, _ = project
    profile = (root / "configs" / "smoke.yaml").read_text()
    assert "min_words: 40" in profile
    (root / "configs" / "smoke-edited.yaml").write_text(profile.replace("min_words: 40", "min_words: 41"))
    run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke-edited.yaml")
    last = statuses(project)[-1]
    assert last["ingest_data"] == "cached"
    assert {last[s] for s in STEPS - {"ingest_data"}} == {"completed"}


def test_a_failing_step_ends_with_one_clear_line_and_exit_1(project):
    root, env = project
    result = subprocess.run([sys.executable, "run.py", "--config", "configs/smoke.yaml", "--dataset", "builtin?n=8"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "run.py: error: the training pipeline failed: step split_data failed: split: 'validation' got")
