"""The run report as one self-contained HTML page: the run's facts and steps, and charts of the
final step file's rows.

``render_html(summary, final, title=..., token_counter=None) -> str``

* ``summary``: the run's :class:`~rare_core.report_summary.RunSummary` (what ``report.md`` and
  ``summary.json`` show, with the same wording); a loud banner when it is ``simulated`` (or
  when any row of ``final`` says its answers were simulated).
* ``final``: the last step's file, every row (ok and failed), or its columns that
  :func:`chart_columns` names: five charts (:mod:`rare_core.report_charts`), each with a
  one-line caption giving the numbers behind it and a table of its figures; a chart whose
  columns are absent (or hold no value) is left out with a one-line note.

The page loads nothing: no external CSS, script or font; charts are inline base64 PNGs
(:mod:`rare_core.report_draw`: matplotlib, imported on the first call only, so ``import
rare_core`` stays light). Without matplotlib the page keeps the captions and tables and says the
charts are missing. Every text is escaped.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from rare_core.operators.base import ERROR_KIND, STATUS, step_column
from rare_core.report_charts import (
    HARDNEG_STATUS, LENGTH_SAMPLE, POSITIVE_SCORE, RANK, SAMPLE_COLUMNS, VERDICT, Chart, Skip,
    lengths_chart, outcomes_chart, rank_chart, ratio_chart, samples_chart,
)
from rare_core.report_draw import matplotlib_classes, png
from rare_core.report_markup import Raw, escape, inline_md, table
from rare_core.report_summary import (
    BY_KIND, CACHED_NOTE, DATASET_ROWS, DETAILS_TITLE, FAILURES_TITLE, FINDINGS_TITLE, KIND_ADVICE, NO_FAILURES,
    STEP_COLUMNS, STEPS_TITLE, RunSummary, banner, step_cells, total_cells,
)

__all__ = ["render_html", "chart_columns", "LENGTH_SAMPLE"]

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


def _column(columns: Any, name: str) -> str:
    """The configured name of the data column ``name`` (``columns``: a mapping, an object with
    the names as attributes, or None for the defaults)."""
    if columns is None:
        return name
    if isinstance(columns, Mapping):
        return str(columns.get(name, name))
    return str(getattr(columns, name, name))


def chart_columns(columns: Any = None) -> list[str]:
    """The columns of the final step file the charts read (the rest can be left out of ``final``):
    the data columns, the bookkeeping ones, and every step's status column."""
    from rare_core.pipeline import STEPS  # the registry imports every operator: not at import time

    names = [_column(columns, "question"), _column(columns, "reasoning"),
             f"{_column(columns, 'hard_negatives')}_scores"]
    statuses = [step_column(s.name, "status") for s in STEPS]
    return [*names, RANK, POSITIVE_SCORE, STATUS, ERROR_KIND, VERDICT, *SAMPLE_COLUMNS, *simulated_columns(),
            *dict.fromkeys([HARDNEG_STATUS, *statuses])]


def _steps_section(summary: RunSummary) -> list[str]:
    out = ['<section id="steps">', f"<h2>{STEPS_TITLE}</h2>"]
    if not summary.steps:
        return out + ['<p class="note">No step recorded.</p>', "</section>"]
    out.append(table([c.title for c in STEP_COLUMNS], [step_cells(line) for line in summary.steps],
                     [c.numeric for c in STEP_COLUMNS], total=total_cells(summary.totals)))
    out += [f'<p class="note">{escape(note)}</p>' for note in summary.endpoint_notes()]
    if summary.any_cached:
        out.append(f'<p class="note">{escape(CACHED_NOTE)}</p>')
    out.append(f"<h3>{FAILURES_TITLE}</h3>")
    failures = summary.failures()
    out.append(table(["Step", "Reason", "Rows"], failures, [False, False, True]) if failures
               else f"<p>{NO_FAILURES}</p>")
    if kinds := [[kind, n, Raw(inline_md(KIND_ADVICE.get(kind, "")))]
                 for kind, n in summary.totals.failures_by_kind.items() if n]:
        out += [f"<p>{escape(BY_KIND)}</p>", table(["Kind", "Rows", "What a rerun does"], kinds, [False, True, False])]
    if findings := summary.findings():
        out += [f"<h3>{FINDINGS_TITLE}</h3>", table(["Step", "What it found"], findings, [False, False])]
    details = [(line.step, k, v) for line in summary.steps for k, v in line.extra.items()]
    if details:
        out += [f"<details><summary>{DETAILS_TITLE}</summary>",
                table(["Step", "Detail", "Value"], details, [False, False, False]), "</details>"]
    return out + ["</section>"]


