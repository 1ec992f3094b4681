"""The monitoring report's figures: traffic, latency, errors, tokens/s, feedback per model, drift, breaches.

Plain pandas/numpy/scipy over the frames of :mod:`workspace.traffic` (the pipeline's steps only load and
save). Drift is measured with SciPy's two-sample Kolmogorov-Smirnov test (prompt lengths, which the log
always has) and total-variation distances (form and genre mix); the vocabulary's Jensen-Shannon distance
only when the serving profile stores prompt text (``traffic.store_text``), and the report says so otherwise.
Intervals are 95 %: Wilson's for a rate, Newcombe's for a difference of rates, a seeded bootstrap for medians.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from monitoring.config import Thresholds

Z = 1.959964  # the normal quantile of a two-sided 95 % interval
POSITIVE, NEGATIVE = ("up", "kept"), ("down", "edited")


def _round(value: float, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def wilson(successes: int, trials: int) -> tuple[float, float, float]:
    """A rate and its 95 % Wilson interval (``nan`` for no trials)."""
    if trials == 0:
        return math.nan, math.nan, math.nan
    p = successes / trials
    centre = (p + Z * Z / (2 * trials)) / (1 + Z * Z / trials)
    half = Z * math.sqrt(p * (1 - p) / trials + Z * Z / (4 * trials * trials)) / (1 + Z * Z / trials)
    return p, centre - half, centre + half


def newcombe(a: tuple[int, int], b: tuple[int, int]) -> tuple[float, float, float]:
    """The difference of two rates ``a - b`` (successes, trials) and its 95 % Newcombe (hybrid Wilson) interval."""
    pa, la, ua = wilson(*a)
    pb, lb, ub = wilson(*b)
    diff = pa - pb
    return diff, diff - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2), diff + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)


def bootstrap_median(values: np.ndarray, other: np.ndarray | None = None, draws: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` (or the difference of medians ``values - other``) with a 95 % bootstrap interval."""
    if len(values) == 0 or (other is not None and len(other) == 0):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    def stat(x: np.ndarray, y: np.ndarray | None) -> float:
        return float(np.median(x) - (np.median(y) if y is not None else 0.0))
    samples = [stat(rng.choice(values, len(values)), rng.choice(other, len(other)) if other is not None else None)
               for _ in range(draws)]
    return stat(values, other), float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def _served(traffic: pd.DataFrame) -> pd.DataFrame:
    return traffic[traffic["outcome"] == "ok"]


def overview(traffic: pd.DataFrame, lost: int) -> dict[str, Any]:
    """Requests, outcomes, error rate, latency and first-chunk percentiles, tokens/s, rows lost."""
    served = _served(traffic)
    latency = served["latency_ms"].to_numpy(dtype=float)
    first = served["first_chunk_ms"].dropna().to_numpy(dtype=float)
    rate = (served["tokens"] / (served["latency_ms"] / 1000)).replace([np.inf, -np.inf], np.nan).dropna()
    rate = rate[served.loc[rate.index, "tokens"] > 0]
    outcomes = {k: int(v) for k, v in traffic["outcome"].value_counts().items()}
    n = len(traffic)
    return {"requests": n, "outcomes": outcomes,
            "error_rate": _round(outcomes.get("5xx", 0) / n, 4) if n else None,
            "client_error_rate": _round(outcomes.get("4xx", 0) / n, 4) if n else None,
            "latency_p50_ms": _round(np.percentile(latency, 50), 1) if len(latency) else None,
            "latency_p95_ms": _round(np.percentile(latency, 95), 1) if len(latency) else None,
            "first_chunk_p50_ms": _round(np.percentile(first, 50), 1) if len(first) else None,
            "first_chunk_p95_ms": _round(np.percentile(first, 95), 1) if len(first) else None,
            "tokens_per_s_median": _round(float(rate.median()), 1) if len(rate) else None,
            "tokens": int(served["tokens"].sum()), "log_rows_lost": int(lost),
            "endpoints": {k: int(v) for k, v in traffic["endpoint"].value_counts().items()}}


def timeline(traffic: pd.DataFrame) -> pd.DataFrame:
    """Requests, 5xx errors and served p95 latency per time bucket (5 min, 1 h or 1 day, by the span)."""
    if traffic.empty:
        return pd.DataFrame(columns=["bucket", "requests", "errors", "p95_ms"])
    span = traffic["at"].max() - traffic["at"].min()
    freq = "5min" if span <= pd.Timedelta(hours=2) else "1h" if span <= pd.Timedelta(days=2) else "1D"
    grouped = traffic.assign(bucket=traffic["at"].dt.floor(freq)).groupby("bucket")
    def p95(group: pd.DataFrame) -> float:
        served = group.loc[group["outcome"] == "ok", "latency_ms"]
        return float(np.percentile(served, 95)) if len(served) else math.nan

    out = pd.DataFrame({"requests": grouped.size(),
                        "errors": grouped["outcome"].apply(lambda o: int((o == "5xx").sum())),
                        "p95_ms": grouped.apply(p95, include_groups=False)})
    out = out.reset_index()
    out.attrs["bucket_minutes"] = {"5min": 5, "1h": 60, "1D": 1440}[freq]
    return out


