"""ReasonDistill: scenario + question + positive + hard negatives in, reasoning + answer out.

``process(df, input_text_key="text", input_question_key="question", input_scenario_key="scenario",
input_hardneg_key="hard_negatives", output_key="reasoning", output_answer_key="answer")`` adds:

* ``reasoning`` (the full step-by-step reasoning) and ``answer`` (the extracted final answer);
* ``document_order``: the order the documents were shown in, as indices into
  ``[positive, *hard_negatives]`` (0 is the positive), and ``positive_doc_number``: the
  1-based ``[Document i]`` label the positive had (``Int64``). The order is a permutation seeded
  by the row's question and positive, so the same row always gets the same prompt;
* ``rare_distill_{status,model,prompt_version,prompt_tokens,completion_tokens,attempts,simulated,raw}``
  and ``rare_distill_reasoning_form``: where the reasoning came from (``reasoning_content`` or
  ``reasoning``: a message field of its own, as reasoning models behind vLLM's reasoning parser,
  DeepSeek, Ollama or OpenRouter return it; ``inline`` ``<think>``; ``swallowed``: inline without
  the opening tag; ``untagged``).

Unchecked, each row draws ``num_samples`` samples (each its own row, ``sample_index``, when more
than one). When verification follows (the pipeline's ``verify`` step,
:mod:`rare_core.operators.verification`; ``check_follows``), each row draws its first sample
only: the check draws the rest, as it needs them. The operator API's ``verify=`` runs both in
one call. A teacher whose replies keep failing to parse stops the step (``role_guard``,
:class:`RoleUnusableError` of :mod:`rare_core.operators.llm_step`).

The teacher's sampling (:func:`teacher_request`, :func:`draw`, :class:`SampleRun`,
:func:`sample_columns`) is shared with the verification step, which re-samples rows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.estimate_model import (
    DISTILL_TOKENS, DISTILL_TOKENS_REASONING, TYPICAL_QUESTION_CHARS, TYPICAL_SCENARIO_CHARS, EstimateInputs,
    EstimatePart, Sampling, expected_completion, sampled, standin, standin_pool,
)
from rare_core.llm.types import LLMRequest, LLMResponse, RunTotals
from rare_core.operators.base import (
    CONTENT_ERROR, INPUT_ERROR, OK, REQUEST_ERROR, SKIPPED, active_mask, as_nullable_int, distinct_keys,
    failed_fields, frame_from_rows, guard_outputs, init_status, is_blank, mark_failed, require_columns, step_column,
    summarize,
)
from rare_core.operators.llm_step import (
    PROVENANCE_INTS, LLMOperator, Outcome, RoleGuard, RoleGuardConfig, ask_and_parse, llm_counters, provenance,
)
from rare_core.parsing import Reasoning, parse_reasoning
from rare_core.prompts import reason_distill as prompt
from rare_core.prompts.doc2query import truncate
from rare_core.step_spec import StepSpec
from rare_core.verify import Verdict, VerifyConfig

STEP = "distill"
SAMPLE_INDEX = "sample_index"
DOCUMENT_ORDER = "document_order"
POSITIVE_DOC_NUMBER = "positive_doc_number"


class ReasonDistillConfig(BaseModel):
    """Settings of the ReasonDistill step (they enter the step's cache key in the flow)."""

    model_config = ConfigDict(extra="forbid")

    max_doc_chars: int = Field(4000, ge=200, description="Budget per shown document, in characters.")
    max_attempts: int = Field(3, ge=1, le=10, description="LLM calls per row in all, re-asking after an unusable reply.")
    num_samples: int = Field(1, ge=1, le=16, description="Accepted samples kept per question, each its own row "
                                                         "(sample_index) when more than one.")
    require_positive_citation: bool = Field(
        False, description="Fail rows whose reasoning cites a negative's [Document i] but never the positive's.")
    role_guard: RoleGuardConfig = Field(default_factory=RoleGuardConfig,
                                        description="When a teacher or judge whose replies keep failing to parse "
                                                    "is stopped, before the rest is paid (each role counted apart).")


_CITED = re.compile(r"\bDocument\s+(\d+)\b", re.IGNORECASE)


def citation(reasoning: str, positive_number: int) -> str:
    """``positive`` (the reasoning refers to the positive's [Document i]), ``negatives_only``
    (it cites documents, never the positive) or ``none`` (it cites no document)."""
    cited = {int(n) for n in _CITED.findall(reasoning or "")}
    if positive_number in cited:
        return "positive"
    return "negatives_only" if cited else "none"


def _as_list(value) -> list[str]:
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, str):
        raise ValueError("hard negatives must be a list of texts, got a string")
    return [str(v) for v in value]


