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
"""

from __future__ import annotations

import time

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.llm.client import LLMRequest, LLMResponse
from rare_core.operators.base import (
    INPUT_ERROR, OK, SKIPPED, active_mask, as_nullable_int, distinct_keys, failed_fields, guard_outputs,
    frame_from_rows, init_status, is_blank, mark_failed, require_columns, step_column, summarize,
)
from rare_core.operators.llm_step import PROVENANCE_INTS, LLMOperator, ask_and_parse, provenance
from rare_core.parsing import Reasoning, parse_reasoning
from rare_core.prompts import reason_distill as prompt

STEP = "distill"
DOCUMENT_ORDER = "document_order"
POSITIVE_DOC_NUMBER = "positive_doc_number"


class ReasonDistillConfig(BaseModel):
    """Settings of the ReasonDistill step (they enter the step's cache key in the flow)."""

    model_config = ConfigDict(extra="forbid")

    max_doc_chars: int = Field(4000, ge=200, description="Budget per shown document, in characters.")
    max_attempts: int = Field(3, ge=1, le=10, description="LLM calls per row in all, re-asking after an unusable reply.")


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
    step_name = STEP
    prompt_version = prompt.VERSION
    config_class = ReasonDistillConfig
    config: ReasonDistillConfig

    def output_columns(self, output_key: str = "reasoning", output_answer_key: str = "answer", **_: object) -> list[str]:
        return [output_key, output_answer_key, DOCUMENT_ORDER, POSITIVE_DOC_NUMBER]

    def process(self, df: pd.DataFrame, input_text_key: str = "text", input_question_key: str = "question",
                input_scenario_key: str = "scenario", input_hardneg_key: str = "hard_negatives",
                output_key: str = "reasoning", output_answer_key: str = "answer",
                max_attempts: int | None = None, overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        distinct_keys(STEP, input_text_key=input_text_key, input_question_key=input_question_key,
                      input_scenario_key=input_scenario_key, input_hardneg_key=input_hardneg_key,
                      output_key=output_key, output_answer_key=output_answer_key)
        require_columns(df, [input_text_key, input_question_key, input_scenario_key, input_hardneg_key], STEP)
        guard_outputs(df, self.output_columns(output_key, output_answer_key), STEP, overwrite)
        df = init_status(df)
        active = active_mask(df)
        todo, requests, orders = [], [], {}
        columns = [input_question_key, input_scenario_key, input_text_key, input_hardneg_key]
        for pos in df.index[active]:
            question, scenario, positive, negatives = (df.at[pos, c] for c in columns)
            if not all(isinstance(v, str) and not is_blank(v) for v in (question, scenario, positive)):
                mark_failed(df, pos, STEP, "invalid input: question, scenario or positive text is empty or missing",
                            INPUT_ERROR)
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
        outcomes, totals = ask_and_parse(
            self.llm, requests, _parse, max_attempts or self.config.max_attempts, self.on_progress,
            retry_unusable_cached=self.retry_failed)

        by_pos = dict(zip(todo, outcomes))
        status_col, raw_col = step_column(STEP, "status"), step_column(STEP, "raw")
        empty = {output_key: None, output_answer_key: None, DOCUMENT_ORDER: None, POSITIVE_DOC_NUMBER: None}
        out_rows: list[dict] = []
        for pos, base in enumerate(df.to_dict("records")):
            outcome = by_pos.get(pos)
            if outcome is None:  # failed upstream, or invalid input marked above
                if not active[pos]:
                    base[status_col] = SKIPPED
                out_rows.append({**base, **empty})
                continue
            order = orders[pos]
            shown = {DOCUMENT_ORDER: order, POSITIVE_DOC_NUMBER: order.index(0) + 1}
            prov = provenance(STEP, outcome, prompt.VERSION)
            if outcome.parsed is None:
                out_rows.append({**base, **prov, **empty, **shown, **failed_fields(STEP, outcome.error, outcome.kind),
                                 raw_col: outcome.raw})
                continue
            out_rows.append({**base, **prov, **shown, output_key: outcome.parsed.reasoning,
                             output_answer_key: outcome.parsed.answer, status_col: OK, raw_col: None,
                             step_column(STEP, "reasoning_form"): outcome.parsed.form})
        out = frame_from_rows(df, out_rows)
        as_nullable_int(out, [POSITIVE_DOC_NUMBER, *(step_column(STEP, f) for f in PROVENANCE_INTS)])
        self.last_summary = summarize(STEP, df, out, active, started, totals.simulated,
                                      {**totals.model_dump(exclude={"simulated", "wall_seconds"}),
                                       "truncations": sum(o.truncations for o in outcomes)})
        return out
