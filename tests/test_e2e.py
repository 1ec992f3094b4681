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
families = sorted(mlflow.get_run(m.source_run_id).data.params["family"] for m in models)
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
         "train_transformer"}


def test_first_run_completes_every_step_and_bootstraps_the_stack(project):
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert "[stack] registered stack 'creative-writer-local'" in out
    assert "[stack] activated stack 'creative-writer-local'" in out
    assert "Where to look:" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    last = statuses(project)[-1]
    assert set(last) == STEPS and set(last.values()) == {"completed"}
    root, _ = project
    assert (root / ".mlflow" / "mlflow.db").is_file() and (root / ".zen").is_dir()
    logged = run(project, "-c", MODELS_SCRIPT).stdout.strip().splitlines()[-1]
    assert json.loads(logged) == {"models": 2, "families": ["seq2seq", "transformer"]}


def test_second_identical_run_is_fully_cached_and_changes_no_stack(project):
    out = run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout
    assert "[stack]" not in out
    assert set(statuses(project)[-1].values()) == {"cached"}


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
