"""Pieces every HTML report of the project shares: the stylesheet, tables and embedded charts.

The data, evaluation and batch-inference reports use them; the pages are self-contained (no external assets).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import pandas as pd

STYLE = """
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933;max-width:1100px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #e4e7eb;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{padding:4px 10px;border-bottom:1px solid #eef0f2;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f5f7fa}
.bar{display:inline-block;height:10px;background:#e66a6a;vertical-align:middle}
.muted{color:#7b8794;font-size:12px} .grid{display:flex;flex-wrap:wrap;gap:24px}
.pair{border:1px solid #e4e7eb;border-radius:6px;padding:10px 14px;margin:10px 0}
.pair .prompt{font-weight:600;margin-bottom:6px} .pair pre{white-space:pre-wrap;font-family:Georgia,serif;font-size:13px;margin:0}
.tag{display:inline-block;background:#eef2ff;color:#3949ab;border-radius:4px;padding:0 6px;font-size:11px;margin-right:4px}
</style>
"""



def table_html(frame: pd.DataFrame) -> str:
    """A DataFrame as an HTML table (escaped, without the index)."""
    return frame.to_html(index=False, border=0, escape=True)


def png_img(fig: Any) -> str:
    """A matplotlib figure as an inline ``<img>`` (PNG, base64); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'
