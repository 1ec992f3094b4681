"""The request log's cost on the request path, and the whole request with the log on against off.

Two measures on one process (the writer thread running, writing to a real SQLite file as the service does):

- **on the request path**: the time the engine spends handing one request to the log (building the row and
  queueing it), over ``--calls`` calls: p50, p95 and the maximum (goal: p95 ≤ 2 ms);
- **whole requests**: ``Engine.generate_async`` on the tiny test model with the log on and off, alternated
  request by request (``--requests`` each), and the difference of the medians.

    python -m benchmarks.request_log --json docs/request_log.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import parse_args


def _writer() -> Any:
    """A tiny seq2seq writer on a tokenizer of 300 built-in pieces (seconds to build; what it writes is noise)."""
    import torch

    from corpus.builtin import generate_corpus
    from corpus.split import assign_splits
    from models.seq2seq import build_writer
    from models.tokenizer import train_on_split

    torch.manual_seed(0)
    tokenizer = train_on_split(assign_splits(generate_corpus(300, seed=11)), vocab_size=500)
    return build_writer(tokenizer, emb_dim=24, hidden=32, attn_dim=16, dropout=0.0)


def run(calls: int, requests: int) -> dict[str, Any]:
    """Both measures (milliseconds)."""
    from serving.champion import LoadedModel, Provenance
    from serving.config import load_serving_config
    from serving.engine import Engine
    from serving.schemas import GenerateRequest
    from workspace.db import connect, migrate
    from workspace.traffic import RequestLog, new_request_id, read_traffic

    folder = Path(tempfile.mkdtemp(prefix="cw-request-log-"))
    database = connect(f"sqlite:///{folder / 'workspace.db'}")
    migrate(database)
    request_log = RequestLog(lambda: database)
    writer = _writer()
    prov = Provenance(family="seq2seq", registered_name="cw", version="1", alias="champion", mlflow_run_id="r",
                      training_run_id="t", source="models:/cw/1", metrics={})
    config = load_serving_config(env={})
    config = replace(config, batching=replace(config.batching, enabled=False))
    logged = Engine(config, loader=lambda _: LoadedModel(writer, prov, 0.0), observer=request_log.record)
    plain = Engine(config, loader=lambda _: LoadedModel(writer, prov, 0.0))
    assert logged.load() and plain.load()
    request = GenerateRequest(prompt="A lighthouse keeper finds a message in a bottle.", max_new_tokens=8, seed=1,
                              num_drafts=2)

    settings = logged.plan(request).settings
    path_ms = []
    for _ in range(calls):
        started = time.perf_counter()
        logged._observe(new_request_id(), "generate", request, "ok", started, settings, ["Once upon a time."] * 2,
                        tokens=10)
        path_ms.append((time.perf_counter() - started) * 1000)
    request_log.flush(60)

    on, off = [], []
    for _ in range(requests):
        for engine, out in ((logged, on), (plain, off)):
            started = time.perf_counter()
            asyncio.run(engine.generate_async(request))
            out.append((time.perf_counter() - started) * 1000)
    request_log.flush(60)
    path_ms.sort()
    return {"calls": calls, "path_p50_ms": round(path_ms[len(path_ms) // 2], 4),
            "path_p95_ms": round(path_ms[int(0.95 * len(path_ms))], 4), "path_max_ms": round(path_ms[-1], 3),
            "requests_each": requests, "request_median_on_ms": round(statistics.median(on), 3),
            "request_median_off_ms": round(statistics.median(off), 3),
            "request_median_diff_ms": round(statistics.median(on) - statistics.median(off), 3),
            "rows_written": len(read_traffic(database)), "rows_lost": request_log.stats()["lost"]}


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and prints (and optionally saves) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="hand-offs timed on the request path")
    parser.add_argument("--requests", type=int, default=200, help="whole requests with the log on, and as many off")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parse_args(parser, argv, calls=50, requests=3)
    from core.threads import configure_threads

    configure_threads(1)
    figures = run(args.calls, args.requests)
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"command": "python -m benchmarks.request_log", **figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