def parse_teacher(resp: LLMResponse) -> Reasoning:
    """The teacher's reply: thinking from a message field of its own, or inline in the content."""
    return parse_reasoning(resp.text, resp.reasoning, resp.reasoning_field)


class Keys(BaseModel):
    """The columns ReasonDistill (and the verification after it) read and write."""

    text: str = "text"
    question: str = "question"
    scenario: str = "scenario"
    hardneg: str = "hard_negatives"
    reasoning: str = "reasoning"
    answer: str = "answer"
    reference: str = "reference_answer"

    def process_kwargs(self) -> dict[str, str]:
        """As ``process`` takes them."""
        return {"input_text_key": self.text, "input_question_key": self.question,
                "input_scenario_key": self.scenario, "input_hardneg_key": self.hardneg, "output_key": self.reasoning,
                "output_answer_key": self.answer, "input_reference_key": self.reference}


def teacher_request(row: dict, keys: Keys, max_doc_chars: int) -> tuple[LLMRequest, list[int]] | str:
    """The teacher's first request for a row and the order its documents are shown in
    (``document_order``), or why the row cannot be asked (an input error)."""
    question, positive, negatives = row.get(keys.question), row.get(keys.text), row.get(keys.hardneg)
    scenario = row.get(keys.scenario, "")
    scenario = "" if is_blank(scenario) else scenario
    if not all(isinstance(v, str) and not is_blank(v) for v in (question, positive)) or not isinstance(scenario, str):
        return "invalid input: question or positive text is empty or missing"
    try:
        docs = [positive, *_as_list(negatives)]
    except (TypeError, ValueError) as exc:
        return f"invalid input: {exc}"
    order = prompt.shuffled_order(f"{question}\x00{positive}", len(docs))
    request = LLMRequest(messages=prompt.build_messages(scenario, question, [docs[j] for j in order], max_doc_chars),
                         prompt_version=prompt.VERSION)
    return request, order


@dataclass
class SampleRun:
    """The samples of one row: the accepted ones, the rejected ones, the last outcome, and the
    totals; where the judge gave no verdict (which ends the row's sampling), its outcome and the
    answer it was shown."""

    kept: list = field(default_factory=list)  # (sample index, Reasoning)
    rejected_samples: list = field(default_factory=list)  # (sample index, Reasoning, why)
    samples: int = 0
    truncations: int = 0
    last: Outcome | None = None
    last_verdict: Verdict | None = None
    total: Outcome = field(default_factory=Outcome)
    judge_failure: Outcome | None = None
    unjudged: Reasoning | None = None

    @property
    def rejected(self) -> int:
        return len(self.rejected_samples)

    def add(self, k: int, outcome: Outcome, verdict: Verdict | None, judge_failure: Outcome | None = None) -> None:
        self.samples += 1
        self.truncations += outcome.truncations
        self.last, self.last_verdict = outcome, verdict
        t = self.total
        t.attempts += outcome.attempts
        t.prompt_tokens += outcome.prompt_tokens
        t.completion_tokens += outcome.completion_tokens
        t.model, t.simulated = outcome.model or t.model, t.simulated or outcome.simulated
        if judge_failure is not None:
            self.judge_failure, self.unjudged = judge_failure, outcome.parsed
        elif outcome.parsed is not None and verdict is not None and verdict.accepted:
            self.kept.append((k, outcome.parsed))
        elif outcome.parsed is not None:
            self.rejected_samples.append((k, outcome.parsed, verdict.reason if verdict else ""))


