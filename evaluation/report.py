"""The evaluation report: one HTML page that says which model won, why, and what each one writes."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from corpus.report import STYLE, _png, _table

BARS = (("ppl_word", "per-word perplexity (lower is better)"), ("ranking_acc", "prompt-ranking accuracy"),
        ("distinct2", "distinct-2"), ("self_bleu4", "self-BLEU-4 (lower = more diverse)"),
        ("repetition", "repeated 4-grams"), ("bleu4", "BLEU-4 vs reference"), ("tokens_per_s", "tokens/s"))
SHOWN = ["rank", "candidate", "passed", "ppl_word", "ranking_acc", "distinct1", "distinct2", "self_bleu4",
         "repetition", "bleu4", "mean_words", "complete_share", "tokens_per_s", "parameters", "disk_mb"]


def metric_bars(metrics: pd.DataFrame) -> str:
    """One small bar chart per metric, candidates side by side, gate failures in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(BARS) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    colours = ["#3f8efc" if ok else "#b0b7c3" for ok in metrics["passed"]]
    for ax in axes.flat[len(BARS):]:
        ax.axis("off")
    for ax, (column, title) in zip(axes.flat, BARS, strict=False):
        ax.bar(metrics["candidate"], metrics[column], color=colours)
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return _png(fig)


def _gates(metrics: pd.DataFrame) -> pd.DataFrame:
    view = metrics[["candidate"] + [c for c in metrics.columns if c.startswith("gate_")] + ["passed"]].copy()
    for column in view.columns[1:]:
        view[column] = view[column].map(lambda ok: "pass" if ok else "FAIL")
    return view


def build_report(metrics: pd.DataFrame, samples: pd.DataFrame, selection: dict[str, Any],
                 decision: dict[str, Any], champion_samples: list[str] | None = None) -> str:
    """The evaluation report as a complete HTML document.

    Args:
        metrics: The gated metrics frame (one row per candidate).
        samples: ``prompt, form, genre, reference`` plus one column per candidate.
        selection: ``winner``, ``why`` and ``rule`` (the rule in words).
        decision: The promotion decision (``promoted``, ``reason``, versions).
        champion_samples: The previous champion's samples for the same prompts, if there was one.
    """
    shown = metrics[[c for c in SHOWN if c in metrics.columns]].sort_values("rank", na_position="last").round(4)
    verdict = decision.get("reason", "")
    headline = (f"<b>{html.escape(str(decision.get('winner')))}</b> is the new champion"
                if decision.get("promoted") else "The champion did not change")
    candidates = [c for c in metrics["candidate"]]
    pairs = []
    for i, row in samples.reset_index(drop=True).iterrows():
        cells = [f"<div class='pair'><div class='muted'>{html.escape(c)}</div><pre>{html.escape(str(row[c]))}</pre>"
                 f"</div>" for c in candidates]
        if champion_samples:
            before = decision.get("champion_before")
            cells.append(f"<div class='pair'><div class='muted'>champion before this run (v{before})</div>"
                         f"<pre>{html.escape(champion_samples[i])}</pre></div>")
        cells.append(f"<div class='pair'><div class='muted'>reference</div><pre>{html.escape(row['reference'])}"
                     f"</pre></div>")
        tags = f"<span class='tag'>{html.escape(row['form'])}</span>" + (
            f"<span class='tag'>{html.escape(row['genre'])}</span>" if row["genre"] else "")
        pairs.append(f"<h3 style='font-size:14px'>{tags}{html.escape(row['prompt'])}</h3>"
                     f"<div class='grid' style='display:grid;grid-template-columns:repeat({len(cells)},1fr);gap:8px'>"
                     f"{''.join(cells)}</div>")
    also = "; and the champion before this run" if champion_samples else ""
    versions = ", ".join(f"{k} v{v}" for k, v in (decision.get("versions") or {}).items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Evaluation</title>{STYLE}</head><body>
<h1>Evaluation and promotion</h1>
<p style="font-size:16px">{headline}. {html.escape(verdict)}</p>
<div class="muted">registry versions of this run: {html.escape(versions) or "none"} ·
champion before: {html.escape(str(decision.get("champion_before") or "none"))} ·
champion after: {html.escape(str(decision.get("champion_after") or "none"))}</div>
<h2>Selection rule</h2><p>{html.escape(selection.get("rule", ""))}</p>
<p>Selection: {html.escape(selection.get("why", ""))}</p>
<h2>Metrics</h2><div style="overflow-x:auto">{_table(shown)}</div>
<h2>Gates</h2>{_table(_gates(metrics))}
<h2>Charts</h2><div class="muted">grey bars: the candidate failed a gate</div>{metric_bars(metrics)}
<h2>Samples for the same prompts</h2>
<div class="muted">every candidate with the same settings and seed{also}</div>
{''.join(pairs)}
</body></html>"""