def verdict_counts(feedback: pd.DataFrame) -> tuple[int, int]:
    """(positive, all) verdicts: up and kept are positive; down and edited (rewritten) are not."""
    if feedback.empty:
        return 0, 0
    return int(feedback["kind"].isin(POSITIVE).sum()), int(feedback["kind"].isin(POSITIVE + NEGATIVE).sum())


def by_model(traffic: pd.DataFrame, feedback: pd.DataFrame) -> list[dict[str, Any]]:
    """Per served model version: requests, latency and feedback, most requests first.

    Each row: the alias, requests, 5xx rate, median latency (bootstrap 95 %), verdicts and the positive rate
    (Wilson 95 %).
    """
    rows = []
    for version, requests in traffic.groupby("model_version"):
        served = _served(requests)
        verdicts = feedback[feedback["model_version"] == version] if len(feedback) else feedback
        positive, total = verdict_counts(verdicts)
        rate, low, high = wilson(positive, total)
        median, m_low, m_high = bootstrap_median(served["latency_ms"].to_numpy(dtype=float))
        rows.append({"model_version": str(version), "alias": ", ".join(sorted(set(requests["model_alias"]) - {""})),
                     "requests": len(requests), "error_rate": _round((requests["outcome"] == "5xx").mean(), 4),
                     "latency_median_ms": _round(median, 1), "latency_ci_ms": [_round(m_low, 1), _round(m_high, 1)],
                     "verdicts": total, "positive": positive, "positive_rate": _round(rate),
                     "positive_ci": [_round(low), _round(high)],
                     "kinds": {k: int(v) for k, v in verdicts["kind"].value_counts().items()} if len(verdicts) else {}})
    return sorted(rows, key=lambda r: -r["requests"])


