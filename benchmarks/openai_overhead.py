"""What the OpenAI-compatible endpoints add over ``/generate`` for the same request.

Starts one local server of the champion and sends, in interleaved rounds, the same request (prompt, seed,
settings, ``--max-new-tokens``) to ``POST /generate``, ``POST /v1/completions`` and ``POST
/v1/chat/completions`` (a single user message, so the same prompt), one at a time from one client.
Reports the median latency of each and, per round, the ratio to that round's ``/generate`` (side by side,
so the machine's drift cancels out); the median of those ratios is the overhead. It also checks that the
three wrote the same text.

    python -m benchmarks.openai_overhead                   # the project's models:/creative-writer@champion
    python -m benchmarks.openai_overhead --rounds 5 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import parse_args
from benchmarks.serve_load import PROMPTS
from infra.local_server import Server
from infra.stack import tracking_uri

ENDPOINTS = ("/generate", "/v1/completions", "/v1/chat/completions")


def request_for(endpoint: str, model: str, prompt: str, form: str, genre: str, seed: int, tokens: int) -> dict:
    """The same request in each endpoint's shape."""
    if endpoint == "/generate":
        return {"prompt": prompt, "form": form, "genre": genre, "seed": seed, "max_new_tokens": tokens}
    common = {"model": model, "seed": seed, "max_tokens": tokens, "form": form, "genre": genre}
    if endpoint == "/v1/completions":
        return {**common, "prompt": prompt}
    return {**common, "messages": [{"role": "user", "content": prompt}]}


def text_of(endpoint: str, data: dict) -> str:
    """The first draft's text in each endpoint's answer."""
    if endpoint == "/generate":
        return data["drafts"][0]["text"]
    choice = data["choices"][0]
    return choice["text"] if endpoint == "/v1/completions" else choice["message"]["content"]


def run(url: str, rounds: int, tokens: int) -> dict:
    """Interleaved rounds over the three endpoints; latencies, per-round ratios and text agreement."""
    model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
    latencies: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    ratios: dict[str, list[float]] = {e: [] for e in ENDPOINTS[1:]}
    same = 0
    with httpx.Client(timeout=300) as http:
        for i in range(rounds + 1):  # round 0 warms up every path
            prompt, form, genre = PROMPTS[i % len(PROMPTS)]
            order = ENDPOINTS if i % 2 == 0 else ENDPOINTS[::-1]  # neither goes first every time
            took, texts = {}, {}
            for endpoint in order:
                started = time.perf_counter()
                response = http.post(url + endpoint, json=request_for(endpoint, model, prompt, form, genre, 100 + i,
                                                                      tokens))
                took[endpoint] = time.perf_counter() - started
                response.raise_for_status()
                texts[endpoint] = text_of(endpoint, response.json())
            if i == 0:
                continue
            same += len(set(texts.values())) == 1
            for endpoint in ENDPOINTS:
                latencies[endpoint].append(took[endpoint])
            for endpoint in ENDPOINTS[1:]:
                ratios[endpoint].append(took[endpoint] / took["/generate"])
    return {"model": model, "rounds": rounds, "max_new_tokens": tokens, "same_text_rounds": same,
            "median_ms": {e: round(statistics.median(v) * 1000, 1) for e, v in latencies.items()},
            "overhead_pct": {e: round((statistics.median(v) - 1) * 100, 2) for e, v in ratios.items()}}


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison and prints (and optionally saves) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="measured rounds (after one warm-up round)")
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[8, 64],
                        help="request sizes (a short one shows fixed costs)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri(),
                        help="the MLflow registry holding models:/creative-writer@champion")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parse_args(parser, argv, rounds=1, max_new_tokens=[4])
    home = tempfile.mkdtemp(prefix="cw-openai-bench-")
    server = Server({"MLFLOW_TRACKING_URI": args.tracking_uri, "CW_API_TOKEN": "", "BENTOML_HOME": home},
                    Path(home) / "server.log")
    results = []
    try:
        server.wait(ready=True, timeout=180)
        status = httpx.get(server.url + "/model", timeout=10).json()["status"]
        print(f"{status}; {os.cpu_count()} CPUs; {args.rounds} interleaved rounds per size, one client")
        print(f"{'tokens':>6} {'endpoint':<22} {'median ms':>10} {'overhead':>9}  same text")
        for tokens in args.max_new_tokens:
            result = run(server.url, args.rounds, tokens)
            results.append(result)
            for endpoint in ENDPOINTS:
                over = result["overhead_pct"].get(endpoint)
                shown = f"{over:+.1f} %" if over is not None else "—"
                print(f"{tokens:>6} {endpoint:<22} {result['median_ms'][endpoint]:>10.1f} {shown:>9}  "
                      f"{result['same_text_rounds']}/{args.rounds}")
    finally:
        server.stop()
    if args.json:
        summary = {"status": status, "cpus": os.cpu_count(), "results": results}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
