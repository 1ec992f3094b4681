"""run.py's argument handling and profile resolution (no pipeline is run here)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from corpus.schema import DataError
from infra.profiles import ProfileError, load_profile, resolve_profile
from tests.conftest import PROJECT_ROOT, names


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["--pipline", "training"], "unrecognized arguments: --pipline"),
    (["--pipeline", "train"], "invalid choice: 'train'"),
    (["--config", "configs/nope.yaml"], "config file not found: configs/nope.yaml"),
    (["--config", "configs/smoke.yaml", "--dataset", "ftp:x"], "unknown dataset scheme 'ftp'"),
    (["--pipeline", "inference"], "needs --prompts FILE"),
    (["--pipeline", "inference", "--prompts", "x.txt", "--output", "out.txt"], "use a .jsonl or .csv file name"),
    (["--pipeline", "deployment", "--port", "70000"], "--port 70000: not a port number"),
])
def test_bad_invocations_exit_non_zero_with_one_clear_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_profiles_load_and_dataset_override_replaces_the_profile_source():
    for name in ("default", "smoke"):
        profile = load_profile(PROJECT_ROOT / "configs" / f"{name}.yaml")
        assert profile["parameters"]["dataset"]
    profile = load_profile(PROJECT_ROOT / "configs" / "smoke.yaml")
    resolved = resolve_profile(profile, ["builtin?n=50"], "smoke.yaml")
    assert resolved["parameters"]["dataset"] == ["builtin?n=50"]
    assert len(resolved["parameters"]["source_fingerprint"]) == 16
    assert profile["parameters"]["dataset"] != ["builtin?n=50"]  # the loaded profile is not mutated


def test_profile_errors_name_the_problem(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"parameters": {"dataset": ["builtin"]}, "stepz": {}}))
    with pytest.raises(ProfileError, match=names("['stepz']")):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no dataset"):
        resolve_profile({"parameters": {}}, None, "x.yaml")
    with pytest.raises(DataError, match="unknown dataset scheme"):
        resolve_profile({"parameters": {"dataset": ["what:ever"]}}, None, "x.yaml")


def test_version_is_the_projects():
    import tomllib

    result = run_cli("--version")
    expected = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.returncode == 0 and result.stdout.strip() == f"creative-writer {expected}"
    assert f"## {expected}" in (PROJECT_ROOT / "CHANGELOG.md").read_text()  # every version says what it changed


def test_the_fast_exit_keeps_the_status_and_every_line_of_a_piped_output():
    """run.py leaves with os._exit after main() returns: what it printed to a pipe must all arrive."""
    result = run_cli("--show-config", "--config", "configs/smoke.yaml")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)  # a cut-off output would not parse, or would lack its last step
    assert {"steps", "parameters"} <= set(resolved)
    assert "promote" in resolved["steps"] and result.stdout.endswith("\n")
