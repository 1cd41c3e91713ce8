"""The run report as one self-contained HTML page: the report's facts and steps, and charts of
the final step file's rows.

``render_html(summary, final, title=..., token_counter=None) -> str``

* ``summary``: :attr:`rare_core.report.Report.summary` (``header``, ``steps``, ``totals``,
  ``simulated``, ``builtin_simulator``, ``dataset_rows``); a loud banner when ``simulated``
  (or when any row of ``final`` says its answers were simulated).
* ``final``: the last step's file, every row (ok and failed). Five charts, each with a one-line
  caption giving the numbers behind it and a table of its figures:

  1. the positive's BM25 rank (``positive_rank``; -1, not within the searched depth, is its own
     bar, and rows the BM25 step never searched, ``rare_hardneg_status`` skipped/failed, are
     counted apart);
  2. the negatives' score ratios (each of ``hard_negatives_scores`` / ``positive_score``);
  3. question and reasoning lengths, in tokens from ``token_counter`` (a callable text -> int,
     or an object with ``count_many(texts) -> counts`` such as
     :func:`rare_core.tokens.token_counter_for`'s) or else in whitespace-separated words;
     above ``length_sample`` texts a column is measured on a seeded random sample (the caption
     says so);
  4. samples needed per row (``rare_verify_samples``, else ``rare_distill_attempts``);
  5. outcomes: ``rare_error`` categories (the text before the first ``:``, the step) and
     ``rare_verify_verdict`` values.

  A chart whose columns are absent (or hold no value) is left out with a one-line note.

The page loads nothing: no external CSS, script or font; charts are inline base64 PNGs drawn
with matplotlib's Agg canvas (no pyplot, so the process's backend is left alone), imported on
the first call only, so ``import rare_core`` stays light. Without matplotlib the page keeps the
captions and tables and says the charts are missing. Every text is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from rare_core.report import KIND_ADVICE, SIMULATED_BANNER, SIMULATED_ENDPOINT_BANNER

__all__ = ["render_html", "LENGTH_SAMPLE"]

LENGTH_SAMPLE = 20_000  # texts measured per column at most (seeded random sample above)
RANK = "positive_rank"
POSITIVE_SCORE = "positive_score"
HARDNEG_STATUS = "rare_hardneg_status"
ERROR = "rare_error"
STATUS = "rare_status"
VERDICT = "rare_verify_verdict"
SAMPLE_COLUMNS = ("rare_verify_samples", "rare_distill_attempts")
SIMULATED_COLUMNS = ("rare_doc2query_simulated", "rare_distill_simulated", "rare_verify_simulated")
NOT_SEARCHED = ("skipped", "failed")
MAX_LABEL = 40
BAR = "#3b6ea5"
ALT_BAR = "#c0504d"
THIRD_BAR = "#6a9a48"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.3em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #d0d0d0;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:bold;background:#fafafa}
code{background:#f3f4f6;padding:0 .25em;border-radius:3px}
.banner{background:#b00020;color:#fff;font-size:1.15em;padding:1em 1.2em;border-radius:6px;
margin:1em 0;border:4px solid #7a0016}
.banner strong{font-size:1.2em;letter-spacing:.03em}
figure{margin:1.4em 0;padding:.8em;border:1px solid #e2e2e2;border-radius:6px}
figure img{max-width:100%;height:auto;display:block}
figcaption{margin-bottom:.5em}
.skipped{color:#6b6b6b;font-style:italic}
.note{color:#444}
details{margin-top:.4em}summary{cursor:pointer;color:#3b6ea5}
"""


