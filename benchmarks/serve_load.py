"""Serving under load: latency, first streamed chunk and throughput, two servers side by side.

Starts two local servers of the champion (``bentoml serve`` on free loopback ports) that differ in one
setting, ``--compare runtime`` (the default: ``CW_RUNTIME=llama.cpp`` against ``torch``) or ``--compare
batching`` (``CW_BATCHING=on`` against ``off``), then for each concurrency level runs the same
closed-loop load against each in turn, several times, and reports medians: p50/p95 latency of
``/generate`` for ``--max-new-tokens`` tokens, time to the first ``/stream`` chunk, tokens/s, requests/s,
errors, and the requests refused at once with 503 + ``Retry-After`` (admission control,
``limits.max_in_flight``), which are not errors. Loopback only, and bounded by ``--requests`` per level
and run.

    python -m benchmarks.serve_load                      # the project's models:/creative-writer@champion
    python -m benchmarks.serve_load --compare batching --levels 1 4 --runs 2 --requests 16
    python -m benchmarks.serve_load --soak               # 16 clients for 60 s, good and bad requests mixed

The soak (one server, the profile's batching) sends ``/generate`` and ``/stream`` requests mixed with bad
ones (malformed JSON, an unknown form, a wrong type, an over-long prompt), and counts as an error any 5xx,
any failed connection, a good request not answered 200 or a bad one not answered 400/422. It samples the
server's resident memory (supervisor and workers) after the warm-up and at the end, and checks both
against ``--rss-bound-mib`` of growth.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.common import parse_args
from infra.local_server import Server
from infra.stack import tracking_uri

PROMPTS = [
    ("A lighthouse keeper finds a message in a bottle written in her own handwriting.", "story", "mystery"),
    ("A tortoise who wants to fly asks the eagle for lessons.", "fable", ""),
    ("A colony ship wakes its crew a hundred years too early.", "story", "science fiction"),
    ("The last dragon in the mountains at the end of winter.", "poem", "fantasy"),
    ("A young inventor builds a clock that runs backwards.", "story", "adventure"),
    ("A fox and a crow argue over a piece of cheese.", "fable", ""),
]


@functools.cache
def served_controls(url: str) -> tuple[frozenset[str], frozenset[str]]:
    """The forms and genres the server's model knows (``GET /model``), asked once per server."""
    controls = httpx.get(url + "/model", timeout=10).json().get("controls") or {}
    return frozenset(controls.get("form") or ()), frozenset(controls.get("genre") or ())


def body(i: int, max_new_tokens: int, url: str = "") -> dict:
    """Request ``i``: prompts in turn, a fixed seed per request (the same load for both servers).

    With ``url``, a form or genre the served model does not know is left to its default, so any champion
    can be measured (a tiny test model knows fewer genres than the trained one).
    """
    prompt, form, genre = PROMPTS[i % len(PROMPTS)]
    if url:
        forms, genres = served_controls(url)
        form = form if not forms or form in forms else "story"
        genre = genre if genre in genres else ""
    return {"prompt": prompt, "form": form, "genre": genre, "max_new_tokens": max_new_tokens, "seed": 1000 + i}


COMPARED = {"runtime": ("CW_RUNTIME", ("llama.cpp", "torch")), "batching": ("CW_BATCHING", ("on", "off"))}


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
    latencies, tokens, errors, refused = [], [], [], []
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
                    response = http.post(url + "/generate", json=body(i, max_new_tokens, url))
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, response = False, exc
                took = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(took)
                        tokens.append(sum(d["tokens"] for d in response.json()["drafts"]))
                    elif getattr(response, "status_code", 0) == 503 and "Retry-After" in response.headers:
                        refused.append(took)  # admission control said no at once: not an error
                    else:
                        errors.append(str(getattr(response, "text", response))[:200])

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(client)
    wall = time.perf_counter() - start
    return {"p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95),
            "tokens_per_s": sum(tokens) / wall, "requests_per_s": len(latencies) / wall, "errors": len(errors),
            "refused": len(refused), "refused_p95_s": percentile(refused, 0.95) if refused else 0.0,
            "mean_tokens": statistics.mean(tokens) if tokens else 0.0, "error_sample": errors[:1]}


def first_chunk(url: str, repeats: int, max_new_tokens: int) -> float:
    """Median seconds from sending a /stream request to its first non-empty chunk (one client)."""
    times = []
    with httpx.Client(timeout=120) as http:
        for i in range(repeats):
            start = time.perf_counter()
            with http.stream("POST", url + "/stream", json=body(i, max_new_tokens, url)) as response:
                for chunk in response.iter_text():  # read to the end so the server is idle again
                    if chunk and len(times) == i:
                        times.append(time.perf_counter() - start)
    return statistics.median(times)


BAD = [  # (body, content) of requests the server must refuse with 400 or 422, never a 5xx
    (b'{"prompt": "A fox', "application/json"),
    (b'{"prompt": "A fox finds a key.", "form": "limerick-of-doom"}', "application/json"),
    (b'{"prompt": "A fox finds a key.", "max_new_tokens": "many"}', "application/json"),
    (json.dumps({"prompt": "word " * 3000}).encode(), "application/json"),
]