def compare(traffic: pd.DataFrame, feedback: pd.DataFrame, models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Champion against challenger (else the two most-served versions), or None with fewer than two.

    The difference in positive rate (Newcombe 95 %) and in median latency (bootstrap 95 %), and which is
    ahead where the interval says so.
    """
    if len(models) < 2:
        return None
    champion = next((m for m in models if "champion" in m["alias"]), models[0])
    challenger = next((m for m in models if "challenger" in m["alias"] and m is not champion),
                      next(m for m in models if m is not champion))
    a, b = challenger, champion
    diff, low, high = newcombe((a["positive"], a["verdicts"]), (b["positive"], b["verdicts"]))
    lat = {m["model_version"]: _served(traffic[traffic["model_version"] == m["model_version"]])["latency_ms"]
           .to_numpy(dtype=float) for m in (a, b)}
    l_diff, l_low, l_high = bootstrap_median(lat[a["model_version"]], lat[b["model_version"]])
    if math.isfinite(low) and low > 0:
        ahead = f"v{a['model_version']} (writers prefer it: the interval is above 0)"
    elif math.isfinite(high) and high < 0:
        ahead = f"v{b['model_version']} (writers prefer it: the interval is below 0)"
    else:
        ahead = "no clear difference in feedback yet (the interval includes 0: more verdicts are needed)"
    return {"challenger": a["model_version"], "champion": b["model_version"],
            "positive_rate_diff": _round(diff), "positive_rate_diff_ci": [_round(low), _round(high)],
            "latency_median_diff_ms": _round(l_diff, 1), "latency_median_diff_ci_ms": [_round(l_low, 1),
                                                                                        _round(l_high, 1)],
            "ahead": ahead}


def _mix(values: pd.Series) -> dict[str, float]:
    counts = values.fillna("").value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.items()}


def total_variation(a: dict[str, float], b: dict[str, float]) -> float:
    """Half the L1 distance between two distributions over labels (0 the same, 1 disjoint)."""
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def _words(texts: pd.Series) -> Counter[str]:
    counter: Counter[str] = Counter()
    for text in texts.dropna():
        counter.update(re.findall(r"[a-z']+", str(text).lower()))
    return counter


def drift(traffic: pd.DataFrame, reference: pd.DataFrame) -> dict[str, Any]:
    """Served prompts against the reference prompts (``prompt, form, genre``: training and evaluation)."""
    served = traffic[traffic["outcome"] != "4xx"]
    if served.empty or reference.empty:
        return {"measured": False, "reason": "no served prompts" if served.empty else "no reference prompts"}
    ref_lengths = reference["prompt"].str.len().to_numpy()
    ks = stats.ks_2samp(served["prompt_chars"].to_numpy(), ref_lengths)
    out: dict[str, Any] = {
        "measured": True, "reference_prompts": len(reference),
        "length_ks": _round(ks.statistic), "length_p": _round(ks.pvalue, 4),
        "served_length_median": _round(float(served["prompt_chars"].median()), 1),
        "reference_length_median": _round(float(np.median(ref_lengths)), 1),
        "form_shift": _round(total_variation(_mix(served["form"]), _mix(reference["form"]))),
        "genre_shift": _round(total_variation(_mix(served["genre"]), _mix(reference["genre"]))),
        "served_forms": {k: _round(v) for k, v in _mix(served["form"]).items()},
        "reference_forms": {k: _round(v) for k, v in _mix(reference["form"]).items()}}
    texts = served["prompt_text"].dropna() if "prompt_text" in served else pd.Series(dtype=str)
    if len(texts):
        served_words, ref_words = _words(texts), _words(reference["prompt"])
        vocabulary = sorted(set(served_words) | set(ref_words))
        p = np.array([served_words[w] for w in vocabulary], dtype=float)
        q = np.array([ref_words[w] for w in vocabulary], dtype=float)
        out["vocabulary_js"] = _round(float(jensenshannon(p / p.sum(), q / q.sum(), base=2)))
        out["vocabulary_prompts"] = len(texts)
    else:
        out["vocabulary_js"] = None
        out["vocabulary_note"] = ("not measured: prompt text is not stored (set traffic.store_text: true in the "
                                  "serving profile to measure the vocabulary's drift)")
    return out


def breaches(summary: dict[str, Any], limits: Thresholds) -> list[str]:
    """What is over its threshold, one sentence each (none below ``min_requests`` requests)."""
    view, moved = summary["overview"], summary["drift"]
    if view["requests"] < limits.min_requests:
        return []
    found = []
    if view["latency_p95_ms"] is not None and view["latency_p95_ms"] > limits.max_p95_ms:
        found.append(f"p95 latency {view['latency_p95_ms']:.0f} ms is over thresholds.max_p95_ms "
                     f"{limits.max_p95_ms:.0f}")
    if view["error_rate"] is not None and view["error_rate"] > limits.max_error_rate:
        found.append(f"error rate {view['error_rate']:.1%} (5xx) is over thresholds.max_error_rate "
                     f"{limits.max_error_rate:.1%}")
    if moved.get("measured") and moved["length_ks"] > limits.max_length_drift:
        found.append(f"prompt-length drift (KS {moved['length_ks']:.2f}: served median "
                     f"{moved['served_length_median']:.0f} chars vs {moved['reference_length_median']:.0f} in "
                     f"training) is over thresholds.max_length_drift {limits.max_length_drift}")
    if moved.get("measured") and moved["form_shift"] > limits.max_mix_shift:
        found.append(f"the form mix moved by {moved['form_shift']:.2f} (total variation) from training's, over "
                     f"thresholds.max_mix_shift {limits.max_mix_shift}")
    return found


def summarize(traffic: pd.DataFrame, feedback: pd.DataFrame, lost: int, reference: pd.DataFrame,
              limits: Thresholds, since: datetime | None) -> dict[str, Any]:
    """The whole report as plain data (the HTML and the MLflow metrics are made from it)."""
    models = by_model(traffic, feedback)
    positive, total = verdict_counts(feedback)
    summary: dict[str, Any] = {
        "window": {"since": since.isoformat() if since else "", "first": str(traffic["at"].min()) if len(traffic)
                   else "", "last": str(traffic["at"].max()) if len(traffic) else ""},
        "overview": overview(traffic, lost), "models": models, "comparison": compare(traffic, feedback, models),
        "feedback": {"verdicts": len(feedback), "positive": positive, "judged": total,
                     "kinds": {k: int(v) for k, v in feedback["kind"].value_counts().items()} if len(feedback) else {},
                     "writers": int(feedback["writer"].nunique()) if len(feedback) else 0},
        "drift": drift(traffic, reference), "thresholds": {**limits.__dict__}}
    summary["breaches"] = breaches(summary, limits)
    summary["judged"] = summary["overview"]["requests"] >= limits.min_requests
    return summary


def metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The numbers worth a time series in MLflow (None values left out)."""
    view, moved = summary["overview"], summary["drift"]
    flat = {"requests": view["requests"], "error_rate": view["error_rate"], "latency_p50_ms": view["latency_p50_ms"],
            "latency_p95_ms": view["latency_p95_ms"], "first_chunk_p95_ms": view["first_chunk_p95_ms"],
            "tokens_per_s_median": view["tokens_per_s_median"], "log_rows_lost": view["log_rows_lost"],
            "feedback_verdicts": summary["feedback"]["verdicts"], "breaches": len(summary["breaches"]),
            "drift_length_ks": moved.get("length_ks"), "drift_form_shift": moved.get("form_shift"),
            "drift_vocabulary_js": moved.get("vocabulary_js")}
    for model in summary["models"]:
        flat[f"v{model['model_version']}.positive_rate"] = model["positive_rate"]
        flat[f"v{model['model_version']}.latency_median_ms"] = model["latency_median_ms"]
    return {k: float(v) for k, v in flat.items() if v is not None}
