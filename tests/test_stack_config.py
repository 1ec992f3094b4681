"""The stack YAMLs and the team stack's client set-up, without servers (the team test runs them for real)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.report import explain_failure
from infra.stack import STACK_CONFIGS, StackConfigError, load_stack_spec, spec_tracking_uri
from infra.team import TeamError, select_stack, use_team_environment
from tests.conftest import names

TEAM_ENV = {"MLFLOW_TRACKING_URI": "http://mlflow.example.org:5000", "CW_TEAM_DIR": "/srv/team"}


def test_the_team_stack_reads_servers_from_the_environment_and_keeps_the_local_roles_and_names(monkeypatch):
    for name, value in TEAM_ENV.items():
        monkeypatch.setenv(name, value)
    team, local = load_stack_spec(STACK_CONFIGS["team"]), load_stack_spec(STACK_CONFIGS["local"])
    assert set(team.components) == set(local.components)
    # the run profiles name the tracker: the same name on both stacks lets them run unchanged
    from core.paths import TRACKER  # the steps' decorators name it (steps/tracking.py)

    assert team.components["experiment_tracker"]["name"] == local.components["experiment_tracker"]["name"] == TRACKER
    tracker = team.components["experiment_tracker"]["configuration"]
    assert tracker["tracking_uri"] == "http://mlflow.example.org:5000" == spec_tracking_uri(team)
    assert tracker["tracking_token"] == "{{cw_mlflow.token}}"  # a ZenML secret, resolved by ZenML
    assert team.components["artifact_store"]["configuration"]["path"] == "/srv/team/zenml/artifacts"
    assert spec_tracking_uri(local).startswith("sqlite:////") and team.experiments == local.experiments
    text = STACK_CONFIGS["team"].read_text().lower()
    assert "password:" not in text.split("components:")[1]  # no credentials in the YAML


def test_a_variable_the_stack_reads_but_the_environment_lacks_is_named(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CW_TEAM_DIR", "/srv/team")
    with pytest.raises(StackConfigError, match=names("team.yaml", "MLFLOW_TRACKING_URI")):
        load_stack_spec(STACK_CONFIGS["team"])


def test_the_local_stack_changes_nothing_and_a_missing_team_says_how_to_start_it(tmp_path, monkeypatch):
    before = dict(os.environ)
    assert select_stack("local", tmp_path) is None and dict(os.environ) == before
    monkeypatch.delenv("ZENML_STORE_URL", raising=False)
    with pytest.raises(TeamError, match=names("python -m infra.team up")):
        select_stack("team", tmp_path)
    (tmp_path / "connection.json").write_text(json.dumps({"pg_port": 1, "mlflow_port": 9, "zenml_port": 9}))
    with pytest.raises(TeamError, match=names("MLflow", "http://127.0.0.1:9")):
        select_stack("team", tmp_path)


def test_servers_elsewhere_come_from_the_environment_and_the_team_client_keeps_its_own_folders(tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setenv("ZENML_STORE_URL", "https://zenml.example.org")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org")
    for name in ("ZENML_CONFIG_PATH", "ZENML_REPOSITORY_PATH", "ZENML_CUSTOM_SOURCE_ROOT", "CW_TEAM_DIR"):
        monkeypatch.delenv(name, raising=False)
    changed = use_team_environment(tmp_path)
    assert os.environ["ZENML_STORE_URL"] == "https://zenml.example.org"  # what the user set wins
    assert set(changed) == {"ZENML_CONFIG_PATH", "ZENML_REPOSITORY_PATH", "ZENML_CUSTOM_SOURCE_ROOT", "CW_TEAM_DIR"}
    assert Path(changed["ZENML_REPOSITORY_PATH"]).is_dir()
    assert Path(changed["ZENML_CONFIG_PATH"]).is_relative_to(tmp_path)  # never the user's global ZenML config


def test_an_unreachable_mlflow_server_is_said_plainly_and_other_errors_pass_through():
    raw = ("API request to http://127.0.0.1:38275/api/2.0/mlflow/registered-models/get failed with exception "
           "HTTPConnectionPool(host='127.0.0.1', port=38275): Max retries exceeded with url: /api/2.0/mlflow/"
           "registered-models/get?name=creative-writer (Caused by NewConnectionError(\"...: Failed to establish a "
           "new connection: [Errno 111] Connection refused\"))")
    said = explain_failure(raw)
    assert said.startswith("the MLflow tracking server at http://127.0.0.1:38275 did not answer (Connection refused)")
    assert "python -m infra.team up" in said
    assert explain_failure("a candidate's score is NaN") == "a candidate's score is NaN"


def test_logs_carry_no_colour_codes_off_a_terminal_and_no_warning_about_unused_frameworks(monkeypatch):
    import logging

    from infra.stack import TRACKER_LOGGER, quiet_defaults

    monkeypatch.delenv("ZENML_LOGGING_COLORS_DISABLED", raising=False)
    quiet_defaults()  # pytest captures stdout: not a terminal
    assert os.environ["ZENML_LOGGING_COLORS_DISABLED"] == "true"
    tracker = logging.getLogger(TRACKER_LOGGER)

    def shown(message: str) -> bool:
        record = tracker.makeRecord(TRACKER_LOGGER, logging.WARNING, __file__, 1, message, None, None)
        return all(f(record) if callable(f) else f.filter(record) for f in tracker.filters)

    assert not shown("Failed to disable MLflow autologging for the following frameworks: ['fastai'].")
    assert shown("Failed to disable MLflow autologging for the following frameworks: ['fastai', 'pytorch'].")
    assert shown("Something else went wrong.")


def test_the_tracker_switches_autologging_off_only_where_a_flavor_was_imported():
    """A cached rerun's ``promote`` no longer imports torch (through ``mlflow.pytorch``) to switch nothing off."""
    import subprocess
    import sys

    script = """
import sys, types
from infra.zenml_utils import disable_only_active_autologging
from zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker import MLFlowExperimentTracker
assert disable_only_active_autologging() and disable_only_active_autologging()  # once, then found in place
calls = []
fake = types.ModuleType("mlflow.sklearn")
fake.autolog = lambda **kw: calls.append(kw)
sys.modules["mlflow.sklearn"] = fake
MLFlowExperimentTracker.disable_autologging(None)
print(calls, "mlflow.pytorch" in sys.modules, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split("\n")[0] == "[{'disable': True}] False False"


def test_the_promotion_and_the_tags_it_reads_import_no_torch():
    """A cached rerun whose champion came from another run compares its recorded metrics and reads its cached
    samples: the modules on that path must not import torch (2.2 s of the rerun's 10 s)."""
    import subprocess
    import sys

    script = ("import sys, evaluation.champion, evaluation.promotion, evaluation.config, registry.tags; "
              "print(sorted(m for m in ('torch', 'transformers', 'evaluation.suite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
