"""Verification: each teacher answer checked against the row's reference, rows re-sampled until
enough pass (rejection sampling, as the RARE recipe trains only on checked answers).

In: ReasonDistill's output, one row per question holding its first sample (``check_follows``),
and the reference column (the gold answer of given questions, or Doc2Query's reference answer).
``process(df, input_text_key, input_question_key, input_scenario_key, input_hardneg_key,
output_key, output_answer_key, input_reference_key)`` -> one row per accepted sample (``num_samples``
of ReasonDistill's settings; ``sample_index`` when more than one), or the row failed:

* ``rare_verify_{status,verdict,method,reason,samples,raw}``: the check of the row's last
  sample (``exact``, or the ``judge`` role's verdict: :mod:`rare_core.verify`), the samples drawn;
* ``rare_verify_accepted`` (samples that passed), ``rare_pass_rate`` (accepted / drawn, where
  more than one was drawn: how hard the question was for the teacher) and
  ``rare_verify_rejected``: the samples of the same prompt that were rejected (sample index,
  reasoning, answer, why), which the preference exports pair with the accepted ones.

A row whose first sample was unusable (ReasonDistill failed it for its content) is sampled
again here. A row the judge gave no verdict on is the judge's failure, not a wrong answer: the
teacher is not asked again for it; the row fails as ``judge: ...`` and keeps the teacher's
reasoning and answer (and the judge's reply in ``rare_verify_raw``). A judge or teacher whose
replies keep failing to parse stops the step (``distill.role_guard``). Re-samples use
ReasonDistill's prompt, attempts and settings (``distill``), and the teacher's client.
"""

from __future__ import annotations

import time

import pandas as pd

from rare_core.estimate_model import (
    JUDGE_TOKENS, JUDGE_TOKENS_REASONING, TYPICAL_ANSWER_CHARS, TYPICAL_QUESTION_CHARS, TYPICAL_REFERENCE_CHARS,
    DISTILL_TOKENS, DISTILL_TOKENS_REASONING, EstimateInputs, EstimatePart, Sampling, count_all, expected_completion,
    expected_samples, sampled, standin, standin_pool,
)
from rare_core.llm.types import LLMRequest, RunTotals
from rare_core.operators.base import (
    CONTENT_ERROR, ERROR, ERROR_KIND, FAILED, OK, REJECTED_ERROR, REQUEST_ERROR, SKIPPED, STATUS, as_nullable_int,
    failed_fields, frame_from_rows, init_status, require_columns, step_column, summarize,
)
from rare_core.operators.llm_step import LLMOperator, Outcome, RoleGuard, ask_and_parse, llm_counters
from rare_core.operators.reason_distill import (
    SAMPLE_INDEX, STEP as DISTILL, Keys, ReasonDistill, ReasonDistillConfig, SampleRun, asked_rows, citation_counts,
    draw, sample_columns, teacher_prompt_tokens, teacher_request,
)
from rare_core.parsing import Reasoning
from rare_core.step_spec import StepSpec
from rare_core.verify import PROMPT_VERSION as JUDGE_VERSION
from rare_core.verify import Verdict, VerifyConfig, exact_verdict, judge_messages, needs_judge, parse_judgement

STEP = "verify"
JUDGE = "judge"  # the role that checks open answers; its failures are reported under its name
VERDICT = step_column(STEP, "verdict")
SAMPLES = step_column(STEP, "samples")
ACCEPTED = step_column(STEP, "accepted")
REJECTED = step_column(STEP, "rejected")
PASS_RATE = "rare_pass_rate"


def _column(step: str, name: str) -> str:
    return step_column(step, name)


