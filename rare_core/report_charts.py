"""The five charts of ``report.html``, from the final step file's rows: each chart's caption
(the numbers behind it), its table of figures and how to draw it.

One function per chart, each ``(final, ...) -> Chart | Skip``, in the page's order:

1. :func:`rank_chart`: the positive's BM25 rank (``positive_rank``; -1, not within the searched
   depth, is its own bar, and rows the BM25 step never searched, ``rare_hardneg_status``
   skipped/failed, are counted apart);
2. :func:`ratio_chart`: the negatives' score ratios (each of ``hard_negatives_scores`` /
   ``positive_score``);
3. :func:`lengths_chart`: question and reasoning lengths, in tokens from ``token_counter`` (a
   callable text -> int, or an object with ``count_many(texts) -> counts`` such as
   :func:`rare_core.tokens.token_counter_for`'s) or else in whitespace-separated words; above
   ``length_sample`` texts a column is measured on a seeded random sample (the caption says so);
4. :func:`samples_chart`: samples needed per row (``rare_verify_samples``, else
   ``rare_distill_attempts``);
5. :func:`outcomes_chart`: the failed rows (``rare_status``) by the step that failed them (the
   step whose ``rare_<step>_status`` says failed, or filtered) and their ``rare_error_kind``, and
   the ``rare_verify_verdict`` values.

A chart whose columns are absent (or hold no value) is a :class:`Skip` with a one-line reason.
Drawing: :mod:`rare_core.report_draw`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from rare_core.filters.common import FILTERED
from rare_core.operators.base import ERROR_KIND, FAILED, STATUS
from rare_core.report_draw import ALT_BAR, BAR, THIRD_BAR, bars, hist
from rare_core.report_markup import figure, pct, table

LENGTH_SAMPLE = 20_000  # texts measured per column at most (seeded random sample above)
RANK = "positive_rank"
POSITIVE_SCORE = "positive_score"
HARDNEG_STATUS = "rare_hardneg_status"
VERDICT = "rare_verify_verdict"
SAMPLE_COLUMNS = ("rare_verify_samples", "rare_distill_attempts")
NOT_SEARCHED = ("skipped", "failed")
STEP_STATUS = re.compile(r"rare_(.+)_status")  # a step's status column (rare_core.operators.base.step_column)
FAILING = (FAILED, FILTERED)  # a step's status of a row it failed, or a filter removed


class Chart:
    """One chart: its caption, its figures (tables) and how to draw it."""

    def __init__(self, key: str, title: str, caption: str, tables: list[tuple[str, str]],
                 draw: Callable[[Any], None], size: tuple[float, float] = (7.5, 3.2)):
        self.key, self.title, self.caption, self.tables, self.draw, self.size = key, title, caption, tables, draw, size


class Skip:
    """A chart left out: why (markdown)."""

    def __init__(self, key: str, title: str, reason: str):
        self.key, self.title, self.reason = key, title, reason


def _missing(df: pd.DataFrame, key: str, title: str, columns: Sequence[str]) -> Skip | None:
    absent = [c for c in columns if c not in df.columns]
    if not absent:
        return None
    names = " and ".join(f"`{c}`" for c in absent)
    return Skip(key, title, f"the final step file has no {names} column{'s' if len(absent) > 1 else ''}")


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


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


def rank_chart(df: pd.DataFrame) -> Chart | Skip:
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
        return Skip(key, title, f"no row has a `{RANK}` value from a BM25 search")
    found = rank[rank >= 1].astype(np.int64)
    outside = int((rank < 1).sum())
    buckets = _rank_buckets(int(found.max())) if len(found) else []
    labels = [str(lo) if lo == hi else f"{lo}–{hi}" for lo, hi in buckets]
    edges = np.array([lo for lo, _ in buckets] + [buckets[-1][1] + 1]) if buckets else np.array([1, 2])
    counts = np.histogram(found, bins=edges)[0] if buckets else np.array([], dtype=int)
    at1 = int((found == 1).sum())
    med = (f"median {figure(np.median(found))}, 90th percentile {figure(np.percentile(found, 90, method='higher'))}"
           if len(found) else "none found")
    caption = (f"Where BM25 ranked each question's own (positive) document: n = {n:,} searched rows, "
               f"{len(found):,} found within the searched depth (rank 1 for {at1:,}, {pct(at1, n)}; {med}); "
               f"{outside:,} ({pct(outside, n)}) not within the searched depth (rank -1), the red bar")
    if not_searched:
        caption += f"; {not_searched:,} rows not searched (failed upstream) left out"
    if no_rank:
        caption += f"; {no_rank:,} rows without a rank left out"
    all_labels = labels + ["not in depth (-1)"]
    all_counts = [int(c) for c in counts] + [outside]
    rows = [[lab, c, pct(c, n)] for lab, c in zip(all_labels, all_counts)]
    if not_searched:
        rows.append(["not searched (failed upstream)", not_searched, "-"])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        bars(ax, all_labels, all_counts, [BAR] * len(labels) + [ALT_BAR])
        ax.set_xlabel("rank of the positive in the BM25 ranking")

    return Chart(key, title, caption + ".", [("Rows by rank", table(["Rank", "Rows", "Share"], rows, [False, True, True]))], draw)


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


def ratio_chart(df: pd.DataFrame, scores_col: str) -> Chart | Skip:
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
        return Skip(key, title, reason + (f" ({left_out:,} negatives without one)" if left_out else ""))
    row_of = np.repeat(np.arange(len(lists)), lengths)[usable]
    rows = len(np.unique(row_of))
    top = max(1.0, min(2.0, math.ceil(float(ratios.max()) * 20) / 20))
    edges = np.round(np.arange(0.0, top + 0.05 / 2, 0.05), 2)
    counts = np.histogram(np.clip(ratios, 0.0, top), bins=edges)[0]
    above = int((ratios > 1).sum())
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    caption = (f"Each hard negative's BM25 score divided by its positive's score (1 = scores as high as the "
               f"positive): n = {n:,} negatives of {rows:,} rows, median {figure(p50, 3)}, 10th–90th percentile "
               f"{figure(p10, 3)}–{figure(p90, 3)}, max {figure(float(ratios.max()), 3)}; {above:,} above 1")
    if ratios.max() > top:
        caption += f" (ratios above {figure(top)} counted in the last bin)"
    if left_out:
        caption += f"; {left_out:,} negatives left out (no score, or the positive has none)"
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]
    figures = table(["Score ratio", "Negatives", "Share"], [[lab, int(c), pct(int(c), n)] for lab, c in zip(labels, counts)],
                   [False, True, True])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        hist(ax, edges, counts, "negative's score / positive's score", "negatives")
        ax.axvline(float(p50), color=ALT_BAR, linestyle="--", linewidth=1, label=f"median {figure(p50, 3)}")
        ax.legend(loc="upper left", fontsize=8)

    return Chart(key, title, caption + ".", [("Negatives by score ratio", figures)], draw)


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


def lengths_chart(df: pd.DataFrame, columns: Sequence[str], token_counter: Any, sample: int | None) -> Chart | Skip:
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
        parts.append(f"{col} n = {total:,}{note}, median {figure(p50)}, 10th–90th percentile {figure(p10)}–{figure(p90)}, "
                     f"max {figure(values.max())}")
        edges = _length_edges(values)
        counts = np.histogram(values, bins=edges)[0]
        labels = [f"{int(lo):,}–{int(hi) - 1:,}" if hi - lo > 1 else f"{int(lo):,}" for lo, hi in zip(edges[:-1], edges[1:])]
        tables.append((f"{col}: texts by length in {unit}" + note,
                       table([f"Length ({unit})", "Texts", "Share"],
                              [[lab, int(c), pct(int(c), len(values))] for lab, c in zip(labels, counts)],
                              [False, True, True])))
        series.append((col, edges, counts, p50))
    absent = [c for c in columns if c not in df.columns]
    if not series:
        return Skip(key, title, "no non-empty text in " + " or ".join(f"`{c}`" for c in present))
    caption = f"Lengths in {how}: " + "; ".join(parts)
    if absent:
        caption += "; " + ", ".join(f"`{c}`" for c in absent) + " not in the final step file"

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(series), squeeze=False)[0]
        for ax, (col, edges, counts, med) in zip(axes, series):
            hist(ax, edges, counts, f"{col} length ({unit})", "texts", integer=True)
            ax.axvline(float(med), color=ALT_BAR, linestyle="--", linewidth=1, label=f"median {figure(med)}")
            ax.legend(loc="upper right", fontsize=8)
            ax.set_title(col, fontsize=10)

    return Chart(key, title, caption + ".", tables, draw, size=(4.2 * len(series) + 1, 3.2))


def samples_chart(df: pd.DataFrame) -> Chart | Skip:
    key, title = "samples", "Samples needed per row"
    col = next((c for c in SAMPLE_COLUMNS if c in df.columns), None)
    if col is None:
        return Skip(key, title, "the final step file has neither `" + "` nor `".join(SAMPLE_COLUMNS) + "`")
    values = _numeric(df[col])
    values = values[np.isfinite(values) & (values >= 0)]
    n = len(values)
    if n == 0:
        return Skip(key, title, f"`{col}` holds no value")
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
    caption = (f"{what[0].upper() + what[1:]} per row (`{col}`): n = {n:,} rows, median {figure(np.median(ints))}, "
               f"mean {figure(ints.mean(), 2)}, max {top:,}; 1 for {first:,} rows ({pct(first, n)})")
    if n < len(df):
        caption += f"; {len(df) - n:,} rows without a value left out"
    figures = table(["Samples" if col == SAMPLE_COLUMNS[0] else "Requests", "Rows", "Share"],
                   [[lab, int(c), pct(int(c), n)] for lab, c in zip(labels, counts)], [False, True, True])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        bars(ax, labels, [int(c) for c in counts])
        ax.set_xlabel(col)

    return Chart(key, title, caption + ".", [(f"Rows by `{col}`", figures)], draw)




def _failing_steps(df: pd.DataFrame) -> np.ndarray:
    """Per row, the step whose status column says it failed (or filtered) the row: the first such
    column, as steps add theirs in the order they run; "" where none does."""
    step = np.full(len(df), "", dtype=object)
    for col in df.columns:
        found = STEP_STATUS.fullmatch(str(col))
        if found is not None:
            hit = df[col].isin(FAILING).to_numpy() & (step == "")
            step[hit] = found.group(1)
    return step


def outcomes_chart(df: pd.DataFrame) -> Chart | Skip:
    key, title = "outcomes", "Verification and filter outcomes"
    if STATUS not in df.columns and VERDICT not in df.columns:
        return Skip(key, title, f"the final step file has neither `{STATUS}` nor `{VERDICT}`")
    n_rows = len(df)
    rows: list[list[Any]] = []
    labels: list[str] = []
    counts: list[int] = []
    colors: list[str] = []
    parts: list[str] = []
    if STATUS in df.columns:
        failed = (df[STATUS] == FAILED).to_numpy()
        kinds = (df[ERROR_KIND].fillna("").astype(str).to_numpy()[failed] if ERROR_KIND in df.columns
                 else np.full(int(failed.sum()), "", dtype=object))
        by_cat = Counter(f"{step or 'unknown step'} ({kind})" if kind else step or "unknown step"
                         for step, kind in zip(_failing_steps(df)[failed], kinds))
        n_failed = sum(by_cat.values())
        clean = n_rows - n_failed
        ordered = sorted(by_cat.items(), key=lambda kv: (-kv[1], kv[0]))
        labels += ["ok"] + [f"failed: {cat}" for cat, _ in ordered]
        counts += [clean] + [c for _, c in ordered]
        colors += [THIRD_BAR] + [ALT_BAR] * len(ordered)
        rows += [["row", "ok", clean, pct(clean, n_rows)]]
        rows += [["failed (step, kind)", cat, c, pct(c, n_rows)] for cat, c in ordered]
        parts.append(f"{clean:,} ok, {n_failed:,} failed"
                     + (" (by step and kind: " + ", ".join(f"{cat} {c:,}" for cat, c in ordered) + ")"
                        if ordered else ""))
    if VERDICT in df.columns:
        verdicts = df[VERDICT].map(lambda v: v if isinstance(v, str) and v.strip() else None)
        vc = verdicts.value_counts(dropna=True)
        judged = int(vc.sum())
        vrows = sorted(((str(v), int(c)) for v, c in vc.items()), key=lambda kv: (-kv[1], kv[0]))
        labels += [f"verdict: {v}" for v, _ in vrows]
        counts += [c for _, c in vrows]
        colors += [BAR] * len(vrows)
        rows += [["verdict", v, c, pct(c, n_rows)] for v, c in vrows]
        parts.append(f"{judged:,} verdicts" + (" (" + ", ".join(f"{v} {c:,}" for v, c in vrows) + ")" if vrows else "")
                     + f", {n_rows - judged:,} rows without one")
    if not counts:
        return Skip(key, title, "no rows")
    caption = f"Outcome of every row of the final step file: n = {n_rows:,} rows; " + "; ".join(parts)
    figures = table(["What", "Value", "Rows", "Share of all rows"], rows, [False, False, True, True])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        bars(ax, labels, counts, colors, horizontal=True)

    height = max(2.2, 0.38 * len(labels) + 0.9)
    return Chart(key, title, caption + ".", [("Rows by outcome", figures)], draw, size=(7.5, height))