# A check of one round: (row positions, their outcomes) -> a verdict per outcome (None: no
# verdict), the judge's outcome where it gave none, and the checker's totals.
Check = Callable[[list[int], list[Outcome]], tuple[list[Verdict | None], list[Outcome | None], RunTotals]]


def _accept_parsed(rows: list[int], outcomes: list[Outcome]):
    """No check: every parsed sample is accepted."""
    return [Verdict(accepted=True, method="none") if o.parsed else None for o in outcomes], [None] * len(rows), RunTotals()


def draw(llm, requests: dict[int, LLMRequest], *, wanted: int, limit: int, max_attempts: int, guard: RoleGuard,
         resample_temperature: float = 1.0, check: Check | None = None, first: dict[int, Outcome] | None = None,
         on_progress=None, retry_unusable_cached: bool = False) -> tuple[dict[int, SampleRun], RunTotals, RunTotals]:
    """Rounds of teacher samples: every row not yet done draws one more (its own seed and cache
    key, at ``resample_temperature`` after the first) until it has ``wanted`` accepted by
    ``check`` (default: every parsed sample) or ``limit`` drawn, or the judge gave no verdict on
    its answer, or its request failed. ``first``: outcomes of round 0 already drawn (by the step
    before), not asked again. Round k is one pipelined batch; its checks, one batch of the
    checker's. -> (runs by row, the teacher's totals, the checker's totals)."""
    runs = {pos: SampleRun() for pos in requests}
    totals, check_totals = RunTotals(), RunTotals()
    check = check or _accept_parsed
    pending = list(requests)
    for k in range(limit):
        if not pending:
            break
        if k == 0 and first is not None:
            outcomes = [first[pos] for pos in pending]
        else:
            round_requests = [requests[pos] if k == 0 else requests[pos].model_copy(
                update={"sample_index": k, "temperature": resample_temperature}) for pos in pending]
            outcomes, batch_totals = ask_and_parse(llm, round_requests, parse_teacher, max_attempts,
                                                   on_progress if k == 0 else None,
                                                   retry_unusable_cached=retry_unusable_cached, guard=guard)
            totals = totals.add(batch_totals)
        verdicts, unjudged, checked = check(pending, outcomes)
        check_totals = check_totals.add(checked)
        still = []
        for pos, outcome, verdict, judge_failure in zip(pending, outcomes, verdicts, unjudged):
            run = runs[pos]
            run.add(k, outcome, verdict, judge_failure)
            if outcome.kind == REQUEST_ERROR or judge_failure is not None:
                continue  # the endpoint or the judge did not answer: another sample would not help
            if len(run.kept) < wanted:
                still.append(pos)
        pending = still
    return runs, totals, check_totals


def sample_columns(parsed: Reasoning, order: list[int], keys: Keys, require_positive_citation: bool) -> dict:
    """The columns of a row holding one accepted sample: its reasoning and answer, the documents'
    order, where the reasoning came from, what it cites (a failure when it cites only negatives
    and ``require_positive_citation``)."""
    number = order.index(0) + 1
    cites = citation(parsed.reasoning, number)
    row = {keys.reasoning: parsed.reasoning, keys.answer: parsed.answer, DOCUMENT_ORDER: order,
           POSITIVE_DOC_NUMBER: number, step_column(STEP, "status"): OK, step_column(STEP, "raw"): None,
           step_column(STEP, "reasoning_form"): parsed.form, step_column(STEP, "citation"): cites}
    if cites == "negatives_only" and require_positive_citation:
        row.update(failed_fields(STEP, "citation: the reasoning cites only negatives, never the positive", CONTENT_ERROR))
    return row


