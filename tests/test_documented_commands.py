"""Every command the README and the docs show is run, so a documented command cannot rot unnoticed.

- ``python -m benchmarks.NAME ARGS``: every documented command's options are parsed; per module, the
  command with the most options runs as written plus ``--smoke`` (benchmarks/common.py): the sizes shrink
  to seconds and ``--json`` goes to a temporary folder.
  The benchmarks that read the champion get a tiny Llama + LoRA champion in a throw-away registry.
- ``python run.py ARGS`` is resolved with ``--show-config`` (flags, profile, data specs); the pipelines
  themselves run end to end on the smoke profile in ``tests/test_e2e.py`` and ``tests/test_e2e_serving.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# benchmarks that start servers, the team stack or several training processes run in those tiers
TIERS = {"serve_load": "serving", "openai_overhead": "serving", "team_stack": "team",
         "train_processes": "multiprocess"}
SKETCH = re.compile(r"^\[|…|\.\.\.|^[A-Z]{3,}$|\.NAME$|\.\*$")  # a sketch: [--flag], …, FILE, benchmarks.NAME, .*
NEEDS_CHAMPION = {"presets", "runtimes", "serve_load", "openai_overhead", "long_manuscript", "wind_down"}


def shown_commands(prefix: str) -> list[tuple[str, list[str]]]:
    """``(page, argv)`` of every command starting with ``prefix`` in the pages' code blocks and inline code.

    ``argv`` is the whole command (``python``, ``-m``, ...).

    A block's backslash continuations are joined and ``# comments`` dropped; usage sketches (``[--flag]``,
    ``…``) are not commands and are left out.
    """
    found: list[tuple[str, list[str]]] = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        lines = []
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            for name, value in re.findall(r"^([A-Z_]+)=(\S+)$", block, re.M):  # D=../shared/datasets
                block = block.replace(f"${name}", value)
            lines += block.splitlines()
        lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            at = line.find(prefix)
            if at < 0:
                continue
            argv = shlex.split(line[at:], comments=True)
            if not any(SKETCH.search(word) for word in argv):
                found.append((page.name, argv))
    return found


def unique(commands: list[tuple[str, list[str]]]) -> dict[tuple[str, ...], str]:
    """Each distinct argv once, with the first page that shows it."""
    seen: dict[tuple[str, ...], str] = {}
    for page, argv in commands:
        seen.setdefault(tuple(argv), page)
    return seen


# benchmarks: (module, *args); run.py: (*args)
BENCHMARKS = unique([(page, [argv[2].removeprefix("benchmarks."), *argv[3:]])
                     for page, argv in shown_commands("python -m benchmarks.")])
RUNS = unique([(page, argv[2:]) for page, argv in shown_commands("python run.py")])


def smoke_runs() -> dict[str, list[str]]:
    """Per benchmark module, the documented command with the most options: the one run in smoke mode.

    The module's other documented commands differ in sizes that ``--smoke`` replaces anyway; their options
    are parsed (:func:`test_every_documented_benchmark_command_parses`), so a renamed option still fails.
    """
    chosen: dict[str, list[str]] = {}
    for argv in BENCHMARKS:
        if len(argv) > len(chosen.get(argv[0], [])):
            chosen[argv[0]] = list(argv)
    return chosen


def benchmark_params() -> list:
    """One test per benchmark module the pages show, in its module's tier."""
    params = []
    for module, argv in smoke_runs().items():
        marks = [getattr(pytest.mark, TIERS[module])] if module in TIERS else [pytest.mark.e2e]
        params.append(pytest.param(argv, id=" ".join(argv)[:80], marks=marks))
    return params


def test_the_pages_show_benchmarks_and_run_commands():
    """The extraction itself finds what the pages show (a parser that found nothing would pass everything)."""
    modules = {argv[0] for argv in BENCHMARKS}
    assert {"runtimes", "measure_check", "distill", "serve_load", "data_pipeline"} <= modules
    assert all((ROOT / "benchmarks" / f"{m}.py").is_file() for m in modules), modules
    assert ("--pipeline", "deployment") in RUNS and ("--pipeline", "training") in RUNS


@pytest.fixture(scope="module")
def champion_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose registry holds a tiny Llama + LoRA champion (with its GGUF export)."""
    from tests.serving_support import register_tiny_llama_champion

    folder = tmp_path_factory.mktemp("documented")
    uri, _ = register_tiny_llama_champion(folder, genres=("fantasy", "science fiction", "mystery", "adventure"))
    return {"MLFLOW_TRACKING_URI": uri, "BENTOML_HOME": str(folder / "bentoml"),
            "ZENML_CONFIG_PATH": str(folder / "zenml")}


@pytest.mark.parametrize("argv", benchmark_params())
def test_documented_benchmark_runs(argv: list[str], request, tmp_path):
    """The command exits 0 in its smoke mode and prints its table."""
    module = argv[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZENML_CONFIG_PATH": str(tmp_path / "zenml"),
           "ZENML_ANALYTICS_OPT_IN": "false", "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("CW_TORCH_THREADS", None)
    if module in NEEDS_CHAMPION:
        env.update(request.getfixturevalue("champion_env"))
    result = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *argv[1:], "--smoke"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    tail = (result.stdout[-3000:] + result.stderr[-3000:])
    assert result.returncode == 0, tail
    assert result.stdout.strip(), f"benchmarks.{module} printed nothing"


@pytest.mark.parametrize("argv", [pytest.param(list(a), id=f"{page}:{' '.join(a)}"[:90])
                                  for a, page in BENCHMARKS.items()])
def test_every_documented_benchmark_command_parses(argv: list[str], capsys):
    """Every documented option exists with a value of its type (in-process, ``--parse-only``: nothing runs)."""
    import importlib

    module = importlib.import_module(f"benchmarks.{argv[0]}")
    with pytest.raises(SystemExit) as ended:
        module.main([*argv[1:], "--parse-only"])
    assert ended.value.code == 0, capsys.readouterr().err


@pytest.mark.parametrize("argv", [pytest.param(list(a), id=" ".join(a)) for a in RUNS])
def test_documented_run_command_resolves(argv: list[str], capsys, monkeypatch):
    """``run.py`` accepts the documented flags and resolves their settings (``--show-config`` runs nothing)."""
    import run

    shared = ROOT.parent / "shared" / "datasets"
    if any("../shared/datasets" in word for word in argv) and not shared.is_dir():
        pytest.skip(f"the command reads ../shared/datasets, which is not beside this checkout ({shared})")
    monkeypatch.chdir(ROOT)
    code = run.main([*argv, "--show-config"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "steps" in out or "parameters" in out
