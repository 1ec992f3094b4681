"""The data report: one self-contained HTML page (shown in the ZenML dashboard as an HTML visualisation)."""

from __future__ import annotations

import html
import re
from collections import Counter

import pandas as pd

from corpus.html_parts import STYLE, png_img, table_html
from corpus.schema import SPLIT_COLUMN, SPLITS

WORD = re.compile(r"[a-z][a-z']+")


def length_histograms(raw: pd.DataFrame, clean: pd.DataFrame) -> str:
    """Histogram of piece lengths (words) before and after cleaning, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = raw["text"].str.split().str.len()
    after = clean["text"].str.split().str.len()
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    top = max(int(before.quantile(0.99)), int(after.max()), 10)
    bins = list(range(0, top + top // 40 + 1, max(1, top // 40)))
    ax.hist(before.clip(upper=top), bins=bins, alpha=0.5, label=f"before cleaning ({len(before)})", color="#7b8794")
    ax.hist(after, bins=bins, alpha=0.7, label=f"after cleaning ({len(after)})", color="#e66a6a")
    ax.set_xlabel("words per piece")
    ax.set_ylabel("pieces")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return png_img(fig)


def top_words(frame: pd.DataFrame, k: int = 30) -> pd.DataFrame:
    """The ``k`` most frequent non-stop-words in the pieces' text."""
    from spacy.lang.en.stop_words import STOP_WORDS

    counts: Counter[str] = Counter()
    for text in frame["text"]:
        counts.update(w for w in WORD.findall(text.lower()) if w not in STOP_WORDS)
    total = sum(counts.values()) or 1
    return pd.DataFrame(
        [{"word": w, "count": c, "per 1k words": round(1000 * c / total, 2)} for w, c in counts.most_common(k)]
    )


def _bars(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    out = frame.copy()
    peak = max(float(out[value].max()), 1.0)
    out[" "] = [f'<span class="bar" style="width:{int(160 * v / peak)}px"></span>' for v in out[value]]
    return out


def _examples(frame: pd.DataFrame, per_form: int = 2, max_chars: int = 900) -> str:
    parts = []
    for form, group in frame[frame[SPLIT_COLUMN] == "train"].groupby("form", sort=True):
        for row in group.head(per_form).itertuples(index=False):
            text = row.text if len(row.text) <= max_chars else row.text[:max_chars].rsplit(" ", 1)[0] + " …"
            tags = "".join(f'<span class="tag">{html.escape(t)}</span>' for t in (form, row.genre, row.source) if t)
            parts.append(
                f'<div class="pair">{tags}<div class="prompt">{html.escape(row.prompt)}</div>'
                f"<pre>{html.escape(text)}</pre></div>"
            )
    return "".join(parts)


def build_report(raw: pd.DataFrame, clean: pd.DataFrame, stats: pd.DataFrame, split: pd.DataFrame,
                 title: str = "Creative-writing corpus") -> str:
    """Builds the data report.

    Args:
        raw: The ingested frame.
        clean: The cleaned frame.
        stats: The cleaning stats (one row per rule, from :func:`corpus.cleaning.clean_corpus`).
        split: The cleaned frame with its ``split`` column.
        title: The page title.

    Returns:
        A complete HTML document.
    """
    sources = ", ".join(sorted(raw["source"].unique()))
    words_after = int(clean["text"].str.split().str.len().sum())
    stat_view = stats[["rule", "enabled", "rows_in", "rows_out", "removed", "changed", "seconds"]]
    rules_html = _bars(stat_view, "removed").to_html(index=False, border=0, escape=False)
    sizes = split.groupby(SPLIT_COLUMN).size().reindex(SPLITS, fill_value=0).rename("pieces").reset_index()
    by_form = pd.crosstab(split["form"], split[SPLIT_COLUMN]).reindex(columns=list(SPLITS), fill_value=0)
    by_genre = pd.crosstab(split["genre"].replace("", "(none)"), split[SPLIT_COLUMN]).reindex(
        columns=list(SPLITS), fill_value=0)
    by_source = pd.crosstab(split["source"], split[SPLIT_COLUMN]).reindex(columns=list(SPLITS), fill_value=0)
    words = top_words(split[split[SPLIT_COLUMN] == "train"])
    length_desc = pd.DataFrame({
        "": ["before cleaning", "after cleaning"],
        **{stat: [raw["text"].str.split().str.len().agg(stat), clean["text"].str.split().str.len().agg(stat)]
           for stat in ("min", "median", "mean", "max")},
    }).round(1)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{STYLE}</head><body>
<h1>{html.escape(title)}</h1>
<div class="muted">sources: {html.escape(sources)} · {len(raw)} pieces in → {len(clean)} out
 ({len(raw) - len(clean)} removed) · {words_after:,} words after cleaning</div>
<h2>Cleaning rules</h2>
<p class="muted">Rules run in this order; <b>removed</b> counts pieces dropped, <b>changed</b> pieces edited in place.
Seconds are wall time per rule.</p>
{rules_html}
<h2>Splits</h2>
<div class="grid"><div>{table_html(sizes)}</div>
<div><b>by form</b>{by_form.to_html(border=0)}</div>
<div><b>by genre</b>{by_genre.to_html(border=0)}</div>
<div><b>by source</b>{by_source.to_html(border=0)}</div></div>
<h2>Lengths</h2>
{length_histograms(raw, clean)}
{table_html(length_desc)}
<h2>Most frequent words (train, stop words excluded)</h2>
{_bars(words, "count").to_html(index=False, border=0, escape=False)}
<h2>Example pairs (train)</h2>
{_examples(split)}
</body></html>"""