def citation_counts(out: pd.DataFrame) -> dict[str, int]:
    citations = out.get(step_column(STEP, "citation"), pd.Series(dtype=object))
    return {"cites_negatives_only": int((citations == "negatives_only").sum()),
            "cites_no_document": int((citations == "none").sum())}


class ReasonDistill(LLMOperator):
    """See the module docstring. ``check_follows``: the pipeline's verification runs next, so
    each row draws its first sample only. ``verify`` (operator API): check the answers in the
    same call (:class:`~rare_core.operators.verification.Verification`, with ``judge_serving``
    the judge role's client); default none, so that the operator API behaves as the system we
    implement."""

    step_name = STEP
    role = "teacher"
    prompt_version = prompt.VERSION
    config_class = ReasonDistillConfig
    config: ReasonDistillConfig

    def __init__(self, llm_serving, config=None, on_progress=None, retry_failed: bool = False,
                 judge_serving=None, verify: VerifyConfig | None = None, check_follows: bool = False,
                 **settings) -> None:
        super().__init__(llm_serving, config, on_progress, retry_failed, **settings)
        self.judge = judge_serving or llm_serving
        self.verify = verify or VerifyConfig(method="none")
        self.check_follows = check_follows

    def output_columns(self, output_key: str = "reasoning", output_answer_key: str = "answer", **_: object) -> list[str]:
        extra = [SAMPLE_INDEX] if self.config.num_samples > 1 and not self.check_follows else []
        return [output_key, output_answer_key, DOCUMENT_ORDER, POSITIVE_DOC_NUMBER, *extra]

    def process(self, df: pd.DataFrame, input_text_key: str = "text", input_question_key: str = "question",
                input_scenario_key: str = "scenario", input_hardneg_key: str = "hard_negatives",
                output_key: str = "reasoning", output_answer_key: str = "answer",
                input_reference_key: str = "reference_answer",
                max_attempts: int | None = None, overwrite: bool = False) -> pd.DataFrame:
        keys = Keys(text=input_text_key, question=input_question_key, scenario=input_scenario_key,
                    hardneg=input_hardneg_key, reasoning=output_key, answer=output_answer_key,
                    reference=input_reference_key)
        if self.verify.method == "none":
            return self._distill(df, keys, max_attempts, overwrite)
        # The operator API's one call: the first samples, then the check, which draws the rest.
        from rare_core.operators.verification import Verification  # it imports this module

        require_columns(df, [input_reference_key], f"{STEP} (verify.method={self.verify.method})")
        first = ReasonDistill(self.llm, self.config, self.on_progress, self.retry_failed, check_follows=True)
        out = first._distill(df, keys, max_attempts, overwrite)
        check = Verification(self.llm, self.verify, retry_failed=self.retry_failed, judge_serving=self.judge,
                             distill=self.config)
        checked = check.process(out, **keys.process_kwargs())
        self.last_summary = check.merged_with(first.last_summary)
        return checked

    def _distill(self, df: pd.DataFrame, keys: Keys, max_attempts: int | None, overwrite: bool) -> pd.DataFrame:
        started = time.perf_counter()
        distinct_keys(STEP, input_text_key=keys.text, input_question_key=keys.question,
                      input_scenario_key=keys.scenario, input_hardneg_key=keys.hardneg,
                      output_key=keys.reasoning, output_answer_key=keys.answer)
        require_columns(df, [keys.text, keys.question, keys.hardneg], STEP)
        guard_outputs(df, self.output_columns(keys.reasoning, keys.answer), STEP, overwrite)
        df = init_status(df)
        active = active_mask(df)
        requests, orders = {}, {}
        records = df.to_dict("records")
        if self.check_follows:
            require_columns(df, [keys.reference], f"{STEP} (checked next)")
        for pos in df.index[active]:
            if self.check_follows and is_blank(records[pos].get(keys.reference)):
                mark_failed(df, pos, STEP, "invalid input: no reference answer to check against", INPUT_ERROR)
                continue
            made = teacher_request(records[pos], keys, self.config.max_doc_chars)
            if isinstance(made, str):
                mark_failed(df, pos, STEP, made, INPUT_ERROR)
                continue
            requests[pos], orders[pos] = made
        wanted = 1 if self.check_follows else self.config.num_samples
        runs, totals, _ = draw(self.llm, requests, wanted=wanted, limit=wanted,
                               max_attempts=max_attempts or self.config.max_attempts, guard=self.role_guard(),
                               on_progress=self.on_progress, retry_unusable_cached=self.retry_failed)
        status_col, raw_col = step_column(STEP, "status"), step_column(STEP, "raw")
        empty = {keys.reasoning: None, keys.answer: None, DOCUMENT_ORDER: None, POSITIVE_DOC_NUMBER: None}
        several = self.config.num_samples > 1 and not self.check_follows
        out_rows: list[dict] = []
        for pos, base in enumerate(df.to_dict("records")):
            run = runs.get(pos)
            if run is None:  # failed upstream, or invalid input marked above
                if not active[pos]:
                    base[status_col] = SKIPPED
                out_rows.append({**base, **empty})
                continue
            order = orders[pos]
            prov = provenance(STEP, run.total, prompt.VERSION)
            if not run.kept:
                last = run.last
                out_rows.append({**base, **prov, **empty, DOCUMENT_ORDER: order, POSITIVE_DOC_NUMBER: order.index(0) + 1,
                                 **failed_fields(STEP, last.error or "no usable answer", last.kind or CONTENT_ERROR),
                                 raw_col: last.raw})
                continue
            for sample, parsed in run.kept:
                row = {**base, **prov, **sample_columns(parsed, order, keys, self.config.require_positive_citation)}
                if several:
                    row[SAMPLE_INDEX] = sample
                out_rows.append(row)
        out = frame_from_rows(df, out_rows)
        as_nullable_int(out, [POSITIVE_DOC_NUMBER, SAMPLE_INDEX, *(step_column(STEP, f) for f in PROVENANCE_INTS)])
        extra = {"deduplicated": totals.deduplicated, "truncations": sum(r.truncations for r in runs.values()),
                 **citation_counts(out)}
        self.last_summary = summarize(STEP, df, out, active, started, totals.simulated, extra, llm_counters(totals))
        return out


