"""Doc2Query: one document in, standalone reasoning-intensive question(s) + scenario out.

``process(df, input_key="text", output_question_key="question", output_scenario_key="scenario")``
adds the question and scenario columns (None, never "", for a failed row) and the bookkeeping
columns ``rare_doc2query_{status,model,prompt_version,prompt_tokens,completion_tokens,attempts,
simulated,raw}``. With ``num_questions > 1`` each document yields that many rows, numbered in
``question_index`` (a reply with fewer, or repeated, questions is re-asked). A failed row keeps
its raw reply in ``rare_doc2query_raw`` and its reason in ``rare_error``. A question writer
whose replies keep failing to parse stops the step (``role_guard``, :class:`RoleUnusableError`
of :mod:`rare_core.operators.llm_step`).
"""

from __future__ import annotations

import time

import pandas as pd
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rare_core.llm.types import LLMRequest
from rare_core.operators.base import (
    INPUT_ERROR, OK, SKIPPED, active_mask, as_nullable_int, distinct_keys, failed_fields, guard_outputs,
    frame_from_rows, init_status, is_blank, mark_failed, require_columns, step_column, summarize,
)
from rare_core.operators.llm_step import (
    PROVENANCE_INTS, LLMOperator, RoleGuardConfig, ask_and_parse, llm_counters, provenance,
)
from rare_core.parsing import parse_questions
from rare_core.prompts import doc2query as prompt
from rare_core.estimate_model import (
    DOC2QUERY_TOKENS_PER_QUESTION, EstimateInputs, EstimatePart, count_all, expected_completion, llm_line,
)
from rare_core.step_spec import StepSpec

STEP = "doc2query"
QUESTION_INDEX = "question_index"


class Doc2QueryConfig(BaseModel):
    """Settings of the Doc2Query step (they enter the step's cache key in the flow)."""

    model_config = ConfigDict(extra="forbid")

    num_questions: int = Field(1, ge=1, le=20, description="Questions to write per document.")
    max_doc_chars: int = Field(6000, ge=200, description="Document budget in characters; longer documents are cut at a word boundary.")
    max_attempts: int = Field(3, ge=1, le=10, description="LLM calls per row in all, re-asking after an unusable reply.")
    structured_output: Literal["auto", "on", "off"] = Field(
        "auto", description="Ask for the reply's JSON schema (response_format json_schema, strict): vLLM and SGLang "
                            "enforce it by guided decoding. auto: fall back once, for the run, when the endpoint "
                            "answers 400; on: always (a 400 fails the row); off: never.")
    role_guard: RoleGuardConfig = Field(default_factory=RoleGuardConfig,
                                        description="When a question writer whose replies keep failing to parse "
                                                    "is stopped, before the rest is paid.")


def response_format(num_questions: int) -> dict:
    """The strict ``response_format`` of a Doc2Query reply of ``num_questions`` question(s)."""
    item = {"type": "object", "additionalProperties": False, "required": ["scenario", "question", "reference_answer"],
            "properties": {"scenario": {"type": "string"}, "question": {"type": "string"},
                           "reference_answer": {"type": "string"}}}
    schema = item if num_questions == 1 else {
        "type": "object", "additionalProperties": False, "required": ["questions"],
        "properties": {"questions": {"type": "array", "items": item}}}
    return {"type": "json_schema", "json_schema": {"name": "doc2query", "strict": True, "schema": schema}}


