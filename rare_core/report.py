"""The run report in markdown: what the Prefect UI, ``report.md`` and the CLI show.

In: one :class:`StepRecord` per step, optional token prices, whether the answers are simulated,
and a few header facts (input, model, output...). Out: :func:`build_report` -> :class:`Report`
with ``run_summary`` (the typed :class:`~rare_core.report_summary.RunSummary`, built once:
``summary.json`` is its dump, ``report.html`` renders it too), ``markdown`` and ``brief`` (the
markdown without the step details, for a terminal). The phrases the HTML page shares come from
:mod:`rare_core.report_summary`. Framework-free: no Prefect.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from pydantic import BaseModel

from rare_core.config import Prices
from rare_core.report_summary import (
    BY_KIND, CACHED_NOTE, DATASET_ROWS, DETAILS_TITLE, FAILURES_TITLE, FINDINGS_TITLE, KIND_ADVICE, NO_FAILURES, STEP_COLUMNS,
    STEPS_TITLE, RunSummary, StepPrices, StepRecord, banner, build_summary, cost_text, step_cells, total_cells,
)

__all__ = ["Report", "RunSummary", "StepRecord", "build_report", "render_markdown"]


class Report(BaseModel):
    """The rendered report and the summary it renders."""

    markdown: str
    run_summary: RunSummary
    brief: str = ""  # the markdown without the step details (internal counters): what a terminal shows

    @property
    def summary(self) -> dict[str, Any]:
        """``run_summary`` as JSON data, as ``summary.json`` holds it (the flow result's dict form)."""
        return self.run_summary.model_dump(mode="json")


def build_report(
    steps: Sequence[StepRecord],
    prices: Prices | StepPrices | None = None,
    *,
    simulated: bool = False,
    builtin_simulator: bool | None = None,
    dataset_rows: int | None = None,
    header: Mapping[str, str] | None = None,
    sections: Mapping[str, str] | None = None,
    title: str = "RARE pipeline report",
) -> Report:
    """The report of one run (:func:`rare_core.report_summary.build_summary` for the arguments).
    ``sections``: more sections (title -> markdown) at the end."""
    summary = build_summary(steps, prices, simulated=simulated, builtin_simulator=builtin_simulator,
                            dataset_rows=dataset_rows, header=header)
    more = "".join(f"\n## {name}\n\n{text.rstrip()}\n" for name, text in (sections or {}).items())
    return Report(markdown=render_markdown(summary, title) + more, run_summary=summary,
                  brief=render_markdown(summary, title, details=False) + more)


def _row(cells: Iterable[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def render_markdown(summary: RunSummary, title: str = "RARE pipeline report", details: bool = True) -> str:
    """The report's markdown; ``details``: with the steps' own counters."""
    lines = [f"# {title}", ""]
    if text := banner(summary):
        lines += [f"> {text}", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.header.items()]
    if summary.dataset_rows is not None:
        lines.append(f"- **{DATASET_ROWS}**: {summary.dataset_rows:,}")
    total = total_cells(summary.totals)
    lines += ["", f"## {STEPS_TITLE}", "", _row(c.title for c in STEP_COLUMNS),
              "|" + "|".join("---:" if c.numeric else "---" for c in STEP_COLUMNS) + "|",
              *(_row(step_cells(line)) for line in summary.steps), _row([f"**{total[0]}**", *total[1:]])]
    if notes := summary.endpoint_notes():
        lines += ["", *[f"- {note}" for note in notes]]
    if summary.any_cached:
        lines += ["", CACHED_NOTE]
    lines += ["", f"## {FAILURES_TITLE}", ""]
    lines += [f"- {step}: {reason}: {n:,}" for step, reason, n in summary.failures()] or [NO_FAILURES]
    if kinds := {kind: n for kind, n in summary.totals.failures_by_kind.items() if n}:
        lines += ["", BY_KIND, ""]
        lines += [f"- {kind}: {n:,}" + (f": {KIND_ADVICE[kind]}" if kind in KIND_ADVICE else "")
                  for kind, n in kinds.items()]
    if findings := summary.findings():
        lines += ["", f"## {FINDINGS_TITLE}", ""]
        lines += [f"- {step}: {said}" for step, said in findings]
    counters = [(line.step, k, v) for line in summary.steps for k, v in line.extra.items()]
    if counters and details:
        lines += ["", f"## {DETAILS_TITLE}", ""]
        lines += [f"- {step}: {key} = {value}" for step, key, value in counters]
    lines += ["", "## Cost", ""]
    if summary.totals.cost is None:
        lines.append("No token prices known for these models (set `prices` in the config for a cost estimate).")
    else:
        lines.append(f"{cost_text(summary.totals.cost)} for the requests of this run, tokens answered through the "
                     "Batch API at batch prices:")
        lines += [f"- {line.step}: {line.price.input_per_million:g} / {line.price.output_per_million:g} per million "
                  f"prompt / completion tokens ({line.price.source})"
                  for line in summary.steps if line.price is not None and (line.requests or line.cost)]
    return "\n".join(lines) + "\n"
