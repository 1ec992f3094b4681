"""The evaluation report: one HTML page that says which model won, why, and what each one writes."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from corpus.html_parts import STYLE, png_img, table_html

BARS = (("ppl_word", "per-word perplexity (lower is better)"), ("ranking_acc", "prompt-ranking accuracy"),
        ("distinct2", "distinct-2"), ("self_bleu4", "self-BLEU-4 (lower = more diverse)"),
        ("repetition", "repeated 4-grams"), ("bleu4", "BLEU-4 vs reference"), ("tokens_per_s", "tokens/s"),
        ("open_use", "open prompts: uses its prompt"), ("open_coverage", "open prompts: coverage"),
        ("open_complete", "open prompts: complete ending"), ("story_quality", "story quality (0…1)"),
        ("score", "rule score (lower is better)"))
SHOWN = ["rank", "candidate", "passed", "score", "story_quality", "ppl_word", "ranking_acc", "open_quality",
         "distinct1", "distinct2", "self_bleu4", "repetition", "bleu4", "mean_words", "complete_share", "tokens_per_s",
         "parameters", "disk_mb"]
OPEN_SHOWN = ["candidate", "open_use", "open_coverage", "open_form", "open_complete", "open_repetition",
              "open_distinct2", "open_words", "open_fluency_ppl", "open_quality", "open_seconds"]


def prompt_grid(row: Any, cells: list[str]) -> str:
    """One prompt (with its form and genre tags) and its pieces side by side."""
    tags = f"<span class='tag'>{html.escape(row['form'])}</span>" + (
        f"<span class='tag'>{html.escape(row['genre'])}</span>" if row["genre"] else "")
    return (f"<h3 style='font-size:14px'>{tags}{html.escape(row['prompt'])}</h3>"
            f"<div class='grid' style='display:grid;grid-template-columns:repeat({len(cells)},1fr);gap:8px'>"
            f"{''.join(cells)}</div>")


def highlight(text: str, matched: str) -> str:
    """HTML of ``text`` with the words whose lemma is among ``matched`` (comma-separated) marked."""
    from evaluation.writing import _nlp

    wanted = {w.strip() for w in matched.split(",") if w.strip()}
    if not wanted:
        return html.escape(text)
    out = []
    for token in _nlp()(text):
        word = html.escape(token.text)
        out.append((f"<mark>{word}</mark>" if token.lemma_.lower() in wanted else word) + token.whitespace_)
    return "".join(out)


def real_table(real_metrics: pd.DataFrame) -> pd.DataFrame:
    """Candidates as rows, and per real test set its per-word perplexity and prompt-ranking accuracy."""
    wide = real_metrics.pivot(index="candidate", columns="test_set", values=["ppl_word", "ranking_acc"])
    wide.columns = [f"{name}: {'per-word ppl' if kind == 'ppl_word' else 'ranking'}" for kind, name in wide.columns]
    order = [f"{name}: {kind}" for name in dict.fromkeys(real_metrics["test_set"])
             for kind in ("per-word ppl", "ranking")]
    candidates = list(dict.fromkeys(real_metrics["candidate"]))
    shown = wide.loc[candidates, order].astype(object)
    for column in order:  # perplexities of models trained on templates reach 1e11: one readable format each
        fmt = (lambda v: f"{v:,.1f}" if v < 1e6 else f"{v:.2e}") if column.endswith("ppl") else "{:.0%}".format
        shown[column] = [fmt(float(v)) if pd.notna(v) else "–" for v in shown[column]]
    return shown.reset_index()


def real_section(real_metrics: pd.DataFrame | None, selection: dict[str, Any]) -> str:
    """The real-test table, each set's size and fingerprint, and the held-out check (empty without real tests)."""
    if real_metrics is None or real_metrics.empty:
        return ""
    sets = selection.get("real_tests") or {}
    chance = float(real_metrics["chance"].iloc[0])
    lines = "".join(f"<li><code>{html.escape(name)}</code>: {info['pieces']} pieces after cleaning, fingerprint "
                    f"<code>{html.escape(info['fingerprint'])}</code>; shares no piece with the training split "
                    f"(<code>{html.escape(str(selection.get('data_fingerprint', '')))}</code>) or validation "
                    "split</li>" for name, info in sets.items())
    first = real_metrics.iloc[0]
    return (f"<h2>Real test sets</h2><p>Held-out text no template wrote, cleaned by the training data's rules. Per "
            f"set the same seeded {int(first['pieces'])} pieces (or all, if fewer) for every candidate: per-word "
            f"perplexity, and prompt ranking on {int(first['ranking_trials'])} of them against other prompts of the "
            f"same set (chance {chance:.0%}). Shown, not gated on.</p><div style='overflow-x:auto'>"
            f"{table_html(real_table(real_metrics))}</div><ul class='muted'>{lines}</ul>")