class Verification(LLMOperator):
    """See the module docstring. ``llm_serving``: the teacher's client (re-samples);
    ``judge_serving``: the judge role's; ``distill``: ReasonDistill's settings."""

    step_name = STEP
    role = "teacher"
    prompt_version = JUDGE_VERSION
    config_class = VerifyConfig
    config: VerifyConfig

    def __init__(self, llm_serving=None, config=None, on_progress=None, retry_failed: bool = False,
                 judge_serving=None, distill: ReasonDistillConfig | None = None, **settings) -> None:
        super().__init__(llm_serving, config, on_progress, retry_failed, **settings)
        self.judge = judge_serving or self.llm
        self.distill = distill or ReasonDistillConfig()

    def role_guard(self, role: str | None = None) -> RoleGuard:
        """The teacher's and the judge's guards take ReasonDistill's thresholds."""
        return RoleGuard(role or self.role, self.distill.role_guard, f"{DISTILL}.role_guard")

    def output_columns(self, **_: object) -> list[str]:
        return [SAMPLE_INDEX] if self.distill.num_samples > 1 else []

    def merged_with(self, first) -> object:
        """This step's summary as the operator API's one-call ReasonDistill reports it: the rows
        and failures of both, the teacher's counters of both."""
        summary = self.last_summary.model_copy(deep=True)
        summary.step, summary.rows_in = first.step, first.rows_in
        if first.llm is not None:
            summary.llm = first.llm + summary.llm if summary.llm is not None else first.llm
        summary.extra = {**first.extra, **summary.extra}
        return summary

    def process(self, df: pd.DataFrame, input_text_key: str = "text", input_question_key: str = "question",
                input_scenario_key: str = "scenario", input_hardneg_key: str = "hard_negatives",
                output_key: str = "reasoning", output_answer_key: str = "answer",
                input_reference_key: str = "reference_answer") -> pd.DataFrame:
        started = time.perf_counter()
        keys = Keys(text=input_text_key, question=input_question_key, scenario=input_scenario_key,
                    hardneg=input_hardneg_key, reasoning=output_key, answer=output_answer_key,
                    reference=input_reference_key)
        require_columns(df, [input_text_key, input_question_key, input_hardneg_key, input_reference_key], STEP)
        df = init_status(df)
        distill_status = df.get(_column(DISTILL, "status"), pd.Series(None, index=df.index))
        kind = df.get(ERROR_KIND, pd.Series(None, index=df.index))
        # The rows to check: those whose first sample is here, and those whose first sample was
        # unusable (sampled again here); a row failed before ReasonDistill, or by it for its
        # input or the endpoint, stays as it is.
        reopened = (df[STATUS] == FAILED) & (distill_status == FAILED) & (kind == CONTENT_ERROR)
        active = ((df[STATUS] == OK) & (distill_status == OK)) | reopened
        records = df.to_dict("records")
        requests, orders, first = {}, {}, {}
        for pos in df.index[active]:
            row = records[pos]
            made = teacher_request(row, keys, self.distill.max_doc_chars)
            if isinstance(made, str):  # ReasonDistill asked it, so this is not expected; kept as its failure
                continue
            requests[pos], orders[pos] = made
            reasoning = row.get(output_key)
            first[pos] = (Outcome(parsed=Reasoning(reasoning=reasoning, answer=row.get(output_answer_key) or "",
                                                   form=row.get(_column(DISTILL, "reasoning_form")) or "inline"))
                          if row[STATUS] == OK and isinstance(reasoning, str) else
                          Outcome(error=row.get(ERROR), kind=CONTENT_ERROR, raw=row.get(_column(DISTILL, "raw"))))
        references = {pos: records[pos][input_reference_key] for pos in requests}
        questions = {pos: records[pos][input_question_key] for pos in requests}
        judge_guard = self.role_guard(JUDGE)

        def check(rows: list[int], outcomes: list[Outcome]):
            return self._check(rows, outcomes, references, questions, judge_guard)

        runs, totals, judged = draw(
            self.llm, requests, wanted=self.distill.num_samples, limit=self.config.max_samples,
            max_attempts=self.distill.max_attempts, guard=self.role_guard(),
            resample_temperature=self.config.resample_temperature, check=check, first=first,
            retry_unusable_cached=self.retry_failed)
        out = frame_from_rows(df, list(self._rows(df, runs, orders, keys, active)))
        as_nullable_int(out, [SAMPLE_INDEX, _column(STEP, "samples"), ACCEPTED])
        extra = {
            "verify_accepted": sum(1 for r in runs.values() if r.kept),
            "verify_rejected": sum(1 for r in runs.values() if not r.kept and r.rejected and r.judge_failure is None),
            "verify_no_verdict": sum(1 for r in runs.values() if not r.kept and r.judge_failure is not None),
            "samples_drawn": sum(r.samples for r in runs.values()),
            "samples_accepted": sum(len(r.kept) for r in runs.values()),
            "truncations": sum(r.truncations for r in runs.values()), **citation_counts(out),
            **_drawn_histogram(runs)}
        if judged.requests or judged.cache_hits:
            extra.update(judge_requests=judged.requests, judge_prompt_tokens=judged.prompt_tokens,
                         judge_completion_tokens=judged.completion_tokens)
        self.last_summary = summarize(STEP, df, out, pd.Series(active, index=df.index), started,
                                      totals.simulated or judged.simulated, extra, llm_counters(totals))
        return out

    def _rows(self, df: pd.DataFrame, runs: dict[int, SampleRun], orders: dict, keys: Keys, active: pd.Series):
        """The output rows: the rows not checked as they are (``skipped`` when they failed
        before); a checked row once per accepted sample, or failed with why."""
        status_col, several = _column(STEP, "status"), self.distill.num_samples > 1
        for pos, base in enumerate(df.to_dict("records")):
            run = runs.get(pos)
            if run is None:
                yield {**base, status_col: base.get(status_col) if active[pos] else SKIPPED}
                continue
            checked = {**self._verdict_columns(run), **_samples_columns(run)}
            if not run.kept:
                yield {**base, **checked, **self._failure(run, keys)}
                continue
            for sample, parsed in run.kept:
                row = {**base, STATUS: OK, ERROR: None, ERROR_KIND: None, **checked,
                       **sample_columns(parsed, orders[pos], keys, self.distill.require_positive_citation)}
                if several:
                    row[SAMPLE_INDEX] = sample
                yield row

    def _verdict_columns(self, run: SampleRun) -> dict:
        verdict = run.last_verdict
        columns = {_column(STEP, "method"): verdict.method if verdict else self.config.method,
                   _column(STEP, "verdict"): "accepted" if run.kept else "rejected",
                   _column(STEP, "reason"): verdict.reason if verdict else None,
                   _column(STEP, "samples"): run.samples,
                   _column(STEP, "status"): OK if run.kept else FAILED,
                   _column(STEP, "raw"): None}
        if run.judge_failure is not None and not run.kept:  # no verdict: neither accepted nor rejected
            columns.update({_column(STEP, "method"): JUDGE, _column(STEP, "verdict"): None,
                            _column(STEP, "reason"): run.judge_failure.error,
                            _column(STEP, "raw"): run.judge_failure.raw})
        return columns

    def _failure(self, run: SampleRun, keys: Keys) -> dict:
        judge = run.judge_failure
        if judge is not None:  # the judge's failure, not the teacher's: the teacher's answer stays with the row
            reason = judge.error if judge.kind == REQUEST_ERROR else f"no verdict in the judge's reply: {judge.error}"
            kept = {}
            if run.unjudged is not None:
                kept = {keys.reasoning: run.unjudged.reasoning, keys.answer: run.unjudged.answer,
                        _column(DISTILL, "reasoning_form"): run.unjudged.form}
            return {**kept, **failed_fields(STEP, reason, judge.kind or CONTENT_ERROR), ERROR: f"{JUDGE}: {reason}"}
        last = run.last
        if last.kind == REQUEST_ERROR or run.rejected == 0:
            return {**failed_fields(STEP, last.error or "no usable answer", last.kind or CONTENT_ERROR),
                    ERROR: f"{DISTILL}: {last.error or 'no usable answer'}", _column(DISTILL, "raw"): last.raw}
        why = run.last_verdict.reason if run.last_verdict else last.error
        return failed_fields(STEP, f"no accepted answer in {run.samples} sample(s) of at most "
                                   f"{self.config.max_samples} (last: {why})", REJECTED_ERROR)

    def _check(self, rows: list[int], outcomes: list[Outcome], references: dict, questions: dict,
               guard: RoleGuard) -> tuple[list[Verdict | None], list[Outcome | None], RunTotals]:
        """A verdict per parsed answer (None: unparsed, or no verdict), the judge's outcome where
        it gave no verdict (its reply unusable, or its request failed), and the judge's totals;
        judge calls in one batch."""
        verdicts: list[Verdict | None] = [None] * len(rows)
        unjudged: list[Outcome | None] = [None] * len(rows)
        to_judge = []
        for j, (pos, outcome) in enumerate(zip(rows, outcomes)):
            if outcome.parsed is None:
                continue
            if needs_judge(self.config.method, references[pos]):
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


