"""Two torch processes on the same cores, with and without the thread policy.

Each process trains the attention seq2seq network (the default size, random tokens: 16 pieces of 128
target tokens per step) for ``--seconds`` and reports its training tokens/s. Scenarios, each repeated
``--runs`` times and alternated so that drift hits all alike (medians reported):

- ``alone, N threads`` — one process with torch's default (every core) — the fastest case for one job;
- ``alone, 1 thread`` — one process with ``CW_TORCH_THREADS=1``;
- ``2 processes, N threads each`` — what happens without the policy when a second job starts;
- ``2 processes, 1 thread each`` — the policy's advice for two jobs (``CW_TORCH_THREADS=1``).

Processes of a pair start at the same moment (a shared start time) and run for the same time.

    python -m benchmarks.threads                 # 20 s per process, 3 runs
    python -m benchmarks.threads --seconds 10 --runs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import parse_args
from core.paths import PROJECT_ROOT


def worker(seconds: float, start_at: float) -> dict:
    """Trains the seq2seq network on random tokens from ``start_at`` for ``seconds``; returns its throughput."""
    import torch

    from core.threads import configure_threads
    from models.seq2seq import Seq2Seq, Seq2SeqConfig

    threads = configure_threads(0)
    torch.manual_seed(0)
    config = Seq2SeqConfig(vocab_size=4000, pad_id=0, bos_id=1, eos_id=2)
    model = Seq2Seq(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, src_len, tgt_len = 16, 32, 128
    src = torch.randint(3, config.vocab_size, (batch, src_len))
    lengths = torch.full((batch,), src_len)
    tgt = torch.randint(3, config.vocab_size, (batch, tgt_len + 1))

    def step() -> None:
        _, loss, _ = model(src, lengths, tgt[:, :-1], tgt[:, 1:])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()  # warm-up (allocations, kernels)
    time.sleep(max(0.0, start_at - time.time()))
    steps, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        step()
        steps += 1
    took = time.perf_counter() - began
    return {"threads": threads or torch.get_num_threads(), "steps": steps,
            "tokens_per_s": steps * batch * tgt_len / took, "step_s": took / max(steps, 1)}


def scenario(processes: int, one_thread: bool, seconds: float, settle: float = 10.0) -> list[dict]:
    """Runs ``processes`` workers at once, started together ``settle`` seconds from now; returns their results."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("CW_TORCH_THREADS", None)
    if one_thread:
        env["CW_TORCH_THREADS"] = "1"
    start_at = time.time() + settle  # after every worker has imported torch and built its model
    children = [subprocess.Popen([sys.executable, "-m", "benchmarks.threads", "--worker", "--seconds", str(seconds),
                                  "--start-at", str(start_at)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                                 text=True) for _ in range(processes)]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"a benchmark worker failed (exit {child.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> int:
    """Runs the scenarios and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training time per process and run")
    parser.add_argument("--runs", type=int, default=3, help="repeats per scenario (medians reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds the workers get to import torch before they start together")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parse_args(parser, argv, seconds=1.0, runs=1, settle=3.0)
    if args.worker:
        print(json.dumps(worker(args.seconds, args.start_at)))
        return 0

    cores = os.cpu_count() or 1
    plan = {f"alone, {cores} threads": (1, False), "alone, 1 thread": (1, True),
            f"2 processes, {cores} threads each": (2, False), "2 processes, 1 thread each": (2, True)}
    runs: dict[str, list[list[dict]]] = {name: [] for name in plan}
    for run in range(args.runs):
        for name, (processes, one_thread) in plan.items():
            runs[name].append(scenario(processes, one_thread, args.seconds, args.settle))
            print(f"run {run + 1}/{args.runs} {name}: "
                  + ", ".join(f"{r['tokens_per_s']:.0f}" for r in runs[name][-1]) + " tokens/s", flush=True)
    summary = {}
    for name, results in runs.items():
        per_process = statistics.median(r["tokens_per_s"] for one in results for r in one)
        total = statistics.median(sum(r["tokens_per_s"] for r in one) for one in results)
        summary[name] = {"per_process_tokens_per_s": per_process, "total_tokens_per_s": total,
                         "threads": results[0][0]["threads"]}
    alone = summary[f"alone, {cores} threads"]["per_process_tokens_per_s"]
    print(f"\nseq2seq training (default size), {cores} cores, {args.seconds:g} s per process, median of {args.runs}")
    print("| scenario | tokens/s per process | tokens/s all processes | per process vs alone |\n|---|---|---|---|")
    for name, row in summary.items():
        print(f"| {name} | {row['per_process_tokens_per_s']:.0f} | {row['total_tokens_per_s']:.0f} | "
              f"{row['per_process_tokens_per_s'] / alone:.2f}× |")
    shared, policy = summary[f"2 processes, {cores} threads each"], summary["2 processes, 1 thread each"]
    print(f"two processes: with the policy (1 thread each) {policy['total_tokens_per_s']:.0f} tokens/s in all, "
          f"without it {shared['total_tokens_per_s']:.0f} "
          f"({policy['total_tokens_per_s'] / shared['total_tokens_per_s']:.2f}×)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
