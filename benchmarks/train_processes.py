"""Transformer training in one process with every thread against N data-parallel processes of one thread.

The default profile's Transformer (the pretrained base with its LoRA adapter, unless ``--profile`` says
otherwise) on the profile's data: each run builds the writer as the training step does and trains one
epoch on ``--pieces`` pieces at the profile's global batch, once as 1 process × ``--threads`` threads and
once as ``--processes`` processes × 1 thread, alternating which goes first. Reports the median training
tokens/s of each (every process's tokens, from the training loop's own count over the epoch, evaluation
included) and the median per-pair ratio, plus the wall time of the whole call (for several processes it
includes starting them and loading the base in each).

    python -m benchmarks.train_processes --runs 3 --json docs/train_processes.json      # ~10 min
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.common import SMOKE_PROFILE, Prepared, parse_args, prepare


def one_run(prepared: Prepared, model: dict, train: dict, processes: int, threads: int,
            pieces: int) -> dict[str, float]:
    """Builds the writer as the step does and trains one epoch; its tokens/s and wall seconds."""
    import torch

    from models.transformer import TransformerConfig, build_transformer
    from training.config import TransformerTrainConfig
    from training.transformer_ddp import train as train_writer  # `train` is this function's settings

    train_part, val_part = prepared.part("train"), prepared.part("validation")
    torch.set_num_threads(threads)
    writer = build_transformer(prepared.tokenizer, TransformerConfig(**model),
                               forms=sorted(train_part["form"].unique()), genres=sorted(train_part["genre"].unique()))
    cfg = TransformerTrainConfig(**{**train, "epochs": 1, "max_train_pieces": pieces, "max_val_pieces": 4,
                                    "time_budget_s": 0, "progress_bar": False, "processes": processes,
                                    "torch_threads": 1 if processes > 1 else threads})
    started = time.perf_counter()
    history = train_writer(writer, train_part, val_part, cfg)
    return {"tokens_per_s": float(history["tokens_per_s"].iloc[0]), "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints (and optionally saves) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="configs/default.yaml")
    parser.add_argument("--runs", type=int, default=3, help="runs of each layout (alternating)")
    parser.add_argument("--pieces", type=int, default=32, help="training pieces per run (one epoch)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the single process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parse_args(parser, argv, profile=SMOKE_PROFILE, runs=1, pieces=4)
    if os.environ.get("CW_TORCH_THREADS"):
        parser.error("unset CW_TORCH_THREADS: it would override the thread counts compared here")
    prepared = prepare(args.profile)
    step = prepared.steps["train_transformer"]["parameters"]
    model, train = step.get("model") or {}, step.get("train_config") or {}
    layouts = {f"1x{args.threads}": (1, args.threads), f"{args.processes}x1": (args.processes, 1)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in layouts}
    ratios = []
    for i in range(args.runs):
        order = list(layouts) if i % 2 == 0 else list(layouts)[::-1]
        pair = {}
        for name in order:
            pair[name] = one_run(prepared, model, train, *layouts[name], args.pieces)
            results[name].append(pair[name])
            print(f"run {i + 1}, {name} (processes x threads): {pair[name]['tokens_per_s']:.0f} tokens/s, "
                  f"{pair[name]['wall_s']:.1f} s in all", flush=True)
        single, multi = list(layouts)
        ratios.append(pair[multi]["tokens_per_s"] / pair[single]["tokens_per_s"])
    single, multi = list(layouts)
    summary = {"cpus": os.cpu_count(), "profile": args.profile, "base_model": model.get("base_model", ""),
               "batch_size": train.get("batch_size"), "pieces": args.pieces, "runs": args.runs,
               "median_tokens_per_s": {n: round(statistics.median(r["tokens_per_s"] for r in v), 1)
                                       for n, v in results.items()},
               "median_wall_s": {n: round(statistics.median(r["wall_s"] for r in v), 1) for n, v in results.items()},
               "all": results, f"{multi}_over_{single}_median_ratio": round(statistics.median(ratios), 3)}
    print(f"median tokens/s: {single} {summary['median_tokens_per_s'][single]:.0f}, {multi} "
          f"{summary['median_tokens_per_s'][multi]:.0f}; {multi}/{single} (median per pair) "
          f"{statistics.median(ratios):.2f}×  (goal ≥ 0.9×)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
