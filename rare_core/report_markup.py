"""The markup of ``report.html``: escaped text, the report's inline markdown, figures and tables.

In: values (text, numbers, rows of cells). Out: HTML fragments in which every text is escaped
(:func:`escape`), except cells wrapped in :class:`Raw` (markup already escaped). Used by the page
(:mod:`rare_core.report_html`) and its charts (:mod:`rare_core.report_charts`).
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Sequence

import numpy as np


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def inline_md(text: str) -> str:
    """Escape ``text``, then render its ``**bold**`` and ```code``` (the report's markdown)."""
    out = escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def count(value: Any) -> str:
    """A table cell's number: integers (and integral floats) with thousands separators."""
    if isinstance(value, bool) or value is None:
        return escape("-" if value is None else value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return escape(value)


def figure(value: float, digits: int = 1) -> str:
    """A figure for a caption: integers as such, else ``digits`` decimals (trailing zeros cut)."""
    if value is None or not math.isfinite(float(value)):
        return "-"
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


class Raw:
    """Markup already escaped (a table cell that must not be escaped again)."""

    def __init__(self, markup: str):
        self.html = markup


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None,
          total: Sequence[Any] | None = None) -> str:
    """An HTML table; cells are escaped unless they are :class:`Raw`, ``numeric`` ones right-aligned."""
    numeric = list(numeric or [False] * len(head))

    def cell(tag: str, value: Any, i: int) -> str:
        cls = ' class="n"' if numeric[i] else ""
        text = value.html if isinstance(value, Raw) else (count(value) if numeric[i] else escape(value))
        return f"<{tag}{cls}>{text}</{tag}>"

    out = ["<table>"]
    if any(head):
        out.append("<thead><tr>" + "".join(cell("th", h, i) for i, h in enumerate(head)) + "</tr></thead>")
    out.append("<tbody>")
    out += ["<tr>" + "".join(cell("td", v, i) for i, v in enumerate(r)) + "</tr>" for r in rows]
    if total is not None:
        out.append('<tr class="total">' + "".join(cell("td", v, i) for i, v in enumerate(total)) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)