class Doc2Query(LLMOperator):
    step_name = STEP
    role = "question_writer"
    prompt_version = prompt.VERSION
    config_class = Doc2QueryConfig
    config: Doc2QueryConfig

    def output_columns(self, output_question_key: str = "question", output_scenario_key: str = "scenario",
                       output_reference_key: str = "reference_answer", **_: object) -> list[str]:
        extra = [QUESTION_INDEX] if self.config.num_questions > 1 else []
        return [output_question_key, output_scenario_key, output_reference_key, *extra]

    def output_keys(self, output_question_key: str = "question", output_scenario_key: str = "scenario",
                    **_: object) -> list[str]:
        return [output_question_key, output_scenario_key]

    def process(self, df: pd.DataFrame, input_key: str = "text", output_question_key: str = "question",
                output_scenario_key: str = "scenario", output_reference_key: str = "reference_answer",
                max_attempts: int | None = None, overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        distinct_keys(STEP, input_key=input_key, output_question_key=output_question_key,
                      output_scenario_key=output_scenario_key, output_reference_key=output_reference_key)
        require_columns(df, [input_key], STEP)
        guard_outputs(df, self.output_columns(output_question_key, output_scenario_key, output_reference_key), STEP,
                      overwrite)
        n = self.config.num_questions
        attempts = max_attempts or self.config.max_attempts
        df = init_status(df)
        active = active_mask(df)
        texts = df[input_key]
        has_text = texts.map(lambda t: isinstance(t, str) and not is_blank(t))
        for pos in df.index[active & ~has_text]:
            kind = "empty or missing" if is_blank(texts[pos]) else f"not text ({type(texts[pos]).__name__})"
            mark_failed(df, pos, STEP, f"invalid input: the document text is {kind}", INPUT_ERROR)
        todo = df.index[active & has_text]
        structured = self.config.structured_output
        fmt = {} if structured == "off" else {"response_format": response_format(n),
                                               "response_format_required": structured == "on"}
        requests = [LLMRequest(messages=prompt.build_messages(texts[i], n, self.config.max_doc_chars),
                               prompt_version=prompt.VERSION, **fmt) for i in todo]
        outcomes, totals = ask_and_parse(
            self.llm, requests, lambda resp: parse_questions(resp.text, n), attempts, self.on_progress,
            retry_unusable_cached=self.retry_failed,
            guard=self.role_guard())

        by_pos = dict(zip(todo, outcomes))
        status_col, raw_col = step_column(STEP, "status"), step_column(STEP, "raw")
        empty = {output_question_key: None, output_scenario_key: None, output_reference_key: None}
        out_rows: list[dict] = []
        for pos, base in enumerate(df.to_dict("records")):
            outcome = by_pos.get(pos)
            if outcome is None:  # failed upstream, or invalid input marked above
                if not active[pos]:
                    base[status_col] = SKIPPED
                out_rows.append({**base, **empty})
                continue
            prov = provenance(STEP, outcome, prompt.VERSION)
            if outcome.parsed is None:
                out_rows.append({**base, **prov, **empty, **failed_fields(STEP, outcome.error, outcome.kind),
                                 raw_col: outcome.raw})
                continue
            for k, item in enumerate(outcome.parsed):
                row = {**base, **prov, output_question_key: item.question, output_scenario_key: item.scenario,
                       output_reference_key: item.reference_answer.strip() or None, status_col: OK, raw_col: None}
                if n > 1:
                    row[QUESTION_INDEX] = k
                out_rows.append(row)
        out = frame_from_rows(df, out_rows)
        as_nullable_int(out, [QUESTION_INDEX, *(step_column(STEP, f) for f in PROVENANCE_INTS)])
        self.last_summary = summarize(STEP, df, out, active, started, totals.simulated,
                                      {"deduplicated": totals.deduplicated,
                                       "truncations": sum(o.truncations for o in outcomes)}, llm_counters(totals))
        return out


def estimate(inputs: EstimateInputs) -> EstimatePart:
    """Every document's real prompt rendered and counted (documents the operator fails without a
    request left out); one request per document, ~:data:`DOC2QUERY_TOKENS_PER_QUESTION`
    completion tokens per question asked."""
    config = inputs.config
    settings: Doc2QueryConfig = config.doc2query
    llm = config.llm_for(SPEC.role)
    counter = inputs.counter(llm.model)
    n, requests = settings.num_questions, len(inputs.texts)
    prompt_tokens = count_all(counter, (prompt.build_messages(t, n, settings.max_doc_chars) for t in inputs.texts))
    per = expected_completion(llm.model, llm.generation.max_tokens, DOC2QUERY_TOKENS_PER_QUESTION * n)
    line = llm_line(STEP, SPEC.role, llm, counter, per, requests=requests, requests_max=requests,
                    prompt_tokens=prompt_tokens, prompt_tokens_max=prompt_tokens,
                    prompt_tokens_per_request=prompt_tokens / requests if requests else 0.0,
                    completion_tokens_expected=requests * per, completion_tokens_max=requests * llm.generation.max_tokens)
    notes = [f"expected completion per request: {STEP} {per:,} (~{DOC2QUERY_TOKENS_PER_QUESTION} per question)"]
    skipped = len(inputs.documents) - requests
    if skipped:
        notes.append(f"{skipped} document(s) with blank or non-text {config.columns.text!r} left out: "
                     f"{SPEC.label} fails them without a request")
    return EstimatePart([line], notes)


SPEC = StepSpec(
    name=STEP, label="Doc2Query", task_name="doc2query", section="doc2query", settings_model=Doc2QueryConfig,
    operator=Doc2Query, role="question_writer",
    introduces={"question_writer": "Doc2Query: writes the questions."}, enabled=lambda c: not c.questions_given,
    keys=lambda c: {"input_key": c.columns.text, "output_question_key": c.columns.question,
                    "output_scenario_key": c.columns.scenario, "output_reference_key": c.columns.reference_answer},
    cache_exclude=frozenset({"role_guard"}),  # the guard stops a step; it never changes a finished step's rows
    estimate=estimate,
    # Given questions (questions_given) reach the dataset under the same names.
    dataset=lambda c: {QUESTION_INDEX: QUESTION_INDEX, c.columns.question: c.columns.question,
                       c.columns.scenario: c.columns.scenario})
