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

With verification (``verify``), a row whose answer the judge gave no verdict on (its reply
unparseable after the re-ask, or its request failed) is the judge's failure, not a wrong
answer: the teacher is not asked again for it; the row fails as ``judge: ...`` and keeps the
teacher's reasoning and answer (and the judge's reply in ``rare_verify_raw``). A teacher or a
judge whose replies keep failing to parse stops the step (``role_guard``,
:class:`RoleUnusableError` of :mod:`rare_core.operators.llm_step`).
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from dataclasses import dataclass, field

from rare_core.llm.types import LLMRequest, LLMResponse, RunTotals
from rare_core.operators.base import (
    CONTENT_ERROR, ERROR, FAILED, INPUT_ERROR, OK, REJECTED_ERROR, REQUEST_ERROR, SKIPPED, active_mask,
    as_nullable_int, distinct_keys, failed_fields, failure_counts, guard_outputs,
    frame_from_rows, init_status, is_blank, mark_failed, require_columns, step_column, summarize,
)
from rare_core.operators.llm_step import (
    PROVENANCE_INTS, LLMOperator, Outcome, RoleGuard, RoleGuardConfig, ask_and_parse, llm_counters, provenance,
)
from rare_core.parsing import Reasoning, parse_reasoning
from rare_core.prompts import reason_distill as prompt
from rare_core.estimate_model import (
    DISTILL_TOKENS, DISTILL_TOKENS_REASONING, JUDGE_TOKENS, JUDGE_TOKENS_REASONING, TYPICAL_ANSWER_CHARS,
    TYPICAL_QUESTION_CHARS, TYPICAL_REFERENCE_CHARS, TYPICAL_SCENARIO_CHARS, EstimateInputs, EstimatePart, Sampling,
    count_all, expected_completion, expected_samples, sampled, standin, standin_pool,
)
from rare_core.prompts.doc2query import truncate
from rare_core.step_spec import StepSpec
from rare_core.verify import PROMPT_VERSION as JUDGE_VERSION
from rare_core.verify import Verdict, VerifyConfig, exact_verdict, judge_messages, needs_judge, parse_judgement

STEP = "distill"
VERIFY = "verify"  # the bookkeeping of the check: rare_verify_{status,verdict,method,reason,samples,raw}
JUDGE = "judge"  # the role that checks open answers; its failures are reported under its name
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


def _parse(resp: LLMResponse) -> Reasoning:
    """The teacher's reply: thinking from a message field of its own, or inline in the content."""
    return parse_reasoning(resp.text, resp.reasoning, resp.reasoning_field)


