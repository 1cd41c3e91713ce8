"""The run report: one markdown text and one summary dict from the steps of a pipeline run.

In: one :class:`StepRecord` per step (the step's :class:`StepSummary`, its wall time in this run
and whether this run reused a cached result), optional token prices, whether the answers are
simulated, and a few header facts (input, model, output...). Out: :class:`Report` with
``markdown`` (what the Prefect UI, ``report.md`` and the CLI show) and ``summary`` (the same
numbers as a JSON-ready dict, written to ``summary.json``).

A cached step made no requests in this run: its rows and failures come from the run that
computed it, its requests, tokens and cost in this run are zero. Framework-free: no Prefect.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pydantic import BaseModel, Field

from rare_core.config import Prices
from rare_core.prices import ModelPrice, price_for
from rare_core.operators.base import StepSummary

# Counters of the LLM steps (``StepSummary.extra``, from the client's RunTotals).
LLM_COUNTERS = ("requests", "retries", "cache_hits", "prompt_tokens", "completion_tokens", "batch_requests",
                "batch_prompt_tokens", "batch_completion_tokens", "refused_429")
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


KIND_ADVICE = {
    "request": "the endpoint did not answer (outage, 429s, timeouts); the next run asks these rows again",
    "content": "the answers could not be used after the re-asks; `rare run --retry-failed` asks again",
    "input": "the row itself is unusable (empty text, missing question); fix the input",
    "rejected": "verification rejected every sample (see verify.max_samples)",
    "filtered": "a data filter removed the row (filters.*)",
}


class StepRecord(BaseModel):
    """One step of one run: what it did (``summary``), how long it took in this run, and
    whether this run reused a cached result instead of running it."""

    summary: StepSummary
    wall_seconds: float = Field(0.0, ge=0)
    cached: bool = False


class Report(BaseModel):
    """The rendered report and its numbers."""

    markdown: str
    summary: dict[str, Any]
    brief: str = ""  # the markdown without the step details (internal counters): what a terminal shows


StepPrices = Mapping[str, ModelPrice | None]


def step_cost(counters: Mapping[str, int], price: ModelPrice | None) -> float | None:
    """Cost of a step's tokens: those answered online at list prices, those answered through the
    Batch API at batch prices; None without a price."""
    if price is None:
        return None
    batch_p, batch_c = counters.get("batch_prompt_tokens", 0), counters.get("batch_completion_tokens", 0)
    online = price.cost(counters["prompt_tokens"] - batch_p, counters["completion_tokens"] - batch_c)
    batch = price.cost(batch_p, batch_c, batch=True) if batch_p or batch_c else 0.0
    return None if batch is None else online + batch


def _price_of(step: str, prices: Prices | StepPrices | None) -> ModelPrice | None:
    if prices is None or isinstance(prices, Prices):
        return price_for(None, prices) if prices is not None else None
    return prices.get(step)


def _step_row(record: StepRecord, prices: Prices | StepPrices | None) -> dict[str, Any]:
    s = record.summary
    # This run's counters: a cached step sent nothing.
    counters = {k: 0 if record.cached else int(s.extra.get(k, 0) or 0) for k in LLM_COUNTERS}
    known = set(LLM_COUNTERS) | {"failures"}
    return {
        "step": s.step,
        "status": "cached" if record.cached else "ran",
        "rows_in": s.rows_in,
        "rows_out": s.rows_out,
        "failed": s.failed,
        "skipped_upstream_failed": s.skipped_upstream_failed,
        "failures_by_reason": dict(s.failures_by_reason),
        "failures_by_kind": dict(s.failures_by_kind),
        **counters,
        "wall_seconds": round(record.wall_seconds, 3),
        "cost": step_cost(counters, _price_of(s.step, prices)),
        "simulated": s.simulated,
        "extra": {k: v for k, v in s.extra.items() if k not in known},
    }


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
    """The report of one run; ``simulated`` is also set when any step's summary says so.
    ``builtin_simulator``: whether no endpoint was configured (default: ``simulated``); it picks
    the banner's wording. ``sections``: more sections (title -> markdown) at the end."""
    rows = [_step_row(r, prices) for r in steps]
    builtin_simulator = simulated if builtin_simulator is None else builtin_simulator
    simulated = simulated or any(r.summary.simulated for r in steps)
    totals = {k: sum(r[k] for r in rows) for k in LLM_COUNTERS}
    totals["wall_seconds"] = round(sum(r["wall_seconds"] for r in rows), 3)
    costs = [r["cost"] for r in rows if r["cost"] is not None]
    totals["cost"] = sum(costs) if costs else None
    summary = {
        "simulated": simulated,
        "builtin_simulator": builtin_simulator,
        "dataset_rows": dataset_rows,
        "header": dict(header or {}),
        "steps": rows,
        "totals": totals,
    }
    more = "".join(f"\n## {name}\n\n{text.rstrip()}\n" for name, text in (sections or {}).items())
    return Report(markdown=_render(title, summary, prices) + more, summary=summary,
                  brief=_render(title, summary, prices, details=False) + more)


