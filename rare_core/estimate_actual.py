"""A run's estimate against its actual counters, for the report's "Estimate against actual".

In: an :class:`~rare_core.estimate.Estimate` and the run's step records. Out: :func:`compare` ->
one :class:`ComparisonRow` per role and counter; :func:`render_comparison` -> its markdown table.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import BaseModel

from rare_core.estimate import Estimate
from rare_core.operators.base import StepSummary

Metric = Literal["requests", "prompt_tokens", "completion_tokens"]


class ComparisonRow(BaseModel):
    """One counter of one role: estimated (expected, and the upper bound), actual (from the run's
    ``StepSummary``) and actual / estimated (None when either is missing or the estimate is
    zero)."""

    step: str
    metric: Metric
    estimated: int
    estimated_max: int | None = None  # the upper bound, where it differs from the expected figure
    actual: int | None = None  # None: the run has no such step
    ratio: float | None = None
    cached: bool = False  # the run reused this step: its counters are those of the run that computed it


def compare(estimate: Estimate, actual_steps: Sequence[Any]) -> list[ComparisonRow]:
    """Rows of estimate against actual for the LLM roles. ``actual_steps``: the run's
    :class:`rare_core.report.StepRecord` (or :class:`StepSummary`) objects; their
    ``summary.llm`` holds ``requests``, ``prompt_tokens`` and ``completion_tokens`` (the
    judge's: ``judge_requests``... in ReasonDistill's ``extra``, absent when it sent none: each
    estimate line's ``actual_step`` and ``actual_prefix`` say where)."""
    by_step: dict[str, tuple[StepSummary, bool]] = {}
    for item in actual_steps:
        summary = item if isinstance(item, StepSummary) else item.summary
        by_step[summary.step] = (summary, bool(getattr(item, "cached", False)))
    rows: list[ComparisonRow] = []
    for s in estimate.steps:
        found = by_step.get(s.actual_step)
        for metric, est, est_max in (("requests", s.requests, s.requests_max),
                                     ("prompt_tokens", s.prompt_tokens, s.prompt_tokens_max),
                                     ("completion_tokens", s.completion_tokens_expected, s.completion_tokens_max)):
            actual = None
            if found is not None:
                extra = found[0].extra
                if s.actual_prefix:  # a role of the step besides its own (the judge): absent when it sent none
                    actual = int(extra.get(f"{s.actual_prefix}{metric}", 0))
                elif found[0].llm is not None:
                    actual = getattr(found[0].llm, metric)
            ratio = None if actual is None or not est else round(actual / est, 3)
            rows.append(ComparisonRow(step=s.step, metric=metric, estimated=est,
                                      estimated_max=None if est_max == est else est_max,
                                      actual=actual, ratio=ratio, cached=bool(found and found[1])))
    return rows


def render_comparison(rows: Sequence[ComparisonRow]) -> str:
    """A markdown table of :func:`compare`'s rows, for the report's "estimate against actual"."""
    lines = ["| Role | Counter | Estimated | Actual | Actual / estimated |", "|---|---|---:|---:|---:|"]
    for r in rows:
        est = _n(r.estimated) + (f" (max {_n(r.estimated_max)})" if r.estimated_max is not None else "")
        actual = "-" if r.actual is None else _n(r.actual) + (" (cached)" if r.cached else "")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {r.step} | {r.metric.replace('_', ' ')} | {est} | {actual} | {ratio} |")
    return "\n".join(lines) + "\n"


def _n(value: int) -> str:
    return f"{value:,}"
