"""ReasonDistill: scenario + question + positive + hard negatives in, reasoning + answer out.

``process(df, input_text_key="text", input_question_key="question", input_scenario_key="scenario",
input_hardneg_key="hard_negatives", output_key="reasoning", output_answer_key="answer")`` adds:

* ``reasoning`` (the full step-by-step reasoning) and ``answer`` (the extracted final answer);
* ``document_order``: the order the documents were shown in, as indices into
  ``[positive, *hard_negatives]`` (0 is the positive), and ``positive_doc_number``: the
  1-based ``[Document i]`` label the positive had. The order is a permutation seeded by the
  row's question and positive, so the same row always gets the same prompt;
* ``distill_{status,model,prompt_version,prompt_tokens,completion_tokens,attempts,simulated,raw}``.
"""

from __future__ import annotations

import time

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from rare_core.llm.client import LLMRequest
from rare_core.operators.base import (
    ERROR, FAILED, OK, SKIPPED, STATUS, active_mask, guard_outputs, init_status, mark_failed,
    ordered_columns, require_columns, summarize,
)
from rare_core.operators.llm_step import LLMOperator, ask_and_parse, provenance
from rare_core.parsing import parse_reasoning
from rare_core.prompts import reason_distill as prompt

STEP = "distill"


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


class ReasonDistill(LLMOperator):
    step_name = STEP
    prompt_version = prompt.VERSION
    config_class = ReasonDistillConfig
    config: ReasonDistillConfig

    def process(self, df: pd.DataFrame, input_text_key: str = "text", input_question_key: str = "question",
                input_scenario_key: str = "scenario", input_hardneg_key: str = "hard_negatives",
                output_key: str = "reasoning", output_answer_key: str = "answer",
                max_attempts: int | None = None, overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        require_columns(df, [input_text_key, input_question_key, input_scenario_key, input_hardneg_key], STEP)
        guard_outputs(df, [output_key, output_answer_key, "document_order", "positive_doc_number"], STEP, overwrite)
        df = init_status(df.copy())
        active = active_mask(df)
        todo, requests, orders = [], [], {}
        for idx in df.index[active]:
            row = df.loc[idx]
            question, scenario, positive = row[input_question_key], row[input_scenario_key], row[input_text_key]
            if not all(isinstance(v, str) and v.strip() for v in (question, scenario, positive)):
                mark_failed(df, idx, STEP, "invalid input: question, scenario or positive text is empty or missing")
                continue
            try:
                docs = [positive, *_as_list(row[input_hardneg_key])]
            except ValueError as exc:
                mark_failed(df, idx, STEP, f"invalid input: {exc}")
                continue
            order = prompt.shuffled_order(f"{question}\x00{positive}", len(docs))
            orders[idx] = order
            todo.append(idx)
            requests.append(LLMRequest(
                messages=prompt.build_messages(scenario, question, [docs[j] for j in order], self.config.max_doc_chars),
                prompt_version=prompt.VERSION))
        outcomes, totals = ask_and_parse(
            self.llm, requests, parse_reasoning, max_attempts or self.config.max_attempts, self.on_progress)

        by_index = dict(zip(todo, outcomes))
        out_rows: list[dict] = []
        for idx, base in zip(df.index, df.to_dict("records")):
            empty = {output_key: None, output_answer_key: None, "document_order": None, "positive_doc_number": None}
            outcome = by_index.get(idx)
            if outcome is None:  # failed upstream, or invalid input marked above
                if not active[idx]:
                    base[f"{STEP}_status"] = SKIPPED
                out_rows.append({**base, **empty})
                continue
            order = orders[idx]
            shown = {"document_order": order, "positive_doc_number": order.index(0) + 1}
            prov = provenance(STEP, outcome, prompt.VERSION)
            if outcome.parsed is None:
                out_rows.append({**base, **prov, **empty, **shown, STATUS: FAILED, ERROR: f"{STEP}: {outcome.error}",
                                 f"{STEP}_status": FAILED, f"{STEP}_raw": outcome.raw})
                continue
            out_rows.append({**base, **prov, **shown, output_key: outcome.parsed.reasoning,
                             output_answer_key: outcome.parsed.answer, f"{STEP}_status": OK, f"{STEP}_raw": None})
        out = pd.DataFrame(out_rows, columns=ordered_columns(df, out_rows))
        self.last_summary = summarize(STEP, df, out, active, started, totals.simulated,
                                      totals.model_dump(exclude={"simulated", "wall_seconds"}))
        return out
