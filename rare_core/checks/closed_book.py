"""ClosedBookCheck (before BM25HardNeg): questions a model answers correctly without any document.

RARE's student is to learn to use retrieved knowledge, not to recall it: a question answered
from memory teaches nothing about the documents. ``process(df, question_key="question",
scenario_key="scenario", reference_key="reference_answer")`` asks each row's question (after its
scenario, when it has one), with no document, of the ``closed_book`` LLM role
(:mod:`rare_core.prompts.closed_book`; left unset in ``roles``, the teacher's settings), and
checks the reply's answer against the row's reference as verification checks the teacher's
(:mod:`rare_core.verify`): exact for a closed reference, the ``judge`` role for an open one, by
``method`` (the run's ``verify.method``; ``none`` checks as ``auto``: this step is a check).
Unusable replies are asked again, replies come from the response cache, and a role whose
replies keep failing stops the step (:mod:`rare_core.operators.llm_step`).

Columns (bookkeeping, so ``output_columns() == []``): ``rare_closed_book`` (``correct``,
``incorrect``, ``unanswered``: the probe's reply could not be used, ``unjudged``: the judge's
could not; None for a row not probed: failed upstream, or with no question or no reference),
``rare_closed_book_{answer,method,reason,raw}`` and the probe's provenance
``rare_closed_book_{model,prompt_version,prompt_tokens,completion_tokens,attempts,simulated}``.
A row whose probe or judge request failed at the HTTP level fails (kind ``request``: a rerun
asks again). With ``drop=True`` a correct row is removed (to failed_rows, kind ``filtered``,
reason ``closed_book: answered correctly without documents``). ``last_summary.extra`` counts
the rows checked and each verdict, the rows dropped, and the judge's requests and tokens.
"""

from __future__ import annotations

import time
from collections import Counter

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.estimate_model import (
    JUDGE_TOKENS, JUDGE_TOKENS_REASONING, TYPICAL_QUESTION_CHARS, TYPICAL_REFERENCE_CHARS, TYPICAL_SCENARIO_CHARS,
    EstimateInputs, EstimatePart, count_all, expected_completion, llm_line, standin, standin_pool,
)
from rare_core.filters.common import FILTERED
from rare_core.llm.types import LLMRequest, RunTotals
from rare_core.operators.verification import JUDGE  # the role that judges open answers
from rare_core.operators.base import (
    ERROR, ERROR_KIND, FAILED, FILTERED_ERROR, OK, REQUEST_ERROR, RESERVED_PREFIX, SKIPPED, STATUS, active_mask,
    as_nullable_int, distinct_keys, init_status, is_blank, require_columns, step_column, summarize,
)
from rare_core.operators.llm_step import (
    PROVENANCE_INTS, LLMOperator, Outcome, RoleGuard, RoleGuardConfig, ask_and_parse, llm_counters, provenance,
)
from rare_core.prompts import closed_book as prompt
from rare_core.step_spec import StepSpec
from rare_core.verify import PROMPT_VERSION as JUDGE_VERSION
from rare_core.verify import Verdict, VerifyMethod, exact_verdict, judge_messages, needs_judge, parse_judgement

STEP = "closed_book"
ROLE = "closed_book"
VERDICT = f"{RESERVED_PREFIX}{STEP}"  # rare_closed_book
STATUS_COLUMN = step_column(STEP, "status")
ANSWER, METHOD, REASON, RAW = (step_column(STEP, f) for f in ("answer", "method", "reason", "raw"))
CORRECT, INCORRECT, UNANSWERED, UNJUDGED = "correct", "incorrect", "unanswered", "unjudged"
DROP_REASON = "answered correctly without documents"
# A closed-book reply is {"answer": "<one short sentence>"}: ~60 tokens with the JSON around it;
# a reasoning model thinks first, longer than for the judge's comparison of two short answers.
CLOSED_BOOK_TOKENS = 60
CLOSED_BOOK_TOKENS_REASONING = 1500
JUDGE_ATTEMPTS = 2  # as verification asks the judge (rare_core.operators.reason_distill)


class ClosedBookConfig(BaseModel):
    """Settings of the closed-book probe (``checks.closed_book``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Ask each question without documents (one request per row, and a "
                                            "judge call per open reference); False: the step does not run.")
    drop: bool = Field(False, description="Send a row answered correctly without documents to failed_rows (kind "
                                          "'filtered') instead of only flagging it in rare_closed_book.")
    max_attempts: int = Field(3, ge=1, le=10,
                              description="LLM calls per row in all, re-asking after an unusable reply.")
    role_guard: RoleGuardConfig = Field(default_factory=RoleGuardConfig,
                                        description="When a closed_book or judge role whose replies keep failing to "
                                                    "parse is stopped, before the rest is paid (each counted apart).")


def check_method(method: VerifyMethod) -> VerifyMethod:
    """How answers are checked here: the run's ``verify.method``, ``auto`` where it is ``none``."""
    return "auto" if method == "none" else method