DRAWN = "questions_drawing_"  # summary counters: questions that drew k samples ({DRAWN}{k})


def _drawn_histogram(runs: dict[int, SampleRun]) -> dict[str, int]:
    """How many questions drew each number of samples (sums across shards, as counters do)."""
    counts: dict[str, int] = {}
    for run in runs.values():
        counts[f"{DRAWN}{run.samples}"] = counts.get(f"{DRAWN}{run.samples}", 0) + 1
    return counts


def _samples_columns(run: SampleRun) -> dict:
    """What a trainer learns of the question's difficulty and the preference data: samples
    accepted, the pass rate (where several were drawn), the rejected samples."""
    return {ACCEPTED: len(run.kept),
            PASS_RATE: round(len(run.kept) / run.samples, 4) if run.samples > 1 else None,
            REJECTED: [{"sample": k, "reasoning": parsed.reasoning, "answer": parsed.answer, "reason": why}
                       for k, parsed, why in run.rejected_samples] or None}


# --- What it costs, what it found, and its spec ----------------------------------------------------
def _sampling(config, acceptance_rate: float) -> Sampling:
    """Samples per row, all rounds (the first drawn by ReasonDistill): expected, and at most."""
    wanted, limit = config.distill.num_samples, config.verify.max_samples
    return Sampling(expected_samples(acceptance_rate, limit, wanted), limit)


