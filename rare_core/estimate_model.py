"""The pieces a step's estimate is made of (:attr:`rare_core.step_spec.StepSpec.estimate`).

In: what a step's estimate function is given (:class:`EstimateInputs`: the run's config, its
documents and their valid texts, the assumed acceptance rate, a token counter per model).
Out: what it returns (:class:`EstimatePart`: one :class:`StepEstimate` per LLM role it calls,
and its notes). :mod:`rare_core.estimate` adds the parts up and prices them.

Helpers a step's estimate uses: :func:`expected_samples` (rejection sampling),
:func:`count_all` (render and count many prompts), :func:`standin` / :func:`standin_pool`
(texts of a given length cut from the corpus itself, so they tokenize like it), and
:func:`sampled` (a role asked once per sample of each row). The typical sizes assumed are
constants here, in one place. Framework-free: no Prefect, no config import.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, NamedTuple

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.operators.base import is_blank
from rare_core.prompts.doc2query import truncate
from rare_core.tokens import TokenCounter, token_counter_for

# --- The assumptions, in one place ------------------------------------------------------------
# Typical completion sizes, in tokens per request (capped by max_tokens):
# * Doc2Query answers {"scenario": 2-4 sentences, "question": one sentence} per question asked:
#   ~120 tokens per question with the JSON around it.
# * ReasonDistill answers <think>...</think><answer>...</answer>: ~600 tokens from a chat model;
#   a reasoning model also bills its hidden chain of thought as completion tokens: ~4,000.
# * The judge answers {"verdict": ..., "reason": "<one sentence>"}: ~40 tokens; a reasoning model
#   thinks before it, ~1,000 for comparing two short answers.
DOC2QUERY_TOKENS_PER_QUESTION = 120
DISTILL_TOKENS = 600
DISTILL_TOKENS_REASONING = 4000
JUDGE_TOKENS = 40
JUDGE_TOKENS_REASONING = 1000
# The share of checked samples expected to be accepted when the user does not say: an even
# chance, neither a strong teacher's nor a weak one's. A trial run measures it: its report's
# verify_accepted / samples_drawn (with distill.num_samples 1).
DEFAULT_ACCEPTANCE_RATE = 0.5
# A generated scenario (2-4 sentences) and question (one sentence), in characters: together
# about the 120 tokens Doc2Query is expected to write for them.
TYPICAL_SCENARIO_CHARS = 320
TYPICAL_QUESTION_CHARS = 130
# Doc2Query's reference answer ("one short sentence or phrase") and the teacher's final answer
# (a sentence or two after its reasoning), in characters: the texts the judge is shown.
TYPICAL_REFERENCE_CHARS = 100
TYPICAL_ANSWER_CHARS = 200
# Documents the stand-in texts are cut from (evenly spaced over the corpus).
STANDIN_SAMPLE = 200
# Documents rendered and counted per batch (bounds memory on a large corpus).
COUNT_CHUNK = 2000

# Model names of reasoning models: o1/o3/o4 (any variant), gpt-5 (not its -chat variant),
# deepseek-reasoner / r1, qwq, and any name saying "thinking" or "reason".
_REASONING = re.compile(
    r"(^|[/_.:-])o[134]($|[-_.:])|(^|[/_.:-])gpt-5(?!.*chat)|deepseek-reasoner|(^|[/_.:-])r1($|[-_.:])|"
    r"qwq|thinking|reason", re.IGNORECASE)


def is_reasoning_model(model: str | None) -> bool:
    """Whether ``model`` looks like a reasoning model (see :data:`_REASONING`)."""
    return bool(model) and _REASONING.search(model) is not None


def expected_completion(model: str | None, max_tokens: int, typical: int, typical_reasoning: int | None = None) -> int:
    """Expected completion tokens of one request: ``typical`` (``typical_reasoning`` for a
    reasoning model, where given), capped by ``max_tokens``."""
    if typical_reasoning is not None and is_reasoning_model(model):
        typical = typical_reasoning
    return min(typical, max_tokens)


def expected_samples(acceptance_rate: float, limit: int, wanted: int = 1) -> float:
    """Expected samples one row draws when each is accepted with probability ``acceptance_rate``,
    independently, and the row stops at ``wanted`` accepted or ``limit`` drawn: the sum over
    k < ``limit`` of P(fewer than ``wanted`` accepted among k samples). At 1: min(limit, wanted);
    at 0: ``limit``."""
    if not 0 <= acceptance_rate <= 1:
        raise ValueError(f"acceptance_rate must be between 0 and 1, got {acceptance_rate}")
    p = acceptance_rate
    return sum(sum(math.comb(k, j) * p ** j * (1 - p) ** (k - j) for j in range(min(wanted, k + 1)))
               for k in range(limit))


class StepEstimate(BaseModel):
    """What one LLM role of one step would send and cost: each figure expected and an upper
    bound (``*_max``). Costs: expected (``cost_list``, ``cost_batch``) and the upper bound
    (``*_max``), in the estimate's currency; None when no price is known (or, for batch, when the
    model has no batch price)."""

    step: str  # the line's name: the step's, or its role's where a step calls several (the judge)
    role: str  # the LLM role (rare_core.config.LLMRoles) whose endpoint and prices apply
    # Where a run's actual figures are: the StepSummary of step ``actual_step``: its typed
    # ``llm`` counters, or with ``actual_prefix`` ``{actual_prefix}requests``... in its ``extra``
    # (a role the step calls besides its own: ReasonDistill's ``judge_*``).
    actual_step: str
    actual_prefix: str = ""
    model: str
    mode: Literal["online", "batch"] = "online"  # the role's llm.mode: which of list / batch cost applies
    simulated: bool = False  # no endpoint for this role: the free built-in simulator would answer
    token_counter: str
    requests: int = 0  # expected
    requests_max: int = 0
    prompt_tokens: int = 0  # expected
    prompt_tokens_max: int = 0
    prompt_tokens_per_request: float = 0.0
    completion_tokens_expected: int = 0
    completion_tokens_max: int = 0
    completion_tokens_expected_per_request: int = 0
    max_tokens: int = 0
    reasoning_model: bool = False
    cost_list: float | None = None
    cost_batch: float | None = None
    cost_list_max: float | None = None
    cost_batch_max: float | None = None
    cost_expected: float | None = None  # cost_batch in batch mode, else cost_list
    cost_max: float | None = None  # cost_batch_max in batch mode, else cost_list_max
    price_source: str | None = None
    currency: str | None = None  # of the costs; None when no price is known
    # Rejection sampling (the teacher and the judge): the rows the role is asked about, and the
    # samples (or judge calls) per row, expected and at most.
    rows: int | None = None
    samples_per_row_expected: float | None = None
    samples_per_row_max: int | None = None
    # Prompt assumptions of a step whose prompts are not all rendered (ReasonDistill's).
    docs_per_prompt: int | None = None
    mean_doc_chars: float | None = Field(None, description="Mean length of a document cut to distill.max_doc_chars.")
    assumed_scenario_question_chars: int | None = Field(
        None, description="Typical length assumed for the generated scenario + question.")


class EstimatePart(NamedTuple):
    """A step's estimate: a line per LLM role it calls, and its notes."""

    lines: list[StepEstimate]
    notes: list[str]