def server_rss(server: Server) -> int:
    """Resident memory of the server's process tree (supervisor and workers), bytes."""
    import psutil

    root = psutil.Process(server.process.pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def soak(url: str, clients: int, seconds: float, max_new_tokens: int) -> dict:
    """``clients`` closed-loop clients for ``seconds``: every 10 requests 6 /generate, 2 /stream, 2 bad ones."""
    latencies: dict[str, list[float]] = {"generate": [], "stream": [], "bad": []}
    errors: list[str] = []
    counter = iter(range(10**9))
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def one(http: httpx.Client, i: int) -> tuple[str, bool, str]:
        kind = ("generate", "generate", "stream", "generate", "bad", "generate", "stream", "generate", "generate",
                "bad")[i % 10]
        if kind == "generate":
            response = http.post(url + "/generate", json=body(i, max_new_tokens, url))
            return kind, response.status_code == 200 and bool(response.json()["drafts"][0]["text"]), response.text
        if kind == "stream":
            with http.stream("POST", url + "/stream", json=body(i, max_new_tokens, url)) as response:
                text = "".join(response.iter_text())
            return kind, response.status_code == 200 and bool(text), text
        content, kind_header = BAD[(i // 10) % len(BAD)]
        response = http.post(url + "/generate", content=content, headers={"Content-Type": kind_header})
        return kind, response.status_code in (400, 422), f"{response.status_code} {response.text}"

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                start = time.perf_counter()
                try:
                    kind, ok, detail = one(http, i)
                except httpx.HTTPError as exc:
                    kind, ok, detail = "connection", False, repr(exc)
                took = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies[kind].append(took)
                    else:
                        errors.append(f"{kind}: {detail[:200]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "errors": len(errors), "error_sample": errors[:3],
            **{f"{k}_count": len(v) for k, v in latencies.items()},
            **{f"{k}_p50_s": percentile(v, 0.5) for k, v in latencies.items()},
            **{f"{k}_p95_s": percentile(v, 0.95) for k, v in latencies.items()}}


def run_soak(args: argparse.Namespace) -> int:
    """The soak: one server, warm-up, ``--clients`` for ``--seconds``, memory before and after."""
    home = tempfile.mkdtemp(prefix="cw-soak-")
    server = Server({"MLFLOW_TRACKING_URI": args.tracking_uri, "CW_API_TOKEN": "", "BENTOML_HOME": home},
                    Path(home) / "server.log")
    try:
        server.wait(ready=True, timeout=180)
        info = httpx.get(server.url + "/model", timeout=10).json()
        import psutil

        arenas = psutil.Process(server.process.pid).environ().get("MALLOC_ARENA_MAX", "glibc's default")
        print(f"{info['status']}; batching {'on' if info['batching']['enabled'] else 'off'}; malloc arenas {arenas}; "
              f"{os.cpu_count()} CPUs; "
              f"{args.clients} clients for {args.seconds:g} s; {args.max_new_tokens} new tokens per request")
        soak(server.url, args.clients, args.warmup, args.max_new_tokens)  # warm-up: every path, every batch size
        before = server_rss(server)
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(args.seconds / 6):
                samples.append(server_rss(server))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = soak(server.url, args.clients, args.seconds, args.max_new_tokens)
        done.set()
        sampler.join()
        after = server_rss(server)
        alive = server.process.poll() is None
    finally:
        server.stop()
    growth_mib = (after - before) / 2**20
    print("\n| requests | count | p50 | p95 |\n|---|---|---|---|")
    for kind in ("generate", "stream", "bad"):
        print(f"| {kind} | {result[f'{kind}_count']} | {result[f'{kind}_p50_s'] * 1000:.0f} ms | "
              f"{result[f'{kind}_p95_s'] * 1000:.0f} ms |")
    print(f"errors: {result['errors']}; server resident memory {before / 2**20:.0f} MiB after the warm-up, "
          f"{after / 2**20:.0f} MiB at the end ({growth_mib:+.0f} MiB); server alive at the end: {alive}")
    print("resident memory during the soak (MiB): " + " → ".join(f"{r / 2**20:.0f}" for r in [before, *samples, after]))
    for sample in result["error_sample"]:
        print(f"  error sample: {sample}")
    met = result["errors"] == 0 and growth_mib <= args.rss_bound_mib and alive
    print(f"goals: 0 errors and memory growth ≤ {args.rss_bound_mib} MiB: {'met' if met else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"model": info.get("provenance"), "soak": result, "rss_before": before,
                                         "rss_samples": samples, "rss_after": after}, indent=2))
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints (and optionally saves) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=sorted(COMPARED), default="runtime", help="what the two servers differ in")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    parser.add_argument("--requests", type=int, default=32, help="requests per level and run (≥ the level)")
    parser.add_argument("--runs", type=int, default=3, help="repeats; medians are reported")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--stream-repeats", type=int, default=9)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri(),
                        help="the MLflow registry holding models:/creative-writer@champion")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--soak", action="store_true", help="run the soak instead (see above)")
    parser.add_argument("--clients", type=int, default=16, help="soak: concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="soak: how long")
    parser.add_argument("--warmup", type=float, default=30.0, help="soak: seconds of the same load before measuring")
    parser.add_argument("--rss-bound-mib", type=float, default=64.0, help="soak: allowed memory growth")
    args = parse_args(parser, argv, levels=[1], requests=2, runs=1, max_new_tokens=4, stream_repeats=1,
                      clients=2, seconds=2.0, warmup=1.0)
    if args.soak:
        return run_soak(args)

    variable, modes = COMPARED[args.compare]
    home = tempfile.mkdtemp(prefix="cw-serve-load-")
    servers = {}
    for mode in modes:
        servers[mode] = Server({"MLFLOW_TRACKING_URI": args.tracking_uri, variable: mode, "CW_API_TOKEN": "",
                                "BENTOML_HOME": os.path.join(home, mode)}, Path(home) / f"server-{mode}.log")
    try:
        for server in servers.values():
            server.wait(ready=True, timeout=180)
        info = {mode: httpx.get(server.url + "/model", timeout=10).json() for mode, server in servers.items()}
        for mode in modes:
            print(f"{variable}={mode}: {info[mode]['status']}")
        print(f"{os.cpu_count()} CPUs; {args.max_new_tokens} new tokens per request")
        for server in servers.values():  # warm-up
            load(server.url, 2, 4, args.max_new_tokens)
        results: dict[str, dict] = {}
        for level in args.levels:
            per_mode: dict[str, list[dict]] = {mode: [] for mode in modes}
            for _ in range(args.runs):
                for mode, server in servers.items():  # side by side, alternating
                    per_mode[mode].append(load(server.url, level, max(args.requests, level), args.max_new_tokens))
            for mode, runs in per_mode.items():
                results[f"{mode}@{level}"] = {k: statistics.median(r[k] for r in runs)
                                              for k in ("p50_s", "p95_s", "tokens_per_s", "requests_per_s",
                                                        "mean_tokens", "refused_p95_s")}
                results[f"{mode}@{level}"]["errors"] = sum(r["errors"] for r in runs)
                results[f"{mode}@{level}"]["refused"] = sum(r["refused"] for r in runs)
                results[f"{mode}@{level}"]["error_sample"] = next((r["error_sample"] for r in runs
                                                                   if r["error_sample"]), [])
        ttfc = {mode: first_chunk(server.url, args.stream_repeats, args.max_new_tokens)
                for mode, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    report(args, variable, modes, results, ttfc, info)
    return 0


def report(args: argparse.Namespace, variable: str, modes: tuple[str, str], results: dict, ttfc: dict,
           info: dict) -> None:
    """Prints the table, the ratios and the goals, and writes the JSON when asked."""
    print(f"\n| {variable} | concurrency | p50 latency | p95 latency | tokens/s | requests/s | errors | "
          "refused at once (503) | mean tokens |\n|---|---|---|---|---|---|---|---|---|")
    for level in args.levels:
        for mode in modes:
            r = results[f"{mode}@{level}"]
            print(f"| {mode} | {level} | {r['p50_s'] * 1000:.0f} ms | {r['p95_s'] * 1000:.0f} ms | "
                  f"{r['tokens_per_s']:.0f} | {r['requests_per_s']:.2f} | {r['errors']} | {r['refused']} | "
                  f"{r['mean_tokens']:.0f} |")
    first, second = modes
    for level in args.levels:
        a, b = results[f"{first}@{level}"], results[f"{second}@{level}"]
        print(f"concurrency {level}: {first}/{second} throughput ratio {a['tokens_per_s'] / b['tokens_per_s']:.2f}×, "
              f"p95 ratio {a['p95_s'] / b['p95_s']:.2f}×")
    print(f"first streamed chunk (concurrency 1, median of {args.stream_repeats}): "
          + " / ".join(f"{ttfc[m] * 1000:.0f} ms ({m})" for m in modes))
    one, top = results.get(f"{first}@1"), results[f"{first}@{max(args.levels)}"]
    if one:
        print(f"goals ({first}): first chunk ≤ 30 ms: {'met' if ttfc[first] <= 0.03 else 'NOT met'}; p95 ≤ 1.5 s at "
              f"concurrency 1: {'met' if one['p95_s'] <= 1.5 else 'NOT met'}; at concurrency {max(args.levels)} no "
              f"errors and p95 ≤ 10 s: {'met' if top['errors'] == 0 and top['p95_s'] <= 10 else 'NOT met'}")
    for key, r in results.items():
        if r["error_sample"]:
            print(f"  {key} error sample: {r['error_sample'][0]}")
    if args.json:
        args.json.write_text(json.dumps({"model": {m: info[m].get("provenance") for m in modes}, "results": results,
                                         "first_chunk_s": ttfc}, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
