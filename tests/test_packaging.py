"""``pip install .`` in a fresh virtual environment: every package is found and imports from the install."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# every folder of the checkout that is a package: what `pip install .` must find without a list
PACKAGES = tuple(sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"))

CHECK = """
import importlib, json, pathlib, sys
names = sys.argv[1:]
where = {}
for name in names:
    module = importlib.import_module(name)
    where[name] = str(pathlib.Path(module.__file__).resolve())
for name in ("steps.evaluate", "serving.schemas", "pipelines.training", "evaluation.writing"):
    importlib.import_module(name)
from evaluation.writing import load_open_prompts
from serving.config import load_serving_config
where["open_prompts"] = len(load_open_prompts())
where["examples"] = len(load_serving_config(env={}).ui.examples)
print(json.dumps(where))
"""


@pytest.mark.packaging
def test_pip_install_finds_every_package_and_they_import_from_the_install(tmp_path):
    assert {"core", "corpus", "models", "training", "serving", "steps", "evaluation"} <= set(PACKAGES)
    source = tmp_path / "source"  # a copy of what a clone holds, so the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "run.py"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "configs", source / "configs")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    # the dependencies come from this interpreter's site-packages (a .pth file names them: `--system-site-packages`
    # would reach the base interpreter's, not a virtual environment's); the project itself only from the install
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    inside = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (Path(inside) / "_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing importable by accident
    elsewhere.mkdir()
    run = subprocess.run([str(python), "-c", CHECK, *PACKAGES], cwd=elsewhere, capture_output=True, text=True,
                         timeout=600, env={"PATH": str(venv / "bin"), "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    where = json.loads(run.stdout.strip().splitlines()[-1])
    installed = str(venv.resolve())
    assert all(where[name].startswith(installed) for name in PACKAGES), where
    assert where["open_prompts"] > 0 and where["examples"] == 4  # package data and the built-in serving defaults

    # the console command: its version anywhere, the checkout's run.py inside one (found from a subfolder)
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path)}
    command = str(venv / "bin" / "creative-writer")
    version = subprocess.run([command, "--version"], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=60)
    assert version.returncode == 0 and version.stdout.split() == ["creative-writer", _version()]
    outside = subprocess.run([command, "--show-config"], cwd=elsewhere, capture_output=True, text=True, env=env,
                             timeout=60)
    assert outside.returncode == 2 and "no checkout" in outside.stderr
    inside = subprocess.run([command, "--help"], cwd=source / "configs", capture_output=True, text=True, env=env,
                            timeout=300)
    assert inside.returncode == 0 and "--pipeline" in inside.stdout, inside.stderr[-2000:]


def _version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