def simulated_columns() -> list[str]:
    """``rare_<step>_simulated`` of every step of the registry that calls an LLM."""
    from rare_core.pipeline import STEPS  # the registry imports every operator: not at import time

    return [step_column(s.name, "simulated") for s in STEPS if s.uses_llm]


def _frame_simulated(df: pd.DataFrame) -> bool:
    for col in simulated_columns():
        if col in df.columns and bool(df[col].fillna(False).astype(bool).any()):
            return True
    return False


def _facts(summary: RunSummary, df: pd.DataFrame, rows: tuple[int, int] | None) -> list[list[Any]]:
    facts: list[list[Any]] = [[k, Raw(inline_md(str(v)))] for k, v in summary.header.items()]
    if summary.dataset_rows is not None:
        facts.append([DATASET_ROWS, summary.dataset_rows])
    if rows is not None:
        facts.append(["Rows in the final step file", f"{rows[0]:,} ({rows[1]:,} ok, {rows[0] - rows[1]:,} failed)"])
    elif STATUS in df.columns:
        ok = int((df[STATUS] == "ok").sum())
        facts.append(["Rows in the final step file", f"{len(df):,} ({ok:,} ok, {len(df) - ok:,} failed)"])
    else:
        facts.append(["Rows in the final step file", f"{len(df):,}"])
    return facts


def _chart_section(found: list[Chart | Skip], df: pd.DataFrame, rows: tuple[int, int] | None) -> list[str]:
    drawn = (f"From an evenly spaced sample of {len(df):,} of the final step file's {rows[0]:,} rows (ok and failed)."
             if rows is not None and rows[0] > len(df) else
             f"From every row of the final step file ({len(df):,} rows, ok and failed).")
    out = ['<section id="charts">', "<h2>The data</h2>", f'<p class="note">{drawn}</p>']
    mpl = matplotlib_classes() if any(isinstance(c, Chart) for c in found) else None
    if mpl is None and any(isinstance(c, Chart) for c in found):
        out.append('<p class="skipped">Charts not drawn: matplotlib is not installed '
                   "(<code>pip install matplotlib</code>); their captions and figures follow.</p>")
    for chart in found:
        if isinstance(chart, Skip):
            out.append(f'<p class="skipped" id="skip-{chart.key}">Not shown: '
                       f"{escape(chart.title[:1].lower() + chart.title[1:])}: {inline_md(chart.reason)}.</p>")
            continue
        out += [f'<figure id="chart-{chart.key}">', f"<h3>{escape(chart.title)}</h3>",
                f"<figcaption>{inline_md(chart.caption)}</figcaption>"]
        if mpl is not None:
            out.append(f'<img src="data:image/png;base64,{png(chart.draw, chart.size, *mpl)}" '
                       f'alt="{escape(chart.title)}">')
        out.append("<details><summary>The figures behind the chart</summary>")
        for name, figures in chart.tables:
            out += [f"<p>{inline_md(name)}</p>", figures]
        out += ["</details>", "</figure>"]
    return out + ["</section>"]


def render_html(summary: RunSummary, final: pd.DataFrame | None, title: str = "RARE pipeline report",
                token_counter: Any = None, *, columns: Any = None, length_sample: int | None = LENGTH_SAMPLE,
                rows: tuple[int, int] | None = None) -> str:
    """The report page (see the module docstring). ``columns``: the config's column names
    (``question``, ``reasoning``, ``hard_negatives``; a mapping or ``config.columns``) when they
    are not the defaults. ``length_sample``: texts measured per column at most (None: all).
    ``rows``: (rows, ok rows) of the whole final step file when ``final`` is an evenly spaced
    sample of it (a large run); the page then says the charts are drawn from that sample."""
    df = final if final is not None else pd.DataFrame()
    warning = banner(summary, rows_simulated=_frame_simulated(df))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title + (' (SIMULATED)' if warning else ''))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if warning:
        out.append(f'<div class="banner simulated" id="simulated-banner" role="alert">{inline_md(warning)}</div>')
    out += ['<section id="facts">', "<h2>Run</h2>", table(["", ""], _facts(summary, df, rows)), "</section>"]
    out += _steps_section(summary)
    texts = [_column(columns, "question"), _column(columns, "reasoning")]
    charts = [rank_chart(df), ratio_chart(df, f"{_column(columns, 'hard_negatives')}_scores"),
              lengths_chart(df, texts, token_counter, length_sample), samples_chart(df), outcomes_chart(df)]
    out += _chart_section(charts, df, rows)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
