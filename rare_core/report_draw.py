"""How ``report.html``'s charts are drawn: bars and histograms on a matplotlib figure, as an inline PNG.

In: a chart's ``draw(fig)`` (:class:`rare_core.report_charts.Chart`) and its size. Out:
:func:`png` -> the figure as base64 PNG text. Drawn with matplotlib's Agg canvas (no pyplot, so
the process's backend is left alone), imported on the first call only (:func:`matplotlib_classes`;
None without matplotlib), so ``import rare_core`` stays light.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Callable, Sequence

import numpy as np

MAX_LABEL = 40  # characters of a bar's label
BAR = "#3b6ea5"
ALT_BAR = "#c0504d"
THIRD_BAR = "#6a9a48"


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def bars(ax: Any, labels: Sequence[str], counts: Sequence[int], colors: Sequence[str] | str = BAR,
         horizontal: bool = False) -> None:
    """Bars of rows per label, vertical, or ``horizontal`` with each count written beside its bar."""
    from matplotlib.ticker import MaxNLocator

    pos = np.arange(len(labels))
    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    if horizontal:
        ax.barh(pos, counts, color=colors)
        ax.set_yticks(pos, [_short(x) for x in labels])
        ax.invert_yaxis()
        ax.set_xlabel("rows")
        for p, c in zip(pos, counts):
            ax.annotate(f"{int(c):,}", (c, p), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    else:
        ax.bar(pos, counts, color=colors)
        rotate = len(labels) > 12 or max((len(x) for x in labels), default=0) > 6
        ax.set_xticks(pos, labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylabel("rows")
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    ax.set_axisbelow(True)


def hist(ax: Any, edges: np.ndarray, counts: np.ndarray, xlabel: str, ylabel: str, integer: bool = False) -> None:
    """A histogram from its bins. ``integer``: bins of width 1 on integer values, drawn centred
    on their value, with integer ticks and at least 10 units of axis."""
    if integer and len(edges) > 1 and np.all(np.diff(edges) == 1):
        edges = edges - 0.5
        span = edges[-1] - edges[0]
        if span < 10:
            pad = (10 - span) / 2
            ax.set_xlim(edges[0] - pad, edges[-1] + pad)
    from matplotlib.ticker import MaxNLocator

    if integer:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.stairs(counts, edges, fill=True, color=BAR, alpha=0.9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def png(draw: Callable[[Any], None], size: tuple[float, float], figure_cls: Any, canvas_cls: Any) -> str:
    """``draw(fig)`` on a figure of ``size`` inches at 100 dpi, as base64 PNG text."""
    fig = figure_cls(figsize=size, dpi=100, layout="constrained")
    canvas_cls(fig)
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def matplotlib_classes() -> tuple[Any, Any] | None:
    """(Figure, FigureCanvasAgg), or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg

