"""Drives real traffic with writers' feedback against a running service, on loopback only, bounded in count and time.

    python -m infra.drive_traffic --url http://127.0.0.1:3000 --requests 30 --seconds 300

Each request asks ``/generate`` for two drafts of an open prompt (every fifth goes to ``/stream``, every
tenth is a deliberately bad request, answered 400); then a verdict is sent as a writer would: the draft with
more distinct words kept over the other, a thumb up and down, or the first draft edited. It prints what it
sent and got. It refuses a host that is not this machine: it is a test driver, not a load tool.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

OPEN_PROMPTS = Path(__file__).resolve().parent.parent / "evaluation" / "data" / "open_prompts.jsonl"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _distinct(text: str) -> int:
    return len(set(text.lower().split()))


def verdict_for(i: int, prompt: dict[str, str], request_id: str, drafts: list[str]) -> list[dict[str, Any]]:
    """The feedback a writer gives on request ``i``'s drafts (kept, thumbs or edited, in turn)."""
    base = {"request_id": request_id, "prompt": prompt["prompt"], "form": prompt["form"],
            "genre": prompt.get("genre") or ""}
    ranked = sorted(range(len(drafts)), key=lambda d: -_distinct(drafts[d]))
    best, worst = ranked[0], ranked[-1]
    if i % 3 == 0 and len(drafts) > 1 and drafts[best] != drafts[worst]:
        return [{**base, "kind": "kept", "draft": best, "text": drafts[best], "others": [drafts[worst]]}]
    if i % 3 == 1 and len(drafts) > 1:
        return [{**base, "kind": "up", "draft": best, "text": drafts[best]},
                {**base, "kind": "down", "draft": worst, "text": drafts[worst]}]
    return [{**base, "kind": "edited", "draft": 0, "text": drafts[0],
             "edited": drafts[0].rstrip() + " And so the day ended, and nothing was the same again."}]


def drive(url: str, requests: int, seconds: float, token: str = "", max_new_tokens: int = 48) -> dict[str, Any]:
    """Sends up to ``requests`` requests (and their feedback) within ``seconds``; returns the counts.

    Raises:
        ValueError: If ``url`` is not on this machine.
    """
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"--url {url}: the traffic driver only talks to this machine (127.0.0.1, localhost)")
    prompts = [json.loads(line) for line in OPEN_PROMPTS.read_text().splitlines() if line.strip()]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counts: dict[str, int] = {"sent": 0, "ok": 0, "4xx": 0, "5xx": 0, "feedback": 0, "feedback_refused": 0}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120) as client:
        for i in range(requests):
            if time.monotonic() > deadline:
                break
            prompt = prompts[i % len(prompts)]
            body = {"prompt": prompt["prompt"], "form": prompt["form"], "genre": prompt.get("genre") or "",
                    "max_new_tokens": max_new_tokens, "seed": i, "num_drafts": 2,
                    "story_id": f"driven-story-{i % 8}"}  # eight stories: each stays with one model
            if i % 10 == 9:
                body["form"] = "limerick"  # a form the model does not know: 400
            counts["sent"] += 1
            if i % 5 == 4:
                answer = client.post("/stream", json={**body, "num_drafts": 1})
                drafts, request_id = [answer.text], answer.headers.get("x-request-id", "")
            else:
                answer = client.post("/generate", json=body)
                reply = answer.json() if answer.status_code == 200 else {}
                drafts, request_id = [d["text"] for d in reply.get("drafts", [])], reply.get("request_id", "")
            kind = "ok" if answer.status_code == 200 else "4xx" if answer.status_code < 500 else "5xx"
            counts[kind] += 1
            if kind != "ok" or not request_id or not all(d.strip() for d in drafts):
                continue
            for verdict in verdict_for(i, prompt, request_id, drafts):
                sent = client.post("/feedback", json=verdict)
                counts["feedback" if sent.status_code == 201 else "feedback_refused"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--token", default="", help="a writer's or the shared API token")
    args = parser.parse_args(argv)
    try:
        counts = drive(args.url, args.requests, args.seconds, args.token, args.max_new_tokens)
    except (ValueError, httpx.HTTPError) as exc:
        sys.stderr.write(f"drive_traffic: error: {exc}\n")
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
