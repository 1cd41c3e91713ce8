"""The typed summary of one run, built once from its steps, and the wording its renderings share.

In: one :class:`StepRecord` per step (the step's :class:`StepSummary`, its wall time in this run
and whether this run reused a cached result), the token prices (the config's, or a
:class:`ModelPrice` per step), whether the answers are simulated, and the header facts (input,
models, output...). Out: :func:`build_summary` -> :class:`RunSummary`: the header facts, one
:class:`StepLine` per step (rows, failures by reason and by kind, this run's LLM counters, wall
time, cost and the price it used), the :class:`Totals` and the costs' currency. Its JSON dump is
``summary.json``; the markdown report and the Prefect artifact (:mod:`rare_core.report`) and
``report.html`` (:mod:`rare_core.report_html`) render it, with the phrases defined here once
(banners, the steps table's columns, notes, what a rerun does with each kind of failure).

A cached step made no requests in this run: its rows and failures come from the run that
computed it, its requests, tokens and cost in this run are zero. Framework-free: no Prefect.
"""

from __future__ import annotations

from typing import Literal, Mapping, NamedTuple, Sequence

from pydantic import BaseModel, Field

from rare_core.config import Prices
from rare_core.operators.base import (
    CONTENT_ERROR, FILTERED_ERROR, INPUT_ERROR, REJECTED_ERROR, REQUEST_ERROR, LLMCounters, StepSummary,
)
from rare_core.pipeline import STEP_BY_NAME
from rare_core.prices import ModelPrice, price_for

StepPrices = Mapping[str, ModelPrice | None]


class StepRecord(BaseModel):
    """One step of one run: what it did (``summary``), how long it took in this run, and
    whether this run reused a cached result instead of running it."""

    summary: StepSummary
    wall_seconds: float = Field(0.0, ge=0)
    cached: bool = False


class StepLine(LLMCounters):
    """One step as the report shows it: its rows and failures (those of the run that computed
    it), this run's LLM counters (the fields of :class:`LLMCounters`: zero for a cached step or a
    step that sends no request), its wall time, and the cost of this run's requests."""

    step: str
    status: Literal["ran", "cached"] = "ran"
    rows_in: int = 0
    rows_out: int = 0
    failed: int = 0
    skipped_upstream_failed: int = 0
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    failures_by_kind: dict[str, int] = Field(default_factory=dict)
    wall_seconds: float = 0.0
    cost: float | None = None  # at ``price``; None without one
    price: ModelPrice | None = None
    simulated: bool = False
    extra: dict[str, float | int | str | bool] = Field(default_factory=dict)  # the step's own counters
    found: list[str] = Field(default_factory=list)  # what the step did to the rows, in words (StepSpec.describe)


class Totals(LLMCounters):
    """The run's LLM counters, wall time and cost (None when no step has a price), and every
    step's failed rows by kind (the kinds of :data:`KIND_ADVICE` first, in its order)."""

    wall_seconds: float = 0.0
    cost: float | None = None
    failures_by_kind: dict[str, int] = Field(default_factory=dict)


class RunSummary(BaseModel):
    """What the report says of one run (see the module docstring); ``summary.json`` is its dump."""

    simulated: bool = False
    builtin_simulator: bool = False  # no endpoint was configured: picks the banner's wording
    dataset_rows: int | None = None
    header: dict[str, str] = Field(default_factory=dict)
    steps: list[StepLine] = Field(default_factory=list)
    totals: Totals = Field(default_factory=Totals)
    currency: str | None = None  # of every cost; None when no step has a price

    @property
    def any_cached(self) -> bool:
        return any(line.status == "cached" for line in self.steps)

    def failures(self) -> list[tuple[str, str, int]]:
        """(step, reason, rows) of every failure reason of every step, in step order."""
        return [(line.step, reason, n) for line in self.steps for reason, n in line.failures_by_reason.items()]

    def findings(self) -> list[tuple[str, str]]:
        """(step, line) of what each step says it did to the rows (``StepSpec.describe``), in step order."""
        return [(line.step, said) for line in self.steps for said in line.found]

    def endpoint_notes(self) -> list[str]:
        """One line per step that sent requests through the Batch API or was refused with 429."""
        return [f"{line.step}: {line.batch_requests:,} through the Batch API, {line.refused_429:,} refused with 429 "
                "(and retried)" for line in self.steps if line.batch_requests or line.refused_429]