# --- Small formatting helpers -----------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _inline_md(text: str) -> str:
    """Escape ``text``, then render its ``**bold**`` and ```code``` (the report's markdown)."""
    out = _e(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _int(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e("-" if value is None else value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return _e(value)


def _num(value: float, digits: int = 1) -> str:
    """A figure for a caption: integers as such, else ``digits`` decimals (trailing zeros cut)."""
    if value is None or not math.isfinite(float(value)):
        return "-"
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _cost(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None,
           total: Sequence[Any] | None = None) -> str:
    """An HTML table; cells are escaped unless they are :class:`_Raw`."""
    numeric = list(numeric or [False] * len(head))

    def cell(tag: str, value: Any, i: int) -> str:
        cls = ' class="n"' if numeric[i] else ""
        text = value.html if isinstance(value, _Raw) else (_int(value) if numeric[i] else _e(value))
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


class _Raw:
    """Markup already escaped (a table cell that must not be escaped again)."""

    def __init__(self, markup: str):
        self.html = markup


# --- The charts' data ---------------------------------------------------------------------------
class _Chart:
    """One chart: its caption, its figures (tables) and how to draw it."""

    def __init__(self, key: str, title: str, caption: str, tables: list[tuple[str, str]],
                 draw: Callable[[Any], None], size: tuple[float, float] = (7.5, 3.2)):
        self.key, self.title, self.caption, self.tables, self.draw, self.size = key, title, caption, tables, draw, size


class _Skip:
    def __init__(self, key: str, title: str, reason: str):
        self.key, self.title, self.reason = key, title, reason


def _missing(df: pd.DataFrame, key: str, title: str, columns: Sequence[str]) -> _Skip | None:
    absent = [c for c in columns if c not in df.columns]
    if not absent:
        return None
    names = " and ".join(f"`{c}`" for c in absent)
    return _Skip(key, title, f"the final step file has no {names} column{'s' if len(absent) > 1 else ''}")


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _bars(ax: Any, labels: Sequence[str], counts: Sequence[int], colors: Sequence[str] | str = BAR,
          horizontal: bool = False) -> None:
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


def _hist(ax: Any, edges: np.ndarray, counts: np.ndarray, xlabel: str, ylabel: str, integer: bool = False) -> None:
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


def _rank_buckets(max_rank: int) -> list[tuple[int, int]]:
    """Inclusive rank ranges: one per rank up to 10, then 11-20, 21-50, 51-100, 101-200, ..."""
    if max_rank <= 20:
        return [(r, r) for r in range(1, max_rank + 1)]
    buckets = [(r, r) for r in range(1, 11)]
    lo, steps = 11, (20, 50, 100)
    scale = 1
    while lo <= max_rank:
        for s in steps:
            hi = s * scale
            if hi >= lo:
                buckets.append((lo, hi))
                lo = hi + 1
            if lo > max_rank:
                break
        scale *= 10
    return buckets


def _rank_chart(df: pd.DataFrame) -> _Chart | _Skip:
    key, title = "rank", "The positive's BM25 rank"
    skip = _missing(df, key, title, [RANK])
    if skip:
        return skip
    rank = _numeric(df[RANK])
    searched = np.ones(len(df), dtype=bool)
    if HARDNEG_STATUS in df.columns:
        searched = ~df[HARDNEG_STATUS].isin(NOT_SEARCHED).to_numpy()
    has = ~np.isnan(rank)
    not_searched = int((~searched).sum())
    no_rank = int((searched & ~has).sum())
    rank = rank[searched & has]
    n = len(rank)
    if n == 0:
        return _Skip(key, title, f"no row has a `{RANK}` value from a BM25 search")
    found = rank[rank >= 1].astype(np.int64)
    outside = int((rank < 1).sum())
    buckets = _rank_buckets(int(found.max())) if len(found) else []
    labels = [str(lo) if lo == hi else f"{lo}–{hi}" for lo, hi in buckets]
    edges = np.array([lo for lo, _ in buckets] + [buckets[-1][1] + 1]) if buckets else np.array([1, 2])
    counts = np.histogram(found, bins=edges)[0] if buckets else np.array([], dtype=int)
    at1 = int((found == 1).sum())
    med = (f"median {_num(np.median(found))}, 90th percentile {_num(np.percentile(found, 90, method='higher'))}"
           if len(found) else "none found")
    caption = (f"Where BM25 ranked each question's own (positive) document: n = {n:,} searched rows, "
               f"{len(found):,} found within the searched depth (rank 1 for {at1:,}, {_pct(at1, n)}; {med}); "
               f"{outside:,} ({_pct(outside, n)}) not within the searched depth (rank -1), the red bar")
    if not_searched:
        caption += f"; {not_searched:,} rows not searched (failed upstream) left out"
    if no_rank:
        caption += f"; {no_rank:,} rows without a rank left out"
    all_labels = labels + ["not in depth (-1)"]
    all_counts = [int(c) for c in counts] + [outside]
    rows = [[lab, c, _pct(c, n)] for lab, c in zip(all_labels, all_counts)]
    if not_searched:
        rows.append(["not searched (failed upstream)", not_searched, "-"])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _bars(ax, all_labels, all_counts, [BAR] * len(labels) + [ALT_BAR])
        ax.set_xlabel("rank of the positive in the BM25 ranking")

    return _Chart(key, title, caption + ".", [("Rows by rank", _table(["Rank", "Rows", "Share"], rows, [False, True, True]))], draw)


def _as_list(value: Any) -> Sequence[Any]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return value
    if isinstance(value, str) and value.startswith("["):  # csv cells hold JSON text
        try:
            parsed = json.loads(value)
        except ValueError:
            return ()
        return parsed if isinstance(parsed, list) else ()
    return ()


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ratio_chart(df: pd.DataFrame, scores_col: str) -> _Chart | _Skip:
    key, title = "ratio", "How close the hard negatives score to the positive"
    skip = _missing(df, key, title, [scores_col, POSITIVE_SCORE])
    if skip:
        return skip
    lists = [_as_list(v) for v in df[scores_col].tolist()]
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    scores = np.fromiter((_float_or_nan(s) for x in lists for s in x), dtype=float, count=int(lengths.sum()))
    positive = np.repeat(_numeric(df[POSITIVE_SCORE]), lengths)
    usable = np.isfinite(scores) & np.isfinite(positive) & (positive > 0)
    ratios = scores[usable] / positive[usable]
    left_out = int(len(scores) - usable.sum())
    n = len(ratios)
    if n == 0:
        reason = f"no negative with a score and a positive with a `{POSITIVE_SCORE}` above 0"
        return _Skip(key, title, reason + (f" ({left_out:,} negatives without one)" if left_out else ""))
    row_of = np.repeat(np.arange(len(lists)), lengths)[usable]
    rows = len(np.unique(row_of))
    top = max(1.0, min(2.0, math.ceil(float(ratios.max()) * 20) / 20))
    edges = np.round(np.arange(0.0, top + 0.05 / 2, 0.05), 2)
    counts = np.histogram(np.clip(ratios, 0.0, top), bins=edges)[0]
    above = int((ratios > 1).sum())
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    caption = (f"Each hard negative's BM25 score divided by its positive's score (1 = scores as high as the "
               f"positive): n = {n:,} negatives of {rows:,} rows, median {_num(p50, 3)}, 10th–90th percentile "
               f"{_num(p10, 3)}–{_num(p90, 3)}, max {_num(float(ratios.max()), 3)}; {above:,} above 1")
    if ratios.max() > top:
        caption += f" (ratios above {_num(top)} counted in the last bin)"
    if left_out:
        caption += f"; {left_out:,} negatives left out (no score, or the positive has none)"
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]
    table = _table(["Score ratio", "Negatives", "Share"], [[lab, int(c), _pct(int(c), n)] for lab, c in zip(labels, counts)],
                   [False, True, True])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _hist(ax, edges, counts, "negative's score / positive's score", "negatives")
        ax.axvline(float(p50), color=ALT_BAR, linestyle="--", linewidth=1, label=f"median {_num(p50, 3)}")
        ax.legend(loc="upper left", fontsize=8)

    return _Chart(key, title, caption + ".", [("Negatives by score ratio", table)], draw)


def _texts(series: pd.Series) -> list[str]:
    return [v for v in series.tolist() if isinstance(v, str) and v.strip()]


def _counter_name(token_counter: Any) -> str:
    name = getattr(token_counter, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(token_counter, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else "the given token counter"


def _measure(texts: list[str], token_counter: Any) -> np.ndarray:
    if token_counter is None:
        return np.fromiter((len(t.split()) for t in texts), dtype=float, count=len(texts))
    many = getattr(token_counter, "count_many", None)
    counts = many(texts) if callable(many) else [token_counter(t) for t in texts]
    return np.asarray(list(counts), dtype=float)


def _length_edges(values: np.ndarray, bins: int = 24) -> np.ndarray:
    lo, hi = int(values.min()), int(values.max()) + 1
    width = max(1, math.ceil((hi - lo) / bins))
    return np.arange(lo, hi + width, width, dtype=float)


def _lengths_chart(df: pd.DataFrame, columns: Sequence[str], token_counter: Any, sample: int | None) -> _Chart | _Skip:
    key, title = "lengths", "Question and reasoning lengths"
    present = [c for c in columns if c in df.columns]
    if not present:
        return _missing(df, key, title, columns)  # type: ignore[return-value]
    unit = "tokens" if token_counter is not None else "words"
    how = (f"tokens counted by {_counter_name(token_counter)}" if token_counter is not None
           else "whitespace-separated words (no token counter given)")
    parts, tables, series = [], [], []
    rng = np.random.default_rng(0)
    for col in present:
        texts = _texts(df[col])
        total = len(texts)
        if total == 0:
            parts.append(f"{col}: no text")
            continue
        note = ""
        if sample is not None and total > sample:
            pick = np.sort(rng.choice(total, size=sample, replace=False))
            texts = [texts[i] for i in pick]
            note = f" (measured on a random sample of {sample:,})"
        values = _measure(texts, token_counter)
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        parts.append(f"{col} n = {total:,}{note}, median {_num(p50)}, 10th–90th percentile {_num(p10)}–{_num(p90)}, "
                     f"max {_num(values.max())}")
        edges = _length_edges(values)
        counts = np.histogram(values, bins=edges)[0]
        labels = [f"{int(lo):,}–{int(hi) - 1:,}" if hi - lo > 1 else f"{int(lo):,}" for lo, hi in zip(edges[:-1], edges[1:])]
        tables.append((f"{col}: texts by length in {unit}" + note,
                       _table([f"Length ({unit})", "Texts", "Share"],
                              [[lab, int(c), _pct(int(c), len(values))] for lab, c in zip(labels, counts)],
                              [False, True, True])))
        series.append((col, edges, counts, p50))
    absent = [c for c in columns if c not in df.columns]
    if not series:
        return _Skip(key, title, "no non-empty text in " + " or ".join(f"`{c}`" for c in present))
    caption = f"Lengths in {how}: " + "; ".join(parts)
    if absent:
        caption += "; " + ", ".join(f"`{c}`" for c in absent) + " not in the final step file"

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(series), squeeze=False)[0]
        for ax, (col, edges, counts, med) in zip(axes, series):
            _hist(ax, edges, counts, f"{col} length ({unit})", "texts", integer=True)
            ax.axvline(float(med), color=ALT_BAR, linestyle="--", linewidth=1, label=f"median {_num(med)}")
            ax.legend(loc="upper right", fontsize=8)
            ax.set_title(col, fontsize=10)

    return _Chart(key, title, caption + ".", tables, draw, size=(4.2 * len(series) + 1, 3.2))


def _samples_chart(df: pd.DataFrame) -> _Chart | _Skip:
    key, title = "samples", "Samples needed per row"
    col = next((c for c in SAMPLE_COLUMNS if c in df.columns), None)
    if col is None:
        return _Skip(key, title, "the final step file has neither `" + "` nor `".join(SAMPLE_COLUMNS) + "`")
    values = _numeric(df[col])
    values = values[np.isfinite(values) & (values >= 0)]
    n = len(values)
    if n == 0:
        return _Skip(key, title, f"`{col}` holds no value")
    ints = np.rint(values).astype(np.int64)
    what = "teacher samples until one was verified" if col == SAMPLE_COLUMNS[0] else "teacher requests (re-asks included)"
    top = int(ints.max())
    if top <= 64:
        uniq = np.arange(min(int(ints.min()), 1), top + 1)
        counts = np.bincount(ints - uniq[0], minlength=len(uniq))
        labels = [str(v) for v in uniq]
    else:
        edges = _length_edges(ints.astype(float), bins=20)
        counts = np.histogram(ints, bins=edges)[0]
        labels = [f"{int(lo)}–{int(hi) - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    first = int((ints == 1).sum())
    caption = (f"{what[0].upper() + what[1:]} per row (`{col}`): n = {n:,} rows, median {_num(np.median(ints))}, "
               f"mean {_num(ints.mean(), 2)}, max {top:,}; 1 for {first:,} rows ({_pct(first, n)})")
    if n < len(df):
        caption += f"; {len(df) - n:,} rows without a value left out"
    table = _table(["Samples" if col == SAMPLE_COLUMNS[0] else "Requests", "Rows", "Share"],
                   [[lab, int(c), _pct(int(c), n)] for lab, c in zip(labels, counts)], [False, True, True])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _bars(ax, labels, [int(c) for c in counts])
        ax.set_xlabel(col)

    return _Chart(key, title, caption + ".", [(f"Rows by `{col}`", table)], draw)


def _category(error: str) -> str:
    head = error.split(":", 1)[0].strip()
    return head or "(no step named)"


def _outcomes_chart(df: pd.DataFrame) -> _Chart | _Skip:
    key, title = "outcomes", "Verification and filter outcomes"
    if ERROR not in df.columns and VERDICT not in df.columns:
        return _Skip(key, title, f"the final step file has neither `{ERROR}` nor `{VERDICT}`")
    n_rows = len(df)
    rows: list[list[Any]] = []
    labels: list[str] = []
    counts: list[int] = []
    colors: list[str] = []
    parts: list[str] = []
    if ERROR in df.columns:
        errors = df[ERROR].value_counts(dropna=True)  # on the distinct messages: fast on 100k rows
        by_cat: dict[str, int] = {}
        for message, c in errors.items():
            if isinstance(message, str) and message.strip():
                cat = _category(message)
                by_cat[cat] = by_cat.get(cat, 0) + int(c)
        failed = sum(by_cat.values())
        clean = n_rows - failed
        ordered = sorted(by_cat.items(), key=lambda kv: (-kv[1], kv[0]))
        labels += ["no error"] + [f"error: {cat}" for cat, _ in ordered]
        counts += [clean] + [c for _, c in ordered]
        colors += [THIRD_BAR] + [ALT_BAR] * len(ordered)
        rows += [["row", "no error", clean, _pct(clean, n_rows)]]
        rows += [["error (step)", cat, c, _pct(c, n_rows)] for cat, c in ordered]
        parts.append(f"{clean:,} without error, {failed:,} with one"
                     + (" (" + ", ".join(f"{cat} {c:,}" for cat, c in ordered) + ")" if ordered else ""))
    if VERDICT in df.columns:
        verdicts = df[VERDICT].map(lambda v: v if isinstance(v, str) and v.strip() else None)
        vc = verdicts.value_counts(dropna=True)
        judged = int(vc.sum())
        vrows = sorted(((str(v), int(c)) for v, c in vc.items()), key=lambda kv: (-kv[1], kv[0]))
        labels += [f"verdict: {v}" for v, _ in vrows]
        counts += [c for _, c in vrows]
        colors += [BAR] * len(vrows)
        rows += [["verdict", v, c, _pct(c, n_rows)] for v, c in vrows]
        parts.append(f"{judged:,} verdicts" + (" (" + ", ".join(f"{v} {c:,}" for v, c in vrows) + ")" if vrows else "")
                     + f", {n_rows - judged:,} rows without one")
    if not counts:
        return _Skip(key, title, "no rows")
    caption = f"Outcome of every row of the final step file: n = {n_rows:,} rows; " + "; ".join(parts)
    table = _table(["What", "Value", "Rows", "Share of all rows"], rows, [False, False, True, True])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _bars(ax, labels, counts, colors, horizontal=True)

    height = max(2.2, 0.38 * len(labels) + 0.9)
    return _Chart(key, title, caption + ".", [("Rows by outcome", table)], draw, size=(7.5, height))


# --- Drawing ------------------------------------------------------------------------------------
def _png(chart: _Chart, figure_cls: Any, canvas_cls: Any) -> str:
    fig = figure_cls(figsize=chart.size, dpi=100, layout="constrained")
    canvas_cls(fig)
    chart.draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _matplotlib() -> tuple[Any, Any] | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


# --- The page -------------------------------------------------------------------------------------
STEP_COLUMNS = [
    ("Step", "step", False), ("Status", "status", False), ("Rows in", "rows_in", True), ("Rows out", "rows_out", True),
    ("Failed", "failed", True), ("Skipped (failed upstream)", "skipped_upstream_failed", True),
    ("Requests", "requests", True), ("Retries", "retries", True), ("Cache hits", "cache_hits", True),
    ("Prompt tokens", "prompt_tokens", True), ("Completion tokens", "completion_tokens", True),
    ("Wall time (s)", "wall_seconds", True), ("Cost", "cost", True),
]


def _step_cell(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    if key == "cost":
        return _cost(value)
    if key == "wall_seconds":
        return "-" if value is None else f"{float(value):.2f}"
    return "-" if value is None else value


def _steps_section(summary: Mapping[str, Any]) -> list[str]:
    steps = list(summary.get("steps") or [])
    out = ["<section id=\"steps\">", "<h2>Steps</h2>"]
    if not steps:
        return out + ["<p class=\"note\">No step recorded.</p>", "</section>"]
    totals = summary.get("totals") or {}
    total = ["total", ""] + [""] * 4 + [_step_cell(totals, k) if k in totals else "" for _, k, _ in STEP_COLUMNS[6:]]
    out.append(_table([h for h, _, _ in STEP_COLUMNS], [[_step_cell(r, k) for _, k, _ in STEP_COLUMNS] for r in steps],
                      [n for _, _, n in STEP_COLUMNS], total=total if totals else None))
    endpoint = [f"{r.get('step')}: {r.get('batch_requests', 0):,} through the Batch API, {r.get('refused_429', 0):,} "
                "refused with 429 (and retried)" for r in steps if r.get("batch_requests") or r.get("refused_429")]
    out += [f"<p class=\"note\">{_e(line)}</p>" for line in endpoint]
    if any(r.get("status") == "cached" for r in steps):
        out.append("<p class=\"note\">Cached steps reused the result of an earlier run with the same input and "
                   "settings: they made no requests in this run (their rows and failures are those of that "
                   "earlier run).</p>")
    failures = [(r.get("step"), reason, n) for r in steps for reason, n in (r.get("failures_by_reason") or {}).items()]
    out.append("<h3>Failures by reason</h3>")
    if failures:
        out.append(_table(["Step", "Reason", "Rows"], failures, [False, False, True]))
    else:
        out.append("<p>None.</p>")
    kinds: dict[str, int] = {}
    for r in steps:
        for kind, n in (r.get("failures_by_kind") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(n or 0)
    if any(kinds.values()):
        out.append("<p>By kind (what a rerun does with them):</p>")
        out.append(_table(["Kind", "Rows", "What a rerun does"],
                          [[k, n, _Raw(_inline_md(KIND_ADVICE.get(k, "")))] for k, n in kinds.items() if n],
                          [False, True, False]))
    details = [(r.get("step"), k, v) for r in steps for k, v in (r.get("extra") or {}).items()]
    if details:
        out.append("<details><summary>Step details</summary>")
        out.append(_table(["Step", "Detail", "Value"], details, [False, False, False]))
        out.append("</details>")
    return out + ["</section>"]


def _frame_simulated(df: pd.DataFrame) -> bool:
    for col in SIMULATED_COLUMNS:
        if col in df.columns and bool(df[col].fillna(False).astype(bool).any()):
            return True
    return False


def _column(columns: Any, name: str, default: str) -> str:
    if columns is None:
        return default
    if isinstance(columns, Mapping):
        return str(columns.get(name, default))
    return str(getattr(columns, name, default))


def chart_columns(columns: Any = None) -> list[str]:
    """The columns of the final step file the page reads (the rest can be left out of ``final``)."""
    names = [_column(columns, "question", "question"), _column(columns, "reasoning", "reasoning"),
             f"{_column(columns, 'hard_negatives', 'hard_negatives')}_scores"]
    return [*names, RANK, POSITIVE_SCORE, HARDNEG_STATUS, ERROR, STATUS, VERDICT, *SAMPLE_COLUMNS, *SIMULATED_COLUMNS]


def render_html(summary: dict, final: pd.DataFrame, title: str = "RARE pipeline report", token_counter: Any = None,
                *, columns: Any = None, length_sample: int | None = LENGTH_SAMPLE,
                rows: tuple[int, int] | None = None) -> str:
    """The report page (see the module docstring). ``columns``: the config's column names
    (``question``, ``reasoning``, ``hard_negatives``; a mapping or ``config.columns``) when they
    are not the defaults. ``length_sample``: texts measured per column at most (None: all).
    ``rows``: (rows, ok rows) of the whole final step file when ``final`` is an evenly spaced
    sample of it (a large run); the page then says the charts are drawn from that sample."""
    df = final if final is not None else pd.DataFrame()
    question = _column(columns, "question", "question")
    reasoning = _column(columns, "reasoning", "reasoning")
    scores = f"{_column(columns, 'hard_negatives', 'hard_negatives')}_scores"
    charts = [
        _rank_chart(df),
        _ratio_chart(df, scores),
        _lengths_chart(df, [question, reasoning], token_counter, length_sample),
        _samples_chart(df),
        _outcomes_chart(df),
    ]
    mpl = _matplotlib() if any(isinstance(c, _Chart) for c in charts) else None

    simulated = bool(summary.get("simulated")) or _frame_simulated(df)
    builtin = summary.get("builtin_simulator")
    builtin = bool(summary.get("simulated")) if builtin is None else bool(builtin)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title + (' (SIMULATED)' if simulated else ''))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if simulated:
        text = SIMULATED_BANNER if builtin else SIMULATED_ENDPOINT_BANNER
        if not summary.get("simulated"):
            text = ("**SIMULATED ANSWERS.** Rows of the final step file are marked simulated: their questions, "
                    "reasoning or answers were not written by a model. Never train a model on them.")
        out.append(f'<div class="banner simulated" id="simulated-banner" role="alert">{_inline_md(text)}</div>')

    facts = [[k, _Raw(_inline_md(str(v)))] for k, v in (summary.get("header") or {}).items()]
    if summary.get("dataset_rows") is not None:
        facts.append(["Rows in the final dataset", summary["dataset_rows"]])
    if rows is not None:
        facts.append(["Rows in the final step file", f"{rows[0]:,} ({rows[1]:,} ok, {rows[0] - rows[1]:,} failed)"])
    elif STATUS in df.columns:
        ok = int((df[STATUS] == "ok").sum())
        facts.append(["Rows in the final step file", f"{len(df):,} ({ok:,} ok, {len(df) - ok:,} failed)"])
    else:
        facts.append(["Rows in the final step file", f"{len(df):,}"])
    out += ['<section id="facts">', "<h2>Run</h2>", _table(["", ""], facts), "</section>"]
    out += _steps_section(summary)

    drawn = (f"From an evenly spaced sample of {len(df):,} of the final step file's {rows[0]:,} rows (ok and failed)."
             if rows is not None and rows[0] > len(df) else
             f"From every row of the final step file ({len(df):,} rows, ok and failed).")
    out += ['<section id="charts">', "<h2>The data</h2>", f"<p class=\"note\">{drawn}</p>"]
    if mpl is None and any(isinstance(c, _Chart) for c in charts):
        out.append('<p class="skipped">Charts not drawn: matplotlib is not installed '
                   "(<code>pip install matplotlib</code>); their captions and figures follow.</p>")
    for chart in charts:
        if isinstance(chart, _Skip):
            out.append(f'<p class="skipped" id="skip-{chart.key}">Not shown: {_e(chart.title[:1].lower() + chart.title[1:])}: '
                       f"{_inline_md(chart.reason)}.</p>")
            continue
        out += [f'<figure id="chart-{chart.key}">', f"<h3>{_e(chart.title)}</h3>",
                f"<figcaption>{_inline_md(chart.caption)}</figcaption>"]
        if mpl is not None:
            out.append(f'<img src="data:image/png;base64,{_png(chart, *mpl)}" alt="{_e(chart.title)}">')
        out.append("<details><summary>The figures behind the chart</summary>")
        for name, table in chart.tables:
            out += [f"<p>{_inline_md(name)}</p>", table]
        out += ["</details>", "</figure>"]
    out += ["</section>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