def _notes(config, asked: int, judged: int, sampling: Sampling, acceptance_rate: float) -> list[str]:
    method = config.verify.method
    notes = [
        f"verify ({method}): a row is sampled until {config.distill.num_samples} answer(s) pass, at most "
        f"verify.max_samples={sampling.limit}: expected {sampling.expected:.2f} samples per row at an acceptance rate "
        f"of {acceptance_rate:.0%} per sample (an assumption: `rare estimate --acceptance-rate`; a trial run's report "
        f"gives verify_accepted / samples_drawn); max = {sampling.limit} samples per row; the first is "
        f"{DISTILL}'s, the re-samples are the {STEP} step's"]
    if method == "exact":
        return notes
    if config.questions_given:
        notes.append(f"judge: {judged} of {asked} given question(s) have an open gold answer and are "
                     "judged, once per sample; the others are checked exactly, for free")
    else:
        notes.append("judge: every sample is judged (the references Doc2Query writes are assumed open)")
    return notes


def estimate(inputs: EstimateInputs) -> EstimatePart:
    """The teacher's re-samples (each row's samples after its first, from the acceptance rate,
    ``verify.max_samples`` at most) and, where the judge checks (``method`` judge or auto), one
    judge request per sample of each row it checks: its prompt rendered with the row's question
    and gold answer where given, else stand-ins of the typical lengths, the teacher's answer a
    stand-in (all cut from the corpus)."""
    config, texts = inputs.config, inputs.texts
    asked, given = asked_rows(inputs)
    sampling = _sampling(config, inputs.acceptance_rate)
    llm = config.llm_for(SPEC.role)
    counter = inputs.counter(llm.model)
    per_prompt, _ = teacher_prompt_tokens(inputs, counter)
    per = expected_completion(llm.model, llm.generation.max_tokens, DISTILL_TOKENS, DISTILL_TOKENS_REASONING)
    resampling = Sampling(max(0.0, sampling.expected - 1), max(0, sampling.limit - 1))
    lines = [sampled(f"{STEP} (re-samples)", SPEC.role, llm, counter, asked, asked * per_prompt, resampling, per,
                     actual_step=STEP)]
    judged = 0
    if config.verify.method in ("judge", "auto"):
        judge_llm = config.llm_for(JUDGE)
        judge_counter = inputs.counter(judge_llm.model)
        pool = standin_pool(texts, config.distill.max_doc_chars)
        answer = standin(pool, 0, TYPICAL_ANSWER_CHARS)
        if config.questions_given:
            open_ones = [(q, str(ref)) for q, ref in given if needs_judge(config.verify.method, ref)]
            judged = len(open_ones)
            one_round = count_all(judge_counter, (judge_messages(q, ref, answer) for q, ref in open_ones))
        else:
            judged = asked
            question = standin(pool, len(pool) // 3, TYPICAL_QUESTION_CHARS - 1) + "?"
            reference = standin(pool, 2 * len(pool) // 3, TYPICAL_REFERENCE_CHARS)
            one_round = judged * judge_counter.count_messages(judge_messages(question, reference, answer))
        judge_per = expected_completion(judge_llm.model, judge_llm.generation.max_tokens, JUDGE_TOKENS,
                                        JUDGE_TOKENS_REASONING)
        lines.append(sampled(JUDGE, JUDGE, judge_llm, judge_counter, judged, one_round, sampling, judge_per,
                             actual_step=STEP, actual_prefix=f"{JUDGE}_"))
    return EstimatePart(lines, _notes(config, asked, judged, sampling, inputs.acceptance_rate))


def describe(summary) -> list[str]:
    """Accepted, rejected and unjudged questions, and the samples it took."""
    extra = summary.extra
    drawn, accepted = int(extra.get("samples_drawn", 0)), int(extra.get("samples_accepted", 0))
    if not drawn:
        return []
    histogram = sorted((int(key[len(DRAWN):]), int(n)) for key, n in extra.items() if key.startswith(DRAWN))
    return [f"{int(extra.get('verify_accepted', 0)):,} question(s) accepted, {int(extra.get('verify_rejected', 0)):,} "
            f"rejected after every sample, {int(extra.get('verify_no_verdict', 0)):,} without the judge's verdict; "
            f"{accepted:,} of {drawn:,} samples passed ({accepted / drawn:.0%}: the teacher's pass rate; the "
            f"rejected ones are kept in {REJECTED} for preference data)",
            "samples drawn per question (difficulty): " + ", ".join(f"{k}: {n:,}" for k, n in histogram)]


def _judged(config) -> tuple[str, ...]:
    return (JUDGE,) if config.verify.method in ("judge", "auto") else ()


SPEC = StepSpec(
    name=STEP, label="Verify", task_name="verify", section="verify", settings_model=VerifyConfig,
    description="How the teacher's answers are checked, and how often a rejected row is sampled again.",
    operator=Verification, role="teacher", more_roles=_judged,
    introduces={JUDGE: "Verification: judges open answers against the reference."},
    enabled=lambda c: c.verify.method != "none",
    keys=lambda c: {"input_text_key": c.columns.text, "input_question_key": c.columns.question,
                    "input_scenario_key": c.columns.scenario, "input_hardneg_key": c.columns.hard_negatives,
                    "output_key": c.columns.reasoning, "output_answer_key": c.columns.answer,
                    "input_reference_key": c.reference_key},
    # Re-samples are ReasonDistill's prompt and settings.
    extra_args=lambda c, clients: {"judge_serving": clients.get(JUDGE), "distill": c.distill},
    cache_inputs=lambda c: {"distill": c.distill.model_dump(mode="json", exclude={"role_guard"}),
                            "teacher_prompt_version": ReasonDistill.prompt_version},
    estimate=estimate, describe=describe,
    dataset=lambda c: {VERDICT: VERDICT, SAMPLES: SAMPLES, ACCEPTED: ACCEPTED, PASS_RATE: PASS_RATE,
                       REJECTED: REJECTED})