# --- The wording both renderings show -------------------------------------------------------------
SIMULATED_BANNER = (
    "**SIMULATED ANSWERS.** No LLM endpoint was configured, so every question, scenario, "
    "reasoning and answer was written by the built-in simulator, not by a model. "
    "Use this output to check the pipeline, never to train a model."
)
SIMULATED_ENDPOINT_BANNER = (
    "**SIMULATED ANSWERS.** The configured endpoint answered as the RARE simulator "
    "(`system_fingerprint` rare-simulator): its questions, reasoning and answers were not "
    "written by a model. Use this output to check the pipeline, never to train a model."
)
SIMULATED_ROWS_BANNER = (
    "**SIMULATED ANSWERS.** Rows of the final step file are marked simulated: their questions, "
    "reasoning or answers were not written by a model. Never train a model on them."
)
KIND_ADVICE = {
    REQUEST_ERROR: "the endpoint did not answer (outage, 429s, timeouts); the next run asks these rows again",
    CONTENT_ERROR: "the answers could not be used after the re-asks; `rare run --retry-failed` asks again",
    INPUT_ERROR: "the row itself is unusable (empty text, missing question); fix the input",
    REJECTED_ERROR: "verification rejected every sample (see verify.max_samples)",
    FILTERED_ERROR: "a data filter removed the row (filters.*)",
}
STEPS_TITLE = "Steps"
FAILURES_TITLE = "Failures by reason"
NO_FAILURES = "None."
BY_KIND = "By kind (what a rerun does with them):"
DETAILS_TITLE = "Step details"
FINDINGS_TITLE = "What the steps found"
DATASET_ROWS = "Rows in the final dataset"
CACHED_NOTE = ("Cached steps reused the result of an earlier run with the same input and settings: they made no "
               "requests in this run (their rows and failures are those of that earlier run).")


def banner(summary: RunSummary, rows_simulated: bool = False) -> str | None:
    """The simulated-answers banner (markdown), or None for a run with real answers.
    ``rows_simulated``: the final step file's rows say their answers were simulated."""
    if summary.simulated:
        return SIMULATED_BANNER if summary.builtin_simulator else SIMULATED_ENDPOINT_BANNER
    return SIMULATED_ROWS_BANNER if rows_simulated else None


class Column(NamedTuple):
    """A column of the steps table: its heading, the :class:`StepLine` field, right-aligned or not."""

    title: str
    key: str
    numeric: bool


STEP_COLUMNS = (
    Column("Step", "step", False), Column("Status", "status", False), Column("Rows in", "rows_in", True),
    Column("Rows out", "rows_out", True), Column("Failed", "failed", True),
    Column("Skipped (failed upstream)", "skipped_upstream_failed", True), Column("Requests", "requests", True),
    Column("Retries", "retries", True), Column("Cache hits", "cache_hits", True),
    Column("Prompt tokens", "prompt_tokens", True), Column("Completion tokens", "completion_tokens", True),
    Column("Wall time (s)", "wall_seconds", True), Column("Cost", "cost", True),
)
_FIRST_TOTAL = 6  # the total row starts at Requests: rows and failures do not add up across steps


def cost_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _cell(line: StepLine | Totals, key: str) -> str:
    value = getattr(line, key)
    if key == "cost":
        return cost_text(value)
    if key == "wall_seconds":
        return f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def step_cells(line: StepLine) -> list[str]:
    """The cells of a step's row of the steps table (:data:`STEP_COLUMNS`)."""
    return [_cell(line, c.key) for c in STEP_COLUMNS]