class ReasonDistill(LLMOperator):
    """See the module docstring. ``judge_serving``: the client of the judge role, for answers
    checked by the judge (``verify.method`` judge or auto); ``verify``: :class:`VerifyConfig`
    (default ``none`` here, so that the operator API behaves as the system we implement; the
    pipeline passes its ``verify`` section)."""

    step_name = STEP
    role = "teacher"
    prompt_version = prompt.VERSION
    config_class = ReasonDistillConfig
    config: ReasonDistillConfig

    def __init__(self, llm_serving, config=None, on_progress=None, retry_failed: bool = False,
                 judge_serving=None, verify: VerifyConfig | None = None, **settings) -> None:
        super().__init__(llm_serving, config, on_progress, retry_failed, **settings)
        self.judge = judge_serving or llm_serving
        self.verify = verify or VerifyConfig(method="none")

    def output_columns(self, output_key: str = "reasoning", output_answer_key: str = "answer", **_: object) -> list[str]:
        extra = [SAMPLE_INDEX] if self.config.num_samples > 1 else []
        return [output_key, output_answer_key, DOCUMENT_ORDER, POSITIVE_DOC_NUMBER, *extra]

    def process(self, df: pd.DataFrame, input_text_key: str = "text", input_question_key: str = "question",
                input_scenario_key: str = "scenario", input_hardneg_key: str = "hard_negatives",
                output_key: str = "reasoning", output_answer_key: str = "answer",
                input_reference_key: str = "reference_answer",
                max_attempts: int | None = None, overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        distinct_keys(STEP, input_text_key=input_text_key, input_question_key=input_question_key,
                      input_scenario_key=input_scenario_key, input_hardneg_key=input_hardneg_key,
                      output_key=output_key, output_answer_key=output_answer_key)
        require_columns(df, [input_text_key, input_question_key, input_hardneg_key], STEP)
        checking = self.verify.method != "none"
        if checking:
            require_columns(df, [input_reference_key], f"{STEP} (verify.method={self.verify.method})")
        guard_outputs(df, self.output_columns(output_key, output_answer_key), STEP, overwrite)
        df = init_status(df)
        active = active_mask(df)
        todo, requests, orders = [], [], {}
        has_scenario = input_scenario_key in df.columns
        for pos in df.index[active]:
            question, positive, negatives = (df.at[pos, c] for c in (input_question_key, input_text_key, input_hardneg_key))
            scenario = df.at[pos, input_scenario_key] if has_scenario else ""
            scenario = "" if is_blank(scenario) else scenario
            if not all(isinstance(v, str) and not is_blank(v) for v in (question, positive)) or not isinstance(scenario, str):
                mark_failed(df, pos, STEP, "invalid input: question or positive text is empty or missing", INPUT_ERROR)
                continue
            if checking and is_blank(df.at[pos, input_reference_key]):
                mark_failed(df, pos, VERIFY, "invalid input: no reference answer to check against", INPUT_ERROR)
                continue
            try:
                docs = [positive, *_as_list(negatives)]
            except (TypeError, ValueError) as exc:
                mark_failed(df, pos, STEP, f"invalid input: {exc}", INPUT_ERROR)
                continue
            order = prompt.shuffled_order(f"{question}\x00{positive}", len(docs))
            orders[pos] = order
            todo.append(pos)
            requests.append(LLMRequest(
                messages=prompt.build_messages(scenario, question, [docs[j] for j in order], self.config.max_doc_chars),
                prompt_version=prompt.VERSION))
        references = {pos: df.at[pos, input_reference_key] for pos in todo} if checking else {}
        questions = {pos: df.at[pos, input_question_key] for pos in todo}
        guards = {role: self.role_guard(role) for role in (self.role, JUDGE)}
        runs, totals, judged = self._sample(todo, requests, references, questions, max_attempts, guards)

        status_col, raw_col = step_column(STEP, "status"), step_column(STEP, "raw")
        empty = {output_key: None, output_answer_key: None, DOCUMENT_ORDER: None, POSITIVE_DOC_NUMBER: None}
        out_rows: list[dict] = []
        for pos, base in enumerate(df.to_dict("records")):
            run = runs.get(pos)
            if run is None:  # failed upstream, or invalid input marked above
                if not active[pos]:
                    base[status_col] = SKIPPED
                out_rows.append({**base, **empty})
                continue
            order = orders[pos]
            shown = {DOCUMENT_ORDER: order, POSITIVE_DOC_NUMBER: order.index(0) + 1}
            prov = {**provenance(STEP, run.total, prompt.VERSION), **run.verify_columns(checking, self.verify.method)}
            if not run.kept:
                row = {**base, **prov, **empty, **shown, **run.failure(checking, self.verify.max_samples),
                       raw_col: run.last.raw}
                if run.unjudged is not None:  # the teacher's answer stays with the row the judge failed
                    row.update({output_key: run.unjudged.reasoning, output_answer_key: run.unjudged.answer,
                                raw_col: None, step_column(STEP, "reasoning_form"): run.unjudged.form,
                                step_column(VERIFY, "raw"): run.judge_failure.raw})
                out_rows.append(row)
                continue
            for k, (sample, parsed) in enumerate(run.kept):
                cites = citation(parsed.reasoning, shown[POSITIVE_DOC_NUMBER])
                row = {**base, **prov, **shown, output_key: parsed.reasoning, output_answer_key: parsed.answer,
                       status_col: OK, raw_col: None, step_column(STEP, "reasoning_form"): parsed.form,
                       step_column(STEP, "citation"): cites}
                if cites == "negatives_only" and self.config.require_positive_citation:
                    row.update(failed_fields(STEP, "citation: the reasoning cites only negatives, never the positive",
                                             CONTENT_ERROR))
                if self.config.num_samples > 1:
                    row[SAMPLE_INDEX] = sample
                out_rows.append(row)
        out = frame_from_rows(df, out_rows)
        as_nullable_int(out, [POSITIVE_DOC_NUMBER, SAMPLE_INDEX, step_column(VERIFY, "samples"),
                              *(step_column(STEP, f) for f in PROVENANCE_INTS)])
        citations = out.get(step_column(STEP, "citation"), pd.Series(dtype=object))
        extra = {"deduplicated": totals.deduplicated, "truncations": sum(r.truncations for r in runs.values()),
                 **judged,
                 "cites_negatives_only": int((citations == "negatives_only").sum()),
                 "cites_no_document": int((citations == "none").sum())}
        if checking:
            extra.update(verify_accepted=sum(1 for r in runs.values() if r.kept),
                         verify_rejected=sum(1 for r in runs.values()
                                             if not r.kept and r.rejected and r.judge_failure is None),
                         verify_no_verdict=sum(1 for r in runs.values() if not r.kept and r.judge_failure is not None),
                         samples_drawn=sum(r.samples for r in runs.values()))
        self.last_summary = summarize(STEP, df, out, active, started, totals.simulated, extra, llm_counters(totals))
        verify_status = step_column(VERIFY, "status")
        if checking and verify_status in out.columns:  # rows given up by verification are this step's failures too
            given_up = out[verify_status].eq(FAILED) & out[ERROR].str.startswith(f"{VERIFY}:")
            self.last_summary.failed += int(given_up.sum())
            self.last_summary.failures_by_reason.update(failure_counts(out.loc[given_up, ERROR].tolist()))
        return out

    def _sample(self, todo: list[int], requests: list[LLMRequest], references: dict, questions: dict,
                max_attempts: int | None, guards: dict[str, RoleGuard]) -> tuple[dict[int, "_Run"], RunTotals, dict]:
        """Rounds of samples: every row not yet done draws one more (its own seed and cache key,
        at ``resample_temperature`` after the first) until it has ``num_samples`` accepted or
        ``max_samples`` drawn, or the judge gave no verdict on its answer. Round k is one
        pipelined batch; its checks, one judge batch. ``guards``: per role (teacher, judge)."""
        runs = {pos: _Run() for pos in todo}
        totals, judge_totals = RunTotals(), RunTotals()
        wanted = self.config.num_samples
        limit = self.verify.max_samples if references else wanted
        pending = list(range(len(todo)))
        for k in range(limit):
            if not pending:
                break
            round_requests = [requests[i] if k == 0 else requests[i].model_copy(
                update={"sample_index": k, "temperature": self.verify.resample_temperature}) for i in pending]
            outcomes, batch_totals = ask_and_parse(
                self.llm, round_requests, _parse, max_attempts or self.config.max_attempts,
                self.on_progress if k == 0 else None, retry_unusable_cached=self.retry_failed,
                guard=guards[self.role])
            totals = totals.add(batch_totals)
            verdicts, unjudged, judged = self._check([todo[i] for i in pending], outcomes, references, questions,
                                                     guards[JUDGE])
            judge_totals = judge_totals.add(judged)
            still = []
            for i, outcome, verdict, judge_failure in zip(pending, outcomes, verdicts, unjudged):
                run = runs[todo[i]]
                run.add(k, outcome, verdict, judge_failure)
                if outcome.kind == REQUEST_ERROR or judge_failure is not None:
                    continue  # the endpoint or the judge did not answer: another sample would not help
                if len(run.kept) < wanted:
                    still.append(i)
            pending = still
        extra = {} if not judge_totals.requests and not judge_totals.cache_hits else {
            "judge_requests": judge_totals.requests, "judge_prompt_tokens": judge_totals.prompt_tokens,
            "judge_completion_tokens": judge_totals.completion_tokens}
        return runs, totals.model_copy(update={"simulated": totals.simulated or judge_totals.simulated}), extra

    def _check(self, rows: list[int], outcomes: list[Outcome], references: dict, questions: dict,
               guard: RoleGuard) -> tuple[list[Verdict | None], list[Outcome | None], RunTotals]:
        """A verdict per parsed answer (None: unparsed, no check, or no verdict), the judge's
        outcome where it gave no verdict (its reply unusable, or its request failed), and the
        judge's totals; judge calls in one batch."""
        verdicts: list[Verdict | None] = [None] * len(rows)
        unjudged: list[Outcome | None] = [None] * len(rows)
        if not references:
            return ([Verdict(accepted=True, method="none") if o.parsed else None for o in outcomes], unjudged,
                    RunTotals())
        to_judge = []
        for j, (pos, outcome) in enumerate(zip(rows, outcomes)):
            if outcome.parsed is None:
                continue
            if needs_judge(self.verify.method, references[pos]):
                to_judge.append(j)
            else:
                verdicts[j] = exact_verdict(outcome.parsed.answer, references[pos])
        if not to_judge:
            return verdicts, unjudged, RunTotals()
        judge_requests = [LLMRequest(messages=judge_messages(
            str(questions[rows[j]]), str(references[rows[j]]), outcomes[j].parsed.answer), prompt_version=JUDGE_VERSION)
            for j in to_judge]
        judged, totals = ask_and_parse(self.judge, judge_requests, lambda r: parse_judgement(r.text), 2,
                                       retry_unusable_cached=self.retry_failed, guard=guard)
        for j, outcome in zip(to_judge, judged):
            if outcome.parsed is not None:
                verdicts[j] = outcome.parsed
            else:
                unjudged[j] = outcome
        return verdicts, unjudged, totals


@dataclass
class _Run:
    """The samples of one row: the accepted ones, the last outcome, and the totals; where the
    judge gave no verdict (which ends the row's sampling), its outcome and the answer it was shown."""

    kept: list = field(default_factory=list)  # (sample index, Reasoning)
    samples: int = 0
    rejected: int = 0
    truncations: int = 0
    last: Outcome | None = None
    last_verdict: Verdict | None = None
    total: Outcome = field(default_factory=Outcome)
    judge_failure: Outcome | None = None
    unjudged: Reasoning | None = None

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
            self.rejected += 1

    def verify_columns(self, checking: bool, method: str) -> dict:
        if not checking:
            return {}
        verdict = self.last_verdict
        columns = {step_column(VERIFY, "method"): verdict.method if verdict else method,
                   step_column(VERIFY, "verdict"): "accepted" if self.kept else "rejected",
                   step_column(VERIFY, "reason"): verdict.reason if verdict else None,
                   step_column(VERIFY, "samples"): self.samples,
                   step_column(VERIFY, "status"): OK if self.kept else FAILED}
        if self.judge_failure is not None and not self.kept:  # no verdict: neither accepted nor rejected
            columns.update({step_column(VERIFY, "method"): JUDGE, step_column(VERIFY, "verdict"): None,
                            step_column(VERIFY, "reason"): self.judge_failure.error})
        return columns

    def failure(self, checking: bool, max_samples: int) -> dict:
        judge = self.judge_failure
        if judge is not None:  # the judge's failure, not the teacher's: reported under the judge's name
            reason = judge.error if judge.kind == REQUEST_ERROR else f"no verdict in the judge's reply: {judge.error}"
            return {**failed_fields(STEP, reason, judge.kind or CONTENT_ERROR), ERROR: f"{JUDGE}: {reason}"}
        last = self.last
        if last.kind == REQUEST_ERROR or not checking or self.rejected == 0:
            return failed_fields(STEP, last.error or "no usable answer", last.kind or CONTENT_ERROR)
        why = self.last_verdict.reason if self.last_verdict else last.error
        return failed_fields(VERIFY, f"no accepted answer in {self.samples} sample(s) of at most {max_samples} "
                                     f"(last: {why})", REJECTED_ERROR)


def _judged(config) -> tuple[str, ...]:
    return (JUDGE,) if config.verify.method in ("judge", "auto") else ()


class _Plan(NamedTuple):
    """What the step will ask: the questions sent to the teacher, those of them whose answers the
    judge checks (with their question and reference when the input gives them), and the samples
    per question."""

    asked: int
    judged: int
    given: list[tuple[str, str]]  # (question, reference) of each judged row; empty for generated ones
    sampling: Sampling


def _plan(inputs: EstimateInputs) -> _Plan:
    """The rows and samples, as the operator decides them: a given row is sent when its text and
    question are text and, when checked, its reference is not blank; a row stops at
    ``distill.num_samples`` accepted, or at ``verify.max_samples`` (``num_samples`` unchecked)."""
    config = inputs.config
    method, wanted = config.verify.method, config.distill.num_samples
    checking = method != "none"
    limit = config.verify.max_samples if checking else wanted
    sampling = Sampling(expected_samples(inputs.acceptance_rate if checking else 1.0, limit, wanted), limit)
    if not config.questions_given:
        asked = len(inputs.texts) * config.doc2query.num_questions
        return _Plan(asked, asked if method in ("judge", "auto") else 0, [], sampling)
    k, documents = config.columns, inputs.documents
    references = documents[k.gold_answer].tolist() if checking else [None] * len(documents)
    asked, given = 0, []
    for text, question, reference in zip(documents[k.text].tolist(), documents[k.question].tolist(), references):
        if not (inputs.is_text(text) and inputs.is_text(question)) or (checking and is_blank(reference)):
            continue
        asked += 1
        if checking and needs_judge(method, reference):
            given.append((question, str(reference)))
    return _Plan(asked, len(given), given, sampling)


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


def _verify_notes(config, plan: _Plan, acceptance_rate: float) -> list[str]:
    method, limit = config.verify.method, plan.sampling.limit
    if method == "none":
        return []
    notes = [
        f"verify ({method}): a row is sampled until {config.distill.num_samples} answer(s) pass, at most "
        f"verify.max_samples={limit}: expected {plan.sampling.expected:.2f} samples per row at an acceptance rate "
        f"of {acceptance_rate:.0%} per sample (an assumption: `rare estimate --acceptance-rate`; a trial run's report "
        f"gives verify_accepted / samples_drawn); max = {limit} samples per row"]
    if method == "exact":
        return notes
    if config.questions_given:
        notes.append(f"judge: {plan.judged} of {plan.asked} given question(s) have an open gold answer and are "
                     "judged, once per sample; the others are checked exactly, for free")
    else:
        notes.append("judge: every sample is judged (the references Doc2Query writes are assumed open)")
    return notes


def estimate(inputs: EstimateInputs) -> EstimatePart:
    """The teacher: one sample per question and per re-sample, its prompt (a scenario, a
    question and 1 + ``hardneg.num_neg`` documents cut to ``max_doc_chars``) rendered once
    with stand-in texts cut from the corpus (the negatives are other documents of it, so each
    slot is as long as its mean cut document) and counted. The judge (``verify.method`` judge or
    auto): one request per sample of a row it checks, its prompt rendered with the row's
    question and gold answer where given, else stand-ins of the typical lengths."""
    config, texts = inputs.config, inputs.texts
    plan = _plan(inputs)
    max_chars, num_neg = config.distill.max_doc_chars, config.hardneg.num_neg
    llm = config.llm_for(SPEC.role)
    counter = inputs.counter(llm.model)
    per_prompt, mean_len = 0, None
    if texts:
        messages, mean_len = standin_messages(texts, max_chars, num_neg)
        per_prompt = counter.count_messages(messages)
    per = expected_completion(llm.model, llm.generation.max_tokens, DISTILL_TOKENS, DISTILL_TOKENS_REASONING)
    teacher = sampled(STEP, SPEC.role, llm, counter, plan.asked, plan.asked * per_prompt, plan.sampling, per,
                      docs_per_prompt=1 + num_neg, mean_doc_chars=None if mean_len is None else round(mean_len, 1),
                      assumed_scenario_question_chars=TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS)
    lines = [teacher]
    completion = f"{STEP} {per:,} ({'reasoning' if teacher.reasoning_model else 'non-reasoning'} model)"
    if config.verify.method in ("judge", "auto"):
        judge_llm = config.llm_for(JUDGE)
        judge_counter = inputs.counter(judge_llm.model)
        pool = standin_pool(texts, max_chars)
        answer = standin(pool, 0, TYPICAL_ANSWER_CHARS)
        if plan.given:
            one_round = count_all(judge_counter, (judge_messages(q, ref, answer) for q, ref in plan.given))
        else:
            question = standin(pool, len(pool) // 3, TYPICAL_QUESTION_CHARS - 1) + "?"
            reference = standin(pool, 2 * len(pool) // 3, TYPICAL_REFERENCE_CHARS)
            one_round = plan.judged * judge_counter.count_messages(judge_messages(question, reference, answer))
        judge_per = expected_completion(judge_llm.model, judge_llm.generation.max_tokens, JUDGE_TOKENS,
                                        JUDGE_TOKENS_REASONING)
        lines.append(sampled(JUDGE, JUDGE, judge_llm, judge_counter, plan.judged, one_round, plan.sampling, judge_per,
                             actual_step=STEP, actual_prefix=f"{JUDGE}_"))
        completion += f", {JUDGE} {judge_per:,}"
    notes = _verify_notes(config, plan, inputs.acceptance_rate)
    notes.append(
        f"{STEP} prompt: scenario + question assumed ~{TYPICAL_SCENARIO_CHARS + TYPICAL_QUESTION_CHARS} chars, "
        f"{1 + num_neg} documents each as long as the corpus's mean document cut to {max_chars} chars "
        f"({teacher.mean_doc_chars or 0:,.0f} chars); every question assumed to reach {SPEC.label} with its full "
        "share of negatives")
    if config.hardneg.corpus_path:
        notes.append("hardneg.corpus_path is set: negatives assumed as long as the input's documents")
    notes.append(f"expected completion per request: {completion}; re-asks of unusable replies (up to "
                 f"distill.max_attempts={config.distill.max_attempts} per sample; the judge's likewise) and doubled "
                 "budgets after a cut-off reply come on top of the upper bound")
    return EstimatePart(lines, notes)


SPEC = StepSpec(
    name=STEP, label="ReasonDistill", task_name="reason-distill", section="distill",
    settings_model=ReasonDistillConfig, operator=ReasonDistill, role="teacher", more_roles=_judged,
    introduces={"teacher": "ReasonDistill: writes the reasoning and the answer.",
                JUDGE: "Verification: judges open answers against the reference."},
    keys=lambda c: {"input_text_key": c.columns.text, "input_question_key": c.columns.question,
                    "input_scenario_key": c.columns.scenario, "input_hardneg_key": c.columns.hard_negatives,
                    "output_key": c.columns.reasoning, "output_answer_key": c.columns.answer,
                    "input_reference_key": c.reference_key},
    extra_args=lambda c, clients: {"verify": c.verify, "judge_serving": clients.get(JUDGE)},
    cache_inputs=lambda c: {"verify": c.verify.model_dump(mode="json")},
    cache_exclude=frozenset({"role_guard"}), estimate=estimate,
    dataset=lambda c: {SAMPLE_INDEX: SAMPLE_INDEX, DOCUMENT_ORDER: DOCUMENT_ORDER,
                       POSITIVE_DOC_NUMBER: POSITIVE_DOC_NUMBER, c.columns.reasoning: c.columns.reasoning,
                       c.columns.answer: c.columns.answer, c.reference_key: c.reference_key,
                       **{step_column(VERIFY, f): step_column(VERIFY, f) for f in ("verdict", "samples")}})
