"""Benchmark: ingest + clean throughput, and the wall time of a fully cached training-pipeline run.

Usage:
    python -m benchmarks.data_pipeline                      # the real datasets in ../shared/datasets
    python -m benchmarks.data_pipeline --dataset builtin?n=6000 --runs 5
    python -m benchmarks.data_pipeline --skip-cached-run

Throughput is measured in this process (median of ``--runs`` runs after the same code has run once, so
spaCy/NLTK import costs are not counted; the first run's time is shown separately). MB are the UTF-8
bytes of prompts and texts as loaded. The cached-run time is measured on a copy of the project with its
own ZenML config: one cold run, then ``--cached-runs`` identical runs, each timed from process start to
exit (interpreter start included), median reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SMOKE_PROFILE, parse_args
from corpus.cleaning import CleaningConfig, clean_corpus
from corpus.loaders import load_sources

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DEFAULT_SPECS = [
    f"writingprompts:{SHARED}/writingprompts",
    f"tinystories:{SHARED}/tinystories/TinyStories-train_first2MiB.txt",
    f"jsonl:{SHARED}/fairy_tales/fairy_tales.jsonl?form_default=fairy tale",
]


def measure_throughput(spec: str, runs: int, workers: int) -> dict:
    """Times ingest and clean of one source; returns the row of the results table."""
    cfg = CleaningConfig(workers=workers)
    first_start = time.perf_counter()
    frame = load_sources([spec])
    clean_corpus(frame, cfg)
    first = time.perf_counter() - first_start
    ingest, clean = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        frame = load_sources([spec])
        t1 = time.perf_counter()
        out, _ = clean_corpus(frame, cfg)
        clean.append(time.perf_counter() - t1)
        ingest.append(t1 - t0)
    mb = (frame["prompt"].str.encode("utf-8").str.len().sum() + frame["text"].str.encode("utf-8").str.len().sum()) / 1e6
    i_med, c_med = statistics.median(ingest), statistics.median(clean)
    return {
        "dataset": spec.split("?")[0].split("/")[-1] if "/" in spec else spec, "pieces": len(frame),
        "kept": len(out), "MB": mb, "ingest_s": i_med, "clean_s": c_med, "first_run_s": first,
        "clean_MB_s": mb / c_med, "ingest_clean_MB_s": mb / (i_med + c_med), "pieces_s": len(frame) / (i_med + c_med),
    }


def measure_cached_run(profile: str, runs: int) -> tuple[float, list[float]]:
    """Cold run then ``runs`` cached runs of run.py in an isolated copy; returns (cold, cached times)."""
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
            ".git", ".zen", ".mlflow", ".runs", "__pycache__", ".pytest_cache", "test-artifacts", ".venv"))
        env = {**os.environ, "ZENML_CONFIG_PATH": str(Path(tmp) / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
        cmd = [sys.executable, "run.py", "--pipeline", "training", "--config", profile]

        def timed() -> float:
            t0 = time.perf_counter()
            result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=1800)
            if result.returncode != 0:
                raise RuntimeError(f"run.py failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            if "cached)" not in result.stdout:
                raise RuntimeError("run.py printed no step summary")
            return time.perf_counter() - t0

        cold = timed()
        cached = []
        for _ in range(runs):
            cached.append(timed())
        return cold, cached


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints a table and one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="source spec (repeat); default: the shared real datasets")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per dataset (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="cleaning processes")
    parser.add_argument("--profile", default="configs/default.yaml", help="profile for the cached-run timing")
    parser.add_argument("--cached-runs", type=int, default=3, help="cached pipeline runs to time")
    parser.add_argument("--skip-cached-run", action="store_true", help="only measure throughput")
    args = parse_args(parser, argv, dataset=["builtin?n=120&seed=3"], runs=1, workers=1,
                      profile=SMOKE_PROFILE, cached_runs=1, skip_cached_run=True)  # the e2e tests time reruns
    specs = args.dataset or ([s for s in DEFAULT_SPECS if SHARED.is_dir()] or ["builtin?n=6000"])
    if not args.dataset and not SHARED.is_dir():
        print(f"note: {SHARED} not found; measuring the built-in corpus instead")

    print(f"ingest + clean throughput (median of {args.runs} runs, {args.workers} cleaning workers)")
    header = f"{'dataset':<32}{'pieces':>8}{'kept':>7}{'MB':>7}{'ingest s':>10}{'clean s':>9}" \
             f"{'clean MB/s':>12}{'in+cl MB/s':>12}{'pieces/s':>10}{'1st run s':>11}"
    print(header)
    print("-" * len(header))
    rows = []
    for spec in specs:
        r = measure_throughput(spec, args.runs, args.workers)
        rows.append(r)
        print(f"{r['dataset'][:31]:<32}{r['pieces']:>8}{r['kept']:>7}{r['MB']:>7.2f}{r['ingest_s']:>10.3f}"
              f"{r['clean_s']:>9.3f}{r['clean_MB_s']:>12.2f}{r['ingest_clean_MB_s']:>12.2f}{r['pieces_s']:>10.0f}"
              f"{r['first_run_s']:>11.2f}")
    total_mb = sum(r["MB"] for r in rows)
    total_clean = sum(r["clean_s"] for r in rows)
    total_all = sum(r["ingest_s"] + r["clean_s"] for r in rows)
    summary = (f"summary: cleaning {total_mb / total_clean:.2f} MB/s, ingest+clean {total_mb / total_all:.2f} MB/s "
               f"over {total_mb:.1f} MB (goal >= 2 MB/s)")
    if not args.skip_cached_run:
        cold, cached = measure_cached_run(args.profile, args.cached_runs)
        med = statistics.median(cached)
        print(f"\ntraining pipeline with {args.profile}: cold run {cold:.1f} s; fully cached runs "
              f"{', '.join(f'{c:.1f}' for c in cached)} s (median {med:.1f} s, goal <= 15 s)")
        summary += f"; cached pipeline run {med:.1f} s wall (goal <= 15 s)"
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
