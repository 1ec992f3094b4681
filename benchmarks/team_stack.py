"""The team stack's cached rerun against the local stack's, on this one machine.

Copies the project into a temporary folder (as the end-to-end tests do, so neither stack's state is the
checkout's), starts the team services there (``infra.team up``: PostgreSQL, the MLflow server, the ZenML
server), trains the smoke profile once on each stack, then times cached reruns of the same command,
alternating local and team ``--runs`` times each. Every rerun is a whole ``python run.py`` process: start-up,
stack check, the cached steps, promotion (which always runs) and the report. Reports each stack's median
and the median of the per-pair ratios (team / local), measured side by side. Everything it started is
stopped at the end.

    python -m benchmarks.team_stack --runs 5 --json docs/team_stack.json      # ~5 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import parse_args
from core.paths import PROJECT_ROOT
from infra.processes import free_port

PROFILE = "configs/smoke.yaml"
IGNORE = shutil.ignore_patterns(".git", ".cache", ".zen", ".mlflow", ".runs", ".team", "__pycache__",
                                ".pytest_cache", ".ruff_cache", "test-artifacts", "mlruns", ".venv", "outputs")


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Runs one command to the end; its wall time and output.

    Raises:
        RuntimeError: If it fails (with the end of its output).
    """
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return took, result.stdout


def cached_steps(output: str) -> str:
    """The run summary's "(N of M steps cached)"."""
    return next((line.strip() for line in output.splitlines() if "steps cached" in line), "?")


def main(argv: list[str] | None = None) -> int:
    """Sets both stacks up, times the cached reruns side by side, prints (and optionally saves) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cached reruns per stack (alternating)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parse_args(parser, argv, runs=1)

    base = Path(tempfile.mkdtemp(prefix="cw-team-bench-", dir="/tmp"))
    base.chmod(0o755)  # PostgreSQL runs as its own user and must reach its folder
    project, team_root = base / ".checkout" / "project", base / "team"
    shutil.copytree(PROJECT_ROOT, project, ignore=IGNORE)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ZENML_"))}
    common = {**clean, "ZENML_ANALYTICS_OPT_IN": "false", "PYTHONPATH": str(project),
              "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(base / "bentoml")}
    envs = {"local": {**common, "ZENML_CONFIG_PATH": str(base / "zenml-config")}, "team": common}
    ports = [str(free_port()) for _ in range(3)]
    team_cli = [sys.executable, "-m", "infra.team", "--root", str(team_root), "--pg-port", ports[0],
                "--mlflow-port", ports[1], "--zenml-port", ports[2]]
    commands = {"local": [sys.executable, "run.py", "--config", PROFILE],
                "team": [sys.executable, "run.py", "--stack", "team", "--team-root", str(team_root), "--config",
                         PROFILE]}
    times: dict[str, list[float]] = {"local": [], "team": []}
    ratios: list[float] = []
    first: dict[str, float] = {}
    try:
        up_s, _ = timed([*team_cli[:3], "up", *team_cli[3:]], project, common)
        print(f"team services up in {up_s:.1f} s; {os.cpu_count()} CPUs")
        for stack in ("local", "team"):
            first[stack], _ = timed(commands[stack], project, envs[stack])
            print(f"first run, {stack}: {first[stack]:.1f} s")
        for i in range(args.runs):
            order = ("local", "team") if i % 2 == 0 else ("team", "local")  # neither goes first every time
            took = {}
            for stack in order:
                took[stack], output = timed(commands[stack], project, envs[stack])
                times[stack].append(took[stack])
                print(f"cached rerun {i + 1}, {stack}: {took[stack]:.1f} s {cached_steps(output)}")
            ratios.append(took["team"] / took["local"])
    finally:
        subprocess.run([*team_cli[:3], "down", *team_cli[3:]], cwd=project, env=common, capture_output=True,
                       timeout=300)
        shutil.rmtree(base, ignore_errors=True)
    summary = {"cpus": os.cpu_count(), "profile": PROFILE, "runs": args.runs, "team_up_s": round(up_s, 2),
               "first_run_s": {k: round(v, 2) for k, v in first.items()},
               "cached_rerun_median_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
               "cached_rerun_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
               "team_over_local_median_ratio": round(statistics.median(ratios), 3)}
    print(f"cached rerun, median of {args.runs}: local {summary['cached_rerun_median_s']['local']:.1f} s, team "
          f"{summary['cached_rerun_median_s']['team']:.1f} s; team/local (median per pair) "
          f"{summary['team_over_local_median_ratio']:.2f}×  (goal ≤ 2×)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