def total_cells(totals: Totals) -> list[str]:
    """The total row of the steps table: ``total``, blanks, then the summed columns."""
    return ["total"] + [""] * (_FIRST_TOTAL - 1) + [_cell(totals, c.key) for c in STEP_COLUMNS[_FIRST_TOTAL:]]


# --- Building it ----------------------------------------------------------------------------------
def step_cost(counters: LLMCounters, price: ModelPrice | None) -> float | None:
    """Cost of a step's tokens: those answered online at list prices, those answered through the
    Batch API at batch prices; None without a price."""
    if price is None:
        return None
    batch_p, batch_c = counters.batch_prompt_tokens, counters.batch_completion_tokens
    online = price.cost(counters.prompt_tokens - batch_p, counters.completion_tokens - batch_c)
    batch = price.cost(batch_p, batch_c, batch=True) if batch_p or batch_c else 0.0
    return None if batch is None else online + batch


def _price_of(step: str, prices: Prices | StepPrices | None) -> ModelPrice | None:
    if prices is None or isinstance(prices, Prices):
        return price_for(None, prices) if prices is not None else None
    return prices.get(step)


def _step_line(record: StepRecord, prices: Prices | StepPrices | None) -> StepLine:
    s = record.summary
    counters = LLMCounters() if record.cached or s.llm is None else s.llm  # a cached step sent nothing
    price = _price_of(s.step, prices)
    return StepLine(
        **counters.model_dump(), step=s.step, status="cached" if record.cached else "ran", rows_in=s.rows_in,
        rows_out=s.rows_out, failed=s.failed, skipped_upstream_failed=s.skipped_upstream_failed,
        failures_by_reason=dict(s.failures_by_reason), failures_by_kind=dict(s.failures_by_kind),
        wall_seconds=round(record.wall_seconds, 3), cost=step_cost(counters, price), price=price,
        simulated=s.simulated, extra=dict(s.extra), found=_described(s),
    )


def _described(summary: StepSummary) -> list[str]:
    """The lines the step's spec says of its summary; none for a step the registry lacks."""
    spec = STEP_BY_NAME.get(summary.step)
    return list(spec.describe(summary)) if spec is not None and spec.describe is not None else []


def _totals(lines: Sequence[StepLine]) -> Totals:
    counters = sum(lines, LLMCounters())  # LLMCounters.__add__ adds the counters of each line
    costs = [line.cost for line in lines if line.cost is not None]
    kinds = dict.fromkeys(KIND_ADVICE, 0)
    for line in lines:
        for kind, n in line.failures_by_kind.items():
            kinds[kind] = kinds.get(kind, 0) + n
    return Totals(**counters.model_dump(), wall_seconds=round(sum(line.wall_seconds for line in lines), 3),
                  cost=sum(costs) if costs else None, failures_by_kind=kinds)


def build_summary(steps: Sequence[StepRecord], prices: Prices | StepPrices | None = None, *, simulated: bool = False,
                  builtin_simulator: bool | None = None, dataset_rows: int | None = None,
                  header: Mapping[str, str] | None = None) -> RunSummary:
    """The summary of one run; ``simulated`` is also set when any step's summary says so.
    ``builtin_simulator``: whether no endpoint was configured (default: ``simulated``)."""
    lines = [_step_line(r, prices) for r in steps]
    currencies = dict.fromkeys(line.price.currency for line in lines if line.price and line.cost is not None)
    return RunSummary(
        simulated=simulated or any(r.summary.simulated for r in steps),
        builtin_simulator=simulated if builtin_simulator is None else builtin_simulator,
        dataset_rows=dataset_rows, header=dict(header or {}), steps=lines, totals=_totals(lines),
        currency=", ".join(currencies) or None,
    )