def _quality_note(row: Any, candidate: str) -> str:
    value = row.get(f"{candidate}_quality")
    return f" · story quality {float(value):.2f}" if isinstance(value, int | float) and value == value else ""


def open_section(metrics: pd.DataFrame, open_samples: pd.DataFrame, selection: dict[str, Any],
                 champion_open: list[str] | None, champion_before: str | None) -> str:
    """The open-prompt table and, per prompt, every candidate's piece with its prompt's words marked."""
    if open_samples is None or open_samples.empty:
        return ""
    from evaluation.writing import adherence

    shown = metrics[[c for c in OPEN_SHOWN if c in metrics.columns]].round(3)
    reference = selection.get("reference_model") or {}
    judge = (f"Fluency: per-word perplexity of the pieces under the reference model "
             f"<code>{html.escape(str(reference.get('spec', '')))}</code> (licence "
             f"{html.escape(str(reference.get('license', '') or 'not stated'))}), fixed across runs and not a "
             "candidate. Lower reads more like ordinary English to that model; it also rewards bland and "
             "repetitive text, so it is shown, never gated on." if reference else "Fluency: no reference model set.")
    candidates = list(metrics["candidate"])
    blocks = []
    for i, row in open_samples.reset_index(drop=True).iterrows():
        cells = [f"<div class='pair'><div class='muted'>{html.escape(c)}{_quality_note(row, c)} · uses "
                 f"{html.escape(row.get(f'{c}_matched', '') or 'none of its words')}</div>"
                 f"<pre>{highlight(str(row[c]), str(row.get(f'{c}_matched', '')))}</pre></div>" for c in candidates]
        if champion_open and i < len(champion_open):
            _, used = adherence(row["prompt"], champion_open[i])
            cells.append(f"<div class='pair'><div class='muted'>champion before this run (v{champion_before}) · uses "
                         f"{html.escape(', '.join(used) or 'none of its words')}</div>"
                         f"<pre>{highlight(champion_open[i], ', '.join(used))}</pre></div>")
        blocks.append(prompt_grid(row, cells))
    sizes = selection.get("sizes") or {}
    size_line = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sizes.items())
    return (f"<h2>Open prompts</h2><p>One sample per prompt the project wrote itself (none of its people, places "
            f"or objects appear in any training source), same settings and seed for every candidate. Sizes: "
            f"{html.escape(size_line)}.</p><div style='overflow-x:auto'>{table_html(shown)}</div><p class='muted'>"
            f"{judge}</p><h2>Open-prompt samples</h2><div class='muted'>marked: the prompt's content words the "
            f"piece uses</div>{''.join(blocks)}")


