"""What the end-to-end tests share: a copy of the project with its own ZenML config, trained once per module.

``tests/test_e2e.py`` (the training story) and ``tests/test_e2e_serving.py`` (batch inference, deployments
and monitoring on the champion it promoted) each train their own copy, so the two files run in parallel
(``-n 2 --dist loadfile`` keeps a file on one worker). The ``project`` and ``first_run`` fixtures, module-scoped
so that each file gets its own copy, are in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT

IGNORE = shutil.ignore_patterns(".git", ".cache", ".zen", ".mlflow", ".runs", "__pycache__", ".pytest_cache",
                                ".ruff_cache", "test-artifacts", "mlruns", ".venv", ".state")

STATUS_SCRIPT = """
import json
from zenml.client import Client
runs = Client().list_pipeline_runs(sort_by="asc:created", size=50).items
print(json.dumps([{name: str(s.status.value) for name, s in r.steps.items()} for r in runs]))
"""


def make_project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the project with its own ZenML config, MLflow store, BentoML home and checkpoint cache."""
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

def train(project: tuple[Path, dict[str, str]]) -> str:
    """The copy's first training run (its output). Every later test asks for it, so each also runs alone
    (``pytest tests/test_e2e.py::test_...``) from a trained project, not only after the tests above it."""
    return run(project, "run.py", "--pipeline", "training", "--config", "configs/smoke.yaml").stdout