def asked_rows(inputs: EstimateInputs) -> tuple[int, list[tuple[str, object]]]:
    """The rows the teacher is asked about, as the operator decides them, and (given questions)
    each asked row's (question, reference): a given row is sent when its text and question are
    text and, when checked, its reference is not blank; generated ones: questions x documents."""
    config = inputs.config
    if not config.questions_given:
        return len(inputs.texts) * config.doc2query.num_questions, []
    checking = config.verify.method != "none"
    k, documents = config.columns, inputs.documents
    references = documents[k.gold_answer].tolist() if checking else [None] * len(documents)
    given = [(question, reference) for text, question, reference
             in zip(documents[k.text].tolist(), documents[k.question].tolist(), references)
             if inputs.is_text(text) and inputs.is_text(question) and not (checking and is_blank(reference))]
    return len(given), given


def standin_messages(texts: list[str], max_doc_chars: int, num_neg: int) -> tuple[list[dict], float]:
    """One prompt with stand-in texts, and the mean truncated document length: 1 + ``num_neg``
    documents as long as the corpus's mean document cut to ``max_doc_chars``, a scenario and a
    question of the typical lengths, all cut from the corpus's own text."""
    lengths = [len(truncate(t, max_doc_chars)) for t in texts]
    mean_len = sum(lengths) / len(lengths)
    pool = standin_pool(texts, max_doc_chars)
    slots = 1 + num_neg
    stride = max(1, len(pool) // (slots + 2))
    doc_len = round(mean_len)
    docs = [standin(pool, i * stride, doc_len) for i in range(slots)]
    scenario = standin(pool, slots * stride, TYPICAL_SCENARIO_CHARS)
    question = standin(pool, (slots + 1) * stride, TYPICAL_QUESTION_CHARS - 1) + "?"
    # The stand-ins are already as long as a cut document: render them as they are.
    return prompt.build_messages(scenario, question, docs, max(max_doc_chars, doc_len)), mean_len


def teacher_prompt_tokens(inputs: EstimateInputs, counter) -> tuple[int, float | None]:
    """Prompt tokens of one teacher request (rendered with stand-ins), and the mean cut document."""
    config = inputs.config
    if not inputs.texts:
        return 0, None
    messages, mean_len = standin_messages(inputs.texts, config.distill.max_doc_chars, config.hardneg.num_neg)
    return counter.count_messages(messages), mean_len


def estimate(inputs: EstimateInputs) -> EstimatePart:
    """The teacher's first samples: one per question (``num_samples`` unchecked; the verification
    step estimates the re-samples), its prompt (a scenario, a question and 1 + ``hardneg.num_neg``
    documents cut to ``max_doc_chars``) rendered once with stand-in texts cut from the corpus
    (the negatives are other documents of it, so each slot is as long as its mean cut document)
    and counted."""
    config = inputs.config
    asked, _ = asked_rows(inputs)
    llm = config.llm_for(SPEC.role)
    counter = inputs.counter(llm.model)
    per_prompt, mean_len = teacher_prompt_tokens(inputs, counter)
    per = expected_completion(llm.model, llm.generation.max_tokens, DISTILL_TOKENS, DISTILL_TOKENS_REASONING)
    samples = 1 if config.verify.method != "none" else config.distill.num_samples
    num_neg, max_chars = config.hardneg.num_neg, config.distill.max_doc_chars
    teacher = sampled(STEP, SPEC.role, llm, counter, asked, asked * per_prompt, Sampling(samples, samples), per,
                      docs_per_prompt=1 + num_neg, mean_doc_chars=None if mean_len is None else round(mean_len, 1),
                      assumed_scenario_question_chars=TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS)
    notes = [
        f"{STEP} prompt: scenario + question assumed ~{TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS} chars, "
        f"{1 + num_neg} documents each as long as the corpus's mean document cut to {max_chars} chars "
        f"({teacher.mean_doc_chars or 0:,.0f} chars); every question assumed to reach {SPEC.label} with its full "
        "share of negatives",
        f"expected completion per request: {STEP} {per:,} ({'reasoning' if teacher.reasoning_model else 'non-reasoning'}"
        f" model); re-asks of unusable replies (up to distill.max_attempts={config.distill.max_attempts} per sample) "
        "and doubled budgets after a cut-off reply come on top of the upper bound"]
    if config.hardneg.corpus_path:
        notes.append("hardneg.corpus_path is set: negatives assumed as long as the input's documents")
    return EstimatePart([teacher], notes)


SPEC = StepSpec(
    name=STEP, label="ReasonDistill", task_name="reason-distill", section="distill",
    settings_model=ReasonDistillConfig, operator=ReasonDistill, role="teacher",
    introduces={"teacher": "ReasonDistill: writes the reasoning and the answer."},
    keys=lambda c: {"input_text_key": c.columns.text, "input_question_key": c.columns.question,
                    "input_scenario_key": c.columns.scenario, "input_hardneg_key": c.columns.hard_negatives,
                    "output_key": c.columns.reasoning, "output_answer_key": c.columns.answer,
                    "input_reference_key": c.reference_key},
    # Checked next (the verify step): the first sample of each row only.
    extra_args=lambda c, clients: {"check_follows": c.verify.method != "none"},
    cache_inputs=lambda c: {"check_follows": c.verify.method != "none"},
    cache_exclude=frozenset({"role_guard"}), estimate=estimate,
    dataset=lambda c: {SAMPLE_INDEX: SAMPLE_INDEX, DOCUMENT_ORDER: DOCUMENT_ORDER, POSITIVE_DOC_NUMBER: POSITIVE_DOC_NUMBER,
                       c.columns.reasoning: c.columns.reasoning, c.columns.answer: c.columns.answer,
                       c.reference_key: c.reference_key})
