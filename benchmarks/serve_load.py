"""Serving under load: latency, first streamed chunk and throughput, adaptive batching on vs off.

Starts two local servers of the champion (``bentoml serve`` on free loopback ports, one with
``CW_BATCHING=on``, one ``off``), then for each concurrency level runs the same closed-loop load against
each in turn, several times, and reports medians: p50/p95 latency of ``/generate`` for
``--max-new-tokens`` tokens, time to the first ``/stream`` chunk, tokens/s, requests/s and errors.
Loopback only, and bounded by ``--requests`` per level and run.

    python -m benchmarks.serve_load                      # the project's models:/creative-writer@champion
    python -m benchmarks.serve_load --levels 1 4 --runs 2 --requests 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from infra.stack import tracking_uri
from serving.local import Server

PROMPTS = [
    ("A lighthouse keeper finds a message in a bottle written in her own handwriting.", "story", "mystery"),
    ("A tortoise who wants to fly asks the eagle for lessons.", "fable", ""),
    ("A colony ship wakes its crew a hundred years too early.", "story", "science fiction"),
    ("The last dragon in the mountains at the end of winter.", "poem", "fantasy"),
    ("A young inventor builds a clock that runs backwards.", "story", "adventure"),
    ("A fox and a crow argue over a piece of cheese.", "fable", ""),
]


def body(i: int, max_new_tokens: int) -> dict:
    """Request ``i``: prompts in turn, a fixed seed per request (the same load for both servers)."""
    prompt, form, genre = PROMPTS[i % len(PROMPTS)]
    return {"prompt": prompt, "form": form, "genre": genre, "max_new_tokens": max_new_tokens, "seed": 1000 + i}


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0–1) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low, high = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def load(url: str, concurrency: int, requests: int, max_new_tokens: int) -> dict:
    """``requests`` /generate calls from ``concurrency`` closed-loop clients."""
    latencies, tokens, errors = [], [], []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    response = http.post(url + "/generate", json=body(i, max_new_tokens))
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, response = False, exc
                took = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(took)
                        tokens.append(sum(d["tokens"] for d in response.json()["drafts"]))
                    else:
                        errors.append(str(getattr(response, "text", response))[:200])

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    wall = time.perf_counter() - start
    return {"p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95),
            "tokens_per_s": sum(tokens) / wall, "requests_per_s": len(latencies) / wall, "errors": len(errors),
            "mean_tokens": statistics.mean(tokens) if tokens else 0.0, "error_sample": errors[:1]}


def first_chunk(url: str, repeats: int, max_new_tokens: int) -> float:
    """Median seconds from sending a /stream request to its first non-empty chunk (one client)."""
    times = []
    with httpx.Client(timeout=120) as http:
        for i in range(repeats):
            start = time.perf_counter()
            with http.stream("POST", url + "/stream", json=body(i, max_new_tokens)) as response:
                for chunk in response.iter_text():  # read to the end so the server is idle again
                    if chunk and len(times) == i:
                        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints (and optionally saves) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=32, help="requests per level and run (≥ the level)")
    parser.add_argument("--runs", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--stream-repeats", type=int, default=9)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri(),
                        help="the MLflow registry holding models:/creative-writer@champion")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    home = tempfile.mkdtemp(prefix="cw-serve-load-")
    servers = {}
    for mode in ("on", "off"):
        servers[mode] = Server({"MLFLOW_TRACKING_URI": args.tracking_uri, "CW_BATCHING": mode, "CW_API_TOKEN": "",
                                "BENTOML_HOME": os.path.join(home, mode)}, Path(home) / f"server-{mode}.log")
    try:
        for server in servers.values():
            server.wait(ready=True, timeout=180)
        info = httpx.get(servers["on"].url + "/model", timeout=10).json()
        print(f"{info['status']}; {os.cpu_count()} CPUs; {args.max_new_tokens} new tokens per request")
        for server in servers.values():  # warm-up
            load(server.url, 2, 4, args.max_new_tokens)
        results: dict[str, dict] = {}
        for level in args.levels:
            per_mode: dict[str, list[dict]] = {"on": [], "off": []}
            for _ in range(args.runs):
                for mode, server in servers.items():  # side by side, alternating
                    per_mode[mode].append(load(server.url, level, max(args.requests, level), args.max_new_tokens))
            for mode, runs in per_mode.items():
                results[f"{mode}@{level}"] = {k: statistics.median(r[k] for r in runs)
                                              for k in ("p50_s", "p95_s", "tokens_per_s", "requests_per_s",
                                                        "mean_tokens")}
                results[f"{mode}@{level}"]["errors"] = sum(r["errors"] for r in runs)
                results[f"{mode}@{level}"]["error_sample"] = next((r["error_sample"] for r in runs
                                                                   if r["error_sample"]), [])
        ttfc = {mode: first_chunk(server.url, args.stream_repeats, args.max_new_tokens)
                for mode, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    print("\n| batching | concurrency | p50 latency | p95 latency | tokens/s | requests/s | errors | "
          "mean tokens |\n|---|---|---|---|---|---|---|---|")
    for level in args.levels:
        for mode in ("on", "off"):
            r = results[f"{mode}@{level}"]
            print(f"| {mode} | {level} | {r['p50_s'] * 1000:.0f} ms | {r['p95_s'] * 1000:.0f} ms | "
                  f"{r['tokens_per_s']:.0f} | {r['requests_per_s']:.2f} | {r['errors']} | {r['mean_tokens']:.0f} |")
    for level in args.levels:
        on, off = results[f"on@{level}"], results[f"off@{level}"]
        print(f"concurrency {level}: batching on/off throughput ratio {on['tokens_per_s'] / off['tokens_per_s']:.2f}×,"
              f" p95 ratio {on['p95_s'] / off['p95_s']:.2f}×")
    print(f"first streamed chunk (concurrency 1, median of {args.stream_repeats}): "
          f"{ttfc['on'] * 1000:.0f} ms (batching on) / {ttfc['off'] * 1000:.0f} ms (off)")
    one = results.get("on@1")
    if one:
        print(f"goals: first chunk ≤ 250 ms: {'met' if ttfc['on'] <= 0.25 else 'NOT met'}; p95 ≤ 2 s at "
              f"concurrency 1: {'met' if one['p95_s'] <= 2 else 'NOT met'}; no errors at the highest level: "
              f"{'met' if results[f'on@{max(args.levels)}']['errors'] == 0 else 'NOT met'}")
    for key, r in results.items():
        if r["error_sample"]:
            print(f"  {key} error sample: {r['error_sample'][0]}")
    if args.json:
        args.json.write_text(json.dumps({"model": info.get("provenance"), "results": results,
                                         "first_chunk_s": ttfc}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