class ClosedBookCheck(LLMOperator):
    """See the module docstring. ``judge_serving``: the client of the judge role (default: the
    probe's own); ``method``: how answers are checked (:func:`check_method`)."""

    step_name = STEP
    role = ROLE
    prompt_version = prompt.VERSION
    config_class = ClosedBookConfig
    config: ClosedBookConfig

    def __init__(self, llm_serving, config=None, on_progress=None, retry_failed: bool = False,
                 judge_serving=None, method: VerifyMethod = "auto", **settings) -> None:
        super().__init__(llm_serving, config, on_progress, retry_failed, **settings)
        self.judge = judge_serving or llm_serving
        self.method = check_method(method)

    def output_columns(self, **_: object) -> list[str]:
        return []

    def role_guard(self, role: str | None = None) -> RoleGuard:
        return RoleGuard(role or self.role, self.config.role_guard, f"checks.{STEP}.role_guard")

    def process(self, df: pd.DataFrame, question_key: str = "question", scenario_key: str = "scenario",
                reference_key: str = "reference_answer") -> pd.DataFrame:
        started = time.perf_counter()
        distinct_keys(STEP, question_key=question_key, scenario_key=scenario_key, reference_key=reference_key)
        df_in = df
        df = init_status(df.drop(columns=[c for c in df.columns if c == VERDICT or c.startswith(f"{VERDICT}_")]))
        active = active_mask(df)
        n = len(df)
        columns: dict[str, list] = {c: [None] * n for c in (VERDICT, ANSWER, METHOD, REASON, RAW,
                                                            *provenance(STEP, Outcome(), prompt.VERSION))}
        columns[STATUS_COLUMN] = [OK if a else SKIPPED for a in active] if self.config.enabled else [SKIPPED] * n
        if not self.config.enabled:
            return self._finish(df_in, df, columns, active, started, [], RunTotals(), RunTotals())
        require_columns(df, [question_key, reference_key], STEP)
        has_scenario = scenario_key in df.columns
        todo, requests = [], []
        for pos in range(n):
            question, reference = df.at[pos, question_key], df.at[pos, reference_key]
            if not active[pos] or not isinstance(question, str) or is_blank(question) or is_blank(reference):
                continue
            scenario = df.at[pos, scenario_key] if has_scenario else ""
            scenario = scenario if isinstance(scenario, str) else ""
            todo.append(pos)
            requests.append(LLMRequest(messages=prompt.build_messages(scenario, question),
                                       prompt_version=prompt.VERSION))
        outcomes, totals = ask_and_parse(self.llm, requests, lambda r: prompt.parse_reply(r.text),
                                         self.config.max_attempts, self.on_progress,
                                         retry_unusable_cached=self.retry_failed, guard=self.role_guard())
        to_judge = []
        for pos, outcome in zip(todo, outcomes):
            for field, value in provenance(STEP, outcome, prompt.VERSION).items():
                columns[field][pos] = value
            reference = df.at[pos, reference_key]
            if outcome.kind == REQUEST_ERROR:
                self._fail(df, columns, pos, outcome.error)
            elif outcome.parsed is None:
                columns[VERDICT][pos], columns[REASON][pos], columns[RAW][pos] = UNANSWERED, outcome.error, outcome.raw
            elif needs_judge(self.method, reference):
                columns[ANSWER][pos] = outcome.parsed
                to_judge.append(pos)
            else:
                columns[ANSWER][pos] = outcome.parsed
                self._verdict(columns, pos, exact_verdict(outcome.parsed, reference))
        judge_totals = self._judge(df, columns, to_judge, question_key, reference_key)
        return self._finish(df_in, df, columns, active, started, todo, totals, judge_totals)

    def _judge(self, df: pd.DataFrame, columns: dict[str, list], rows: list[int], question_key: str,
               reference_key: str) -> RunTotals:
        """The judge's verdicts on the answers of ``rows`` (one batch); its totals."""
        if not rows:
            return RunTotals()
        requests = [LLMRequest(messages=judge_messages(str(df.at[pos, question_key]), str(df.at[pos, reference_key]),
                                                       columns[ANSWER][pos]), prompt_version=JUDGE_VERSION)
                    for pos in rows]
        judged, totals = ask_and_parse(self.judge, requests, lambda r: parse_judgement(r.text), JUDGE_ATTEMPTS,
                                       retry_unusable_cached=self.retry_failed, guard=self.role_guard(JUDGE))
        for pos, outcome in zip(rows, judged):
            if outcome.parsed is not None:
                self._verdict(columns, pos, outcome.parsed)
            elif outcome.kind == REQUEST_ERROR:
                self._fail(df, columns, pos, f"{JUDGE} {outcome.error}")  # "judge request failed: ..."
            else:
                columns[VERDICT][pos], columns[METHOD][pos] = UNJUDGED, JUDGE
                columns[REASON][pos] = f"no verdict in the judge's reply: {outcome.error}"
        return totals

    @staticmethod
    def _verdict(columns: dict[str, list], pos: int, verdict: Verdict) -> None:
        columns[VERDICT][pos] = CORRECT if verdict.accepted else INCORRECT
        columns[METHOD][pos], columns[REASON][pos] = verdict.method, verdict.reason

    @staticmethod
    def _fail(df: pd.DataFrame, columns: dict[str, list], pos: int, reason: str) -> None:
        df.loc[pos, [STATUS, ERROR, ERROR_KIND]] = [FAILED, f"{STEP}: {reason}", REQUEST_ERROR]
        columns[STATUS_COLUMN][pos] = FAILED

    def _finish(self, df_in: pd.DataFrame, df: pd.DataFrame, columns: dict[str, list], active: pd.Series,
                started: float, todo: list[int], totals: RunTotals, judge_totals: RunTotals) -> pd.DataFrame:
        """Write the columns, drop the correct rows when asked, and set ``last_summary``."""
        dropped = [pos for pos in todo if self.config.drop and columns[VERDICT][pos] == CORRECT]
        for pos in dropped:
            columns[STATUS_COLUMN][pos] = FILTERED
        if dropped:
            df.loc[dropped, [STATUS, ERROR, ERROR_KIND]] = [FAILED, f"{STEP}: {DROP_REASON}", FILTERED_ERROR]
        for name, values in columns.items():
            df[name] = values
        as_nullable_int(df, [step_column(STEP, f) for f in PROVENANCE_INTS])
        tally = Counter(columns[VERDICT])
        extra: dict = {"enabled": self.config.enabled}
        if self.config.enabled:
            extra.update({"drop": self.config.drop, "method": self.method, "rows_checked": len(todo),
                          "rows_correct": tally[CORRECT], "rows_incorrect": tally[INCORRECT],
                          "rows_unanswered": tally[UNANSWERED], "rows_unjudged": tally[UNJUDGED],
                          "rows_dropped": len(dropped), "deduplicated": totals.deduplicated,
                          "judge_requests": judge_totals.requests, "judge_prompt_tokens": judge_totals.prompt_tokens,
                          "judge_completion_tokens": judge_totals.completion_tokens})
        summary = summarize(STEP, df_in, df, active, started, totals.simulated or judge_totals.simulated, extra,
                            llm_counters(totals) if self.config.enabled else None)
        if dropped:  # filtered, not failed: counted as the filters count theirs
            summary.failed += len(dropped)
            summary.failures_by_reason[DROP_REASON] = len(dropped)
            summary.failures_by_kind[FILTERED_ERROR] = len(dropped)
        self.last_summary = summary
        return df


