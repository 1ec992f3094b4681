"""The monitoring report: its intervals, drift and comparison checked on cases whose answer is known."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.analysis import compare, drift, newcombe, summarize, timeline, wilson
from monitoring.config import Thresholds, parse_since
from workspace.traffic import FEEDBACK, REQUEST_LOG

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = pd.DataFrame({"prompt": [f"A fox finds key number {i} in the garden." for i in range(200)],
                          "form": ["story", "fable"] * 100, "genre": [""] * 200})


def traffic(n: int, version: str = "7", alias: str = "champion", chars: int = 40, form: str = "story",
            latency: float = 1500.0, outcome: str = "ok", start: datetime | None = None) -> pd.DataFrame:
    start = start or datetime(2026, 12, 6, 12, tzinfo=UTC)
    rows = [{"id": f"{version}{i:031d}", "at": start + timedelta(seconds=10 * i), "endpoint": "generate",
             "outcome": outcome, "status": 200, "model_version": version, "model_alias": alias, "runtime": "llama.cpp",
             "form": form if i % 2 else "fable", "genre": "", "settings": {}, "prompt_chars": chars,
             "output_chars": 300, "drafts": 1, "tokens": 60, "latency_ms": latency + i, "first_chunk_ms": None,
             "story_id": None, "error": None, "prompt_text": None} for i in range(n)]
    frame = pd.DataFrame(rows, columns=[c.name for c in REQUEST_LOG.columns if c.name != "output_text"])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


def verdicts(version: str, up: int, down: int) -> pd.DataFrame:
    rows = [{"request_id": f"{version}{i:031d}", "kind": "up" if i < up else "down", "writer": "ada",
             "model_version": version} for i in range(up + down)]
    return pd.DataFrame(rows, columns=[*(c.name for c in FEEDBACK.columns), "model_version"])


def test_wilson_and_newcombe_match_their_textbook_values():
    rate, low, high = wilson(5, 10)
    assert (rate, round(low, 4), round(high, 4)) == (0.5, 0.2366, 0.7634)
    assert np.isnan(wilson(0, 0)[0])
    diff, low, high = newcombe((40, 50), (10, 50))
    assert diff == pytest.approx(0.6) and 0.4 < low < diff < high < 0.8
    _, low, high = newcombe((5, 10), (5, 10))
    assert low < 0 < high


def test_drift_is_zero_on_the_reference_and_large_on_longer_prompts_of_one_form():
    same = traffic(200, chars=0)
    same["prompt_chars"] = REFERENCE["prompt"].str.len().to_numpy()
    assert drift(same, REFERENCE)["length_ks"] == 0.0 and drift(same, REFERENCE)["form_shift"] == 0.0
    moved = traffic(200, chars=400, form="poem")
    moved["form"] = "poem"
    found = drift(moved, REFERENCE)
    assert found["length_ks"] == 1.0 and found["form_shift"] == 1.0
    assert "not stored" in found["vocabulary_note"]
    moved["prompt_text"] = "The sea and the moon and a poem about the tide."
    assert drift(moved, REFERENCE)["vocabulary_js"] > drift(
        same.assign(prompt_text=REFERENCE["prompt"].to_numpy()), REFERENCE)["vocabulary_js"]


def test_the_comparison_names_the_version_writers_prefer_only_when_the_interval_says_so():
    served = pd.concat([traffic(50, "7", "champion"), traffic(50, "8", "challenger")], ignore_index=True)
    from monitoring.analysis import by_model

    clear = pd.concat([verdicts("7", 10, 40), verdicts("8", 40, 10)], ignore_index=True)
    result = compare(served, clear, by_model(served, clear))
    assert result["challenger"] == "8" and result["ahead"].startswith("v8") and result["positive_rate_diff"] == 0.6
    even = pd.concat([verdicts("7", 5, 5), verdicts("8", 5, 5)], ignore_index=True)
    assert "no clear difference" in compare(served, even, by_model(served, even))["ahead"]
    assert compare(traffic(5), even, by_model(traffic(5), even)) is None


def test_breaches_are_named_and_judged_only_with_enough_requests():
    slow = pd.concat([traffic(30, latency=90_000), traffic(10, outcome="5xx")], ignore_index=True)
    summary = summarize(slow, verdicts("7", 1, 1), 3, REFERENCE, Thresholds(), None)
    said = " ".join(summary["breaches"])
    assert "p95 latency" in said and "error rate 25.0%" in said and summary["overview"]["log_rows_lost"] == 3
    assert summarize(slow.head(5), verdicts("7", 1, 1), 0, REFERENCE, Thresholds(), None)["breaches"] == []
    empty = summarize(traffic(0), verdicts("7", 0, 0), 0, REFERENCE, Thresholds(), None)
    assert empty["overview"]["requests"] == 0 and empty["drift"] == {"measured": False, "reason": "no served prompts"}
    assert timeline(slow)["requests"].sum() == 40 and timeline(slow).attrs["bucket_minutes"] == 5


def test_the_window_is_read_as_a_writer_would_write_it():
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert parse_since("24h", now) == now - timedelta(hours=24) and parse_since("2w", now) == now - timedelta(days=14)
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC) and parse_since("", now) is None
    with pytest.raises(ValueError, match="'3 days'"):
        parse_since("3 days", now)


@pytest.mark.parametrize(("args", "said"), [
    (["--pipeline", "monitoring", "--since", "3 days"], "--since '3 days': use 30m, 24h"),
    (["--pipeline", "training", "--since", "24h"], "--since is for --pipeline monitoring"),
])
def test_run_refuses_a_bad_window_before_anything_runs(args, said):
    result = subprocess.run([sys.executable, "run.py", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and said in result.stderr