def _num(value: int | float) -> str:
    return f"{value:,}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _render(title: str, summary: dict[str, Any], prices: Prices | None, details: bool = True) -> str:
    lines = [f"# {title}", ""]
    if summary["simulated"]:
        lines += [f"> {SIMULATED_BANNER if summary['builtin_simulator'] else SIMULATED_ENDPOINT_BANNER}", ""]
    for key, value in summary["header"].items():
        lines.append(f"- **{key}**: {value}")
    if summary["dataset_rows"] is not None:
        lines.append(f"- **Rows in the final dataset**: {_num(summary['dataset_rows'])}")
    lines += [
        "",
        "## Steps",
        "",
        "| Step | Status | Rows in | Rows out | Failed | Skipped (failed upstream) | Requests | Retries "
        "| Cache hits | Prompt tokens | Completion tokens | Wall time (s) | Cost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["steps"]:
        lines.append(
            f"| {r['step']} | {r['status']} | {_num(r['rows_in'])} | {_num(r['rows_out'])} | {_num(r['failed'])} "
            f"| {_num(r['skipped_upstream_failed'])} | {_num(r['requests'])} | {_num(r['retries'])} "
            f"| {_num(r['cache_hits'])} | {_num(r['prompt_tokens'])} | {_num(r['completion_tokens'])} "
            f"| {r['wall_seconds']:.2f} | {_cost(r['cost'])} |"
        )
    t = summary["totals"]
    lines.append(
        f"| **total** | | | | | | {_num(t['requests'])} | {_num(t['retries'])} | {_num(t['cache_hits'])} "
        f"| {_num(t['prompt_tokens'])} | {_num(t['completion_tokens'])} | {t['wall_seconds']:.2f} | {_cost(t['cost'])} |"
    )
    endpoint = [f"{r['step']}: {_num(r['batch_requests'])} through the Batch API, {_num(r['refused_429'])} "
                f"refused with 429 (and retried)" for r in summary["steps"] if r["batch_requests"] or r["refused_429"]]
    if endpoint:
        lines += ["", *[f"- {line}" for line in endpoint]]
    if any(r["status"] == "cached" for r in summary["steps"]):
        lines += ["", "Cached steps reused the result of an earlier run with the same input and "
                      "settings: they made no requests in this run (their rows and failures are "
                      "those of that earlier run)."]
    lines += ["", "## Failures by reason", ""]
    failures = [(r["step"], reason, n) for r in summary["steps"] for reason, n in r["failures_by_reason"].items()]
    lines += [f"- {step}: {reason}: {_num(n)}" for step, reason, n in failures] or ["None."]
    kinds = {kind: sum(r["failures_by_kind"].get(kind, 0) for r in summary["steps"]) for kind in KIND_ADVICE}
    if any(kinds.values()):
        lines += ["", "By kind (what a rerun does with them):", ""]
        lines += [f"- {kind}: {_num(n)}: {KIND_ADVICE[kind]}" for kind, n in kinds.items() if n]
    short = [(r["step"], r["extra"]["short_rows"]) for r in summary["steps"] if "short_rows" in r["extra"]]
    if short:
        lines += ["", "## Shortfall of hard negatives", ""]
        lines += [f"- {step}: {_num(int(n))} row(s) got fewer negatives than asked (kept, marked `short`)"
                  for step, n in short]
    counters = [(r["step"], k, v) for r in summary["steps"] for k, v in r["extra"].items() if k != "short_rows"]
    if counters and details:
        lines += ["", "## Step details", ""]
        lines += [f"- {step}: {key} = {value}" for step, key, value in counters]
    lines += ["", "## Cost", ""]
    priced = [(r["step"], _price_of(r["step"], prices)) for r in summary["steps"] if r["requests"] or r["cost"]]
    if t["cost"] is None:
        lines.append("No token prices known for these models (set `prices` in the config for a cost estimate).")
    else:
        lines.append(f"{_cost(t['cost'])} for the requests of this run, tokens answered through the Batch API at "
                     "batch prices:")
        lines += [f"- {step}: {p.input_per_million:g} / {p.output_per_million:g} per million prompt / completion "
                  f"tokens ({p.source})" for step, p in priced if p is not None]
    return "\n".join(lines) + "\n"