def describe(summary) -> list[str]:
    """The check's lines in the report and the dataset card."""
    extra = summary.extra
    if "rows_checked" not in extra:
        return []
    lines = [f"{extra['rows_correct']:,} of {extra['rows_checked']:,} questions were answered correctly without "
             f"documents ({extra['rows_dropped']:,} dropped)"]
    unclear = {"unanswered (reply unusable)": extra["rows_unanswered"], "unjudged": extra["rows_unjudged"]}
    if any(unclear.values()):
        lines.append("closed-book probe: " + ", ".join(f"{n:,} {what}" for what, n in unclear.items() if n))
    return lines


def _judged_roles(config) -> tuple[str, ...]:
    return (JUDGE,) if check_method(config.verify.method) in ("judge", "auto") else ()


def _probed(inputs: EstimateInputs) -> tuple[int, list[tuple[str, str, str]]]:
    """The rows the probe is sent, as the operator decides them: generated questions (every
    valid document's ``doc2query.num_questions``, their references assumed open), or the given
    rows with a question and a reference: their count, and (scenario, question, reference) of each."""
    config = inputs.config
    if not config.questions_given:
        return len(inputs.texts) * config.doc2query.num_questions, []
    k, documents = config.columns, inputs.documents
    blank = [None] * len(documents)
    scenarios, questions, references = (documents[c].tolist() if c in documents.columns else blank
                                        for c in (k.scenario, k.question, k.gold_answer))
    given = [(s if isinstance(s, str) else "", q, str(r)) for s, q, r in zip(scenarios, questions, references)
             if inputs.is_text(q) and not is_blank(r)]
    return len(given), given