def _is_text(value: object) -> bool:
    return isinstance(value, str) and not is_blank(value)


@dataclass
class EstimateInputs:
    """What every step's estimate is given: the run's ``config``, its ``documents``, their
    ``texts`` (those an operator sends: blank and non-text ones fail without a request), the
    assumed ``acceptance_rate`` of checked samples, and :meth:`counter` (one per model)."""

    config: Any
    documents: pd.DataFrame
    acceptance_rate: float
    texts: list[str] = field(init=False)
    counter_notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.texts = [t for t in self.documents[self.config.columns.text].tolist() if _is_text(t)]

    def counter(self, model: str | None) -> TokenCounter:
        """The token counter of ``model`` (its note, once, in :attr:`counter_notes`)."""
        counter, note = token_counter_for(model)
        if note and note not in self.counter_notes:
            self.counter_notes.append(note)
        return counter

    @staticmethod
    def is_text(value: object) -> bool:
        return _is_text(value)


def count_all(counter: TokenCounter, conversations: Iterable[list[dict]]) -> int:
    """Prompt tokens of ``conversations``, rendered and counted :data:`COUNT_CHUNK` at a time."""
    total, chunk = 0, []
    for conversation in conversations:
        chunk.append(conversation)
        if len(chunk) == COUNT_CHUNK:
            total, chunk = total + sum(counter.count_messages_many(chunk)), []
    return total + sum(counter.count_messages_many(chunk))


def standin(pool: str, start: int, length: int) -> str:
    """``length`` characters of ``pool`` from ``start`` on (wrapping around)."""
    if length <= 0 or not pool:
        return ""
    start %= len(pool)
    reps = (start + length) // len(pool) + 1
    return (pool * reps)[start:start + length]


def standin_pool(texts: list[str], max_doc_chars: int) -> str:
    """The text stand-ins are cut from: up to :data:`STANDIN_SAMPLE` documents evenly spaced over
    the corpus, each cut to ``max_doc_chars``."""
    step = max(1, len(texts) // STANDIN_SAMPLE)
    return "\n\n".join(truncate(t, max_doc_chars) for t in texts[::step][:STANDIN_SAMPLE])


def llm_line(step: str, role: str, llm: Any, counter: TokenCounter, per_request: int, actual_step: str | None = None,
             actual_prefix: str = "", **figures: Any) -> StepEstimate:
    """A :class:`StepEstimate` of ``role`` (its endpoint settings ``llm``) with the given
    ``figures``, its expected completion ``per_request`` (capped by ``max_tokens``)."""
    return StepEstimate(
        step=step, role=role, actual_step=actual_step or step, actual_prefix=actual_prefix, model=llm.model or "",
        mode=llm.mode, simulated=not llm.base_url, token_counter=counter.name, max_tokens=llm.generation.max_tokens,
        completion_tokens_expected_per_request=per_request, reasoning_model=is_reasoning_model(llm.model), **figures)


class Sampling(NamedTuple):
    """Samples per row of a role under rejection sampling: expected, and at most."""

    expected: float
    limit: int


def sampled(step: str, role: str, llm: Any, counter: TokenCounter, rows: int, one_round: int, sampling: Sampling,
            per_request: int, **extra: Any) -> StepEstimate:
    """A role asked once per sample of each of ``rows`` rows; ``one_round``: the prompt tokens of
    one request per row; ``per_request``: the expected completion of one."""
    requests = rows * sampling.expected
    return llm_line(
        step, role, llm, counter, per_request,
        requests=round(requests), requests_max=rows * sampling.limit,
        prompt_tokens=round(one_round * sampling.expected), prompt_tokens_max=one_round * sampling.limit,
        prompt_tokens_per_request=one_round / rows if rows else 0.0,
        completion_tokens_expected=round(requests * per_request),
        completion_tokens_max=rows * sampling.limit * llm.generation.max_tokens,
        rows=rows, samples_per_row_expected=round(sampling.expected, 3), samples_per_row_max=sampling.limit, **extra)