def quality_section(metrics: pd.DataFrame, check: pd.DataFrame | None, selection: dict[str, Any]) -> str:
    """Each story-quality measure's check, the candidates' scores on them, and each against the untuned base."""
    if check is None or check.empty:
        return ("<h2>Story quality</h2><p>No measure was checked (the suite's <code>check_pairs</code> is 0 or it "
                "names no reference model): the rule ranks by word-overlap quality.</p>")
    view = check[[c for c in ("measure", "perturbation", "pairs", "accuracy", "trusted", "why") if c in check]].copy()
    view["accuracy"] = view["accuracy"].round(3)
    columns = ["candidate", "story_quality"] + [c for c in metrics.columns if c.startswith("q_")]
    scores = metrics[[c for c in columns if c in metrics]].round(3)
    quality = selection.get("quality") or {}
    rows = [{"candidate": name, "mean difference": round(b["mean_diff"], 4), "95 % low": round(b["low"], 4),
             "95 % high": round(b["high"], 4), "P(better than base)": round(b["p_better"], 3), "prompts": b["pairs"]}
            for name, b in (quality.get("versus_base") or {}).items()]
    versus = (f"<h3>Against the untuned base</h3><p>Per open prompt, the candidate's story quality minus the untuned "
              f"base's on the same prompt and seed; 95 % interval from a paired bootstrap over prompts (2,000 "
              f"resamples).</p>{table_html(pd.DataFrame(rows))}" if rows else
              "<p class='muted'>No untuned base was scored in this run.</p>")
    trusted = ", ".join(quality.get("trusted") or []) or "none"
    return (f"<h2>Story quality</h2><p>Measures a reader would recognise (<code>evaluation/quality.py</code>), each "
            f"first checked on pairs whose order is known: a real test piece against the same piece made worse in "
            f"one way. A measure that orders fewer than {float(quality.get('min_accuracy', 0.8)):.0%} of its pairs "
            f"right is reported, not scored. Trusted: {html.escape(trusted)}.</p>{table_html(view)}"
            f"<h3>Candidates</h3><p class='muted'>q_*: mean raw score per measure (higher is better); story quality: "
            f"the mean of the trusted measures on 0…1. A candidate that fails a gate cannot win, so its likelihood "
            f"measures are not scored (blank).</p><div style='overflow-x:auto'>{table_html(scores)}</div>"
            f"{versus}")


def metric_bars(metrics: pd.DataFrame) -> str:
    """One small bar chart per metric, candidates side by side, gate failures in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(c, t) for c, t in BARS if c in metrics and metrics[c].notna().any()]
    cols = 4
    rows = -(-len(bars) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows), squeeze=False)
    colours = ["#3f8efc" if ok else "#b0b7c3" for ok in metrics["passed"]]
    for ax in axes.flat[len(bars):]:
        ax.axis("off")
    for ax, (column, title) in zip(axes.flat, bars, strict=False):
        ax.bar(metrics["candidate"], metrics[column], color=colours)
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return png_img(fig)


def _gates(metrics: pd.DataFrame) -> pd.DataFrame:
    view = metrics[["candidate"] + [c for c in metrics.columns if c.startswith("gate_")] + ["passed"]].copy()
    for column in view.columns[1:]:
        view[column] = view[column].map(lambda ok: "pass" if ok else "FAIL")
    return view


def build_report(metrics: pd.DataFrame, samples: pd.DataFrame, selection: dict[str, Any],
                 decision: dict[str, Any], champion_samples: list[str] | None = None,
                 open_samples: pd.DataFrame | None = None, champion_open: list[str] | None = None,
                 real_metrics: pd.DataFrame | None = None, measure_check: pd.DataFrame | None = None) -> str:
    """The evaluation report as a complete HTML document.

    Args:
        metrics: The gated metrics frame (one row per candidate).
        samples: ``prompt, form, genre, reference`` plus one column per candidate.
        selection: ``winner``, ``why`` and ``rule`` (the rule in words), reference model, sizes.
        decision: The promotion decision (``promoted``, ``reason``, versions).
        champion_samples: The previous champion's samples for the same prompts, if there was one.
        open_samples: The open-prompt samples (``id, form, genre, prompt`` + per candidate text and matches).
        champion_open: The previous champion's open-prompt samples, if there was one.
        real_metrics: One row per candidate and real test set (``evaluation.real_tests``), if any.
        measure_check: Each story-quality measure's check on known-order pairs (``evaluation.measure_check``).
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
        pairs.append(prompt_grid(row, cells))
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
<h2>Metrics</h2><div style="overflow-x:auto">{table_html(shown)}</div>
<h2>Gates</h2>{table_html(_gates(metrics))}
{quality_section(metrics, measure_check, selection)}
<h2>Charts</h2><div class="muted">grey bars: the candidate failed a gate</div>{metric_bars(metrics)}
{real_section(real_metrics, selection)}
{open_section(metrics, open_samples, selection, champion_open, decision.get("champion_before"))}
<h2>Samples for the same test prompts</h2>
<div class="muted">every candidate with the same settings and seed{also}</div>
{''.join(pairs)}
</body></html>"""