def estimate(inputs: EstimateInputs) -> EstimatePart:
    """One probe per row sent: given rows rendered with their own scenario and question,
    generated ones with stand-ins of the typical scenario and question lengths cut from the
    corpus; a short answer expected. The judge (``verify.method`` judge, auto or none): one
    request per row whose reference is open (generated references are assumed open), its
    answer and reference stand-ins of the typical reference length."""
    config = inputs.config
    rows, given = _probed(inputs)
    llm = config.llm_for(ROLE)
    counter = inputs.counter(llm.model)
    pool = standin_pool(inputs.texts, config.distill.max_doc_chars)
    question = standin(pool, len(pool) // 3, TYPICAL_QUESTION_CHARS - 1) + "?"
    answer = standin(pool, 2 * len(pool) // 3, TYPICAL_REFERENCE_CHARS)
    if config.questions_given:
        prompt_tokens = count_all(counter, (prompt.build_messages(s, q) for s, q, _ in given))
    else:
        scenario = standin(pool, 0, TYPICAL_SCENARIO_CHARS)
        prompt_tokens = rows * counter.count_messages(prompt.build_messages(scenario, question))
    per = expected_completion(llm.model, llm.generation.max_tokens, CLOSED_BOOK_TOKENS, CLOSED_BOOK_TOKENS_REASONING)
    lines = [_line(STEP, ROLE, llm, counter, per, rows, prompt_tokens)]
    notes = [f"expected completion per request: {STEP} {per:,} (a short answer, no document shown)"]
    if _judged_roles(config):
        method = check_method(config.verify.method)
        judge_llm = config.llm_for(JUDGE)
        judge_counter = inputs.counter(judge_llm.model)
        if config.questions_given:
            judged = [(q, r) for _, q, r in given if needs_judge(method, r)]
            count = len(judged)
            judge_tokens = count_all(judge_counter, (judge_messages(q, r, answer) for q, r in judged))
            notes.append(f"{STEP}: {count} of {rows} given question(s) have an open gold answer and are judged")
        else:
            count = rows
            judge_tokens = rows * judge_counter.count_messages(judge_messages(question, answer, answer))
            notes.append(f"{STEP}: every answer is judged (the references Doc2Query writes are assumed open)")
        judge_per = expected_completion(judge_llm.model, judge_llm.generation.max_tokens, JUDGE_TOKENS,
                                        JUDGE_TOKENS_REASONING)
        lines.append(_line(f"{STEP}_{JUDGE}", JUDGE, judge_llm, judge_counter, judge_per, count, judge_tokens,
                           actual_step=STEP, actual_prefix=f"{JUDGE}_"))
    return EstimatePart(lines, notes)


def _line(step: str, role: str, llm, counter, per: int, requests: int, prompt_tokens: int, **where):
    """A role asked once per row: ``requests`` requests, ``prompt_tokens`` in all."""
    return llm_line(step, role, llm, counter, per, requests=requests, requests_max=requests,
                    prompt_tokens=prompt_tokens, prompt_tokens_max=prompt_tokens,
                    prompt_tokens_per_request=prompt_tokens / requests if requests else 0.0,
                    completion_tokens_expected=requests * per,
                    completion_tokens_max=requests * llm.generation.max_tokens, **where)


SPEC = StepSpec(
    name=STEP, label="ClosedBook", task_name="closed-book", section="checks.closed_book",
    settings_model=ClosedBookConfig, operator=ClosedBookCheck, role=ROLE, more_roles=_judged_roles,
    introduces={ROLE: "Closed-book check: answers each question without documents (unset: the teacher's settings)."},
    role_falls_back_to={ROLE: "teacher"},
    keys=lambda c: {"question_key": c.columns.question, "scenario_key": c.columns.scenario,
                    "reference_key": c.reference_key},
    description="Before BM25HardNeg: asks each question without documents and flags (or drops) the rows "
                "answered correctly, checked as verification checks answers (a request per row).",
    default=lambda: ClosedBookConfig(enabled=False),
    enabled=lambda c: c.checks.closed_book.enabled,
    extra_args=lambda c, clients: {"method": c.verify.method, "judge_serving": clients.get(JUDGE)},
    cache_inputs=lambda c: {"method": check_method(c.verify.method)},
    cache_exclude=frozenset({"role_guard"}),  # the guard stops a step; it never changes a finished step's rows
    estimate=estimate, describe=describe, dataset=lambda c: {VERDICT: VERDICT})
