"""Doc2Query: one document in, standalone reasoning-intensive question(s) + scenario out.

``process(df, input_key="text", output_question_key="question", output_scenario_key="scenario")``
adds the question and scenario columns (None, never "", for a failed row) and the provenance
columns ``doc2query_{status,model,prompt_version,prompt_tokens,completion_tokens,attempts,
simulated,raw}``. With ``num_questions > 1`` each document yields that many rows, numbered in
``question_index``. A failed row keeps its raw reply in ``doc2query_raw`` and its reason in ``error``.
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
from rare_core.parsing import GeneratedQuestion, GeneratedQuestions, parse_json_object
from rare_core.prompts import doc2query as prompt

STEP = "doc2query"


class Doc2QueryConfig(BaseModel):
    """Settings of the Doc2Query step (they enter the step's cache key in the flow)."""

    model_config = ConfigDict(extra="forbid")

    num_questions: int = Field(1, ge=1, le=20, description="Questions to write per document.")
    max_doc_chars: int = Field(6000, ge=200, description="Document budget in characters; longer documents are cut at a word boundary.")
    max_attempts: int = Field(3, ge=1, le=10, description="LLM calls per row in all, re-asking after an unusable reply.")


class Doc2Query(LLMOperator):
    step_name = STEP
    prompt_version = prompt.VERSION
    config_class = Doc2QueryConfig
    config: Doc2QueryConfig

    def process(self, df: pd.DataFrame, input_key: str = "text", output_question_key: str = "question",
                output_scenario_key: str = "scenario", max_attempts: int | None = None,
                overwrite: bool = False) -> pd.DataFrame:
        started = time.perf_counter()
        require_columns(df, [input_key], STEP)
        guard_outputs(df, [output_question_key, output_scenario_key], STEP, overwrite)
        n = self.config.num_questions
        attempts = max_attempts or self.config.max_attempts
        df = init_status(df.copy())
        active = active_mask(df)
        texts = df[input_key]
        has_text = texts.map(lambda t: isinstance(t, str) and bool(t.strip()))
        for idx in df.index[active & ~has_text]:
            mark_failed(df, idx, STEP, "invalid input: the document text is empty or missing")
        todo = df.index[active & has_text]
        requests = [LLMRequest(messages=prompt.build_messages(texts[i], n, self.config.max_doc_chars),
                               prompt_version=prompt.VERSION) for i in todo]
        schema = GeneratedQuestion if n == 1 else GeneratedQuestions
        outcomes, totals = ask_and_parse(
            self.llm, requests, lambda text: parse_json_object(text, schema), attempts, self.on_progress)

        by_index = dict(zip(todo, outcomes))
        out_rows: list[dict] = []
        for idx, base in zip(df.index, df.to_dict("records")):
            outcome = by_index.get(idx)
            if outcome is None:  # failed upstream, or invalid input marked above
                if not active[idx]:
                    base[f"{STEP}_status"] = SKIPPED
                out_rows.append({**base, output_question_key: None, output_scenario_key: None})
                continue
            prov = provenance(STEP, outcome, prompt.VERSION)
            if outcome.parsed is None:
                out_rows.append({**base, **prov, output_question_key: None, output_scenario_key: None,
                                 STATUS: FAILED, ERROR: f"{STEP}: {outcome.error}",
                                 f"{STEP}_status": FAILED, f"{STEP}_raw": outcome.raw})
                continue
            items = outcome.parsed.questions[:n] if n > 1 else [outcome.parsed]
            for k, item in enumerate(items):
                row = {**base, **prov, output_question_key: item.question, output_scenario_key: item.scenario,
                       f"{STEP}_status": OK, f"{STEP}_raw": None}
                if n > 1:
                    row["question_index"] = k
                out_rows.append(row)
        out = pd.DataFrame(out_rows, columns=ordered_columns(df, out_rows))
        self.last_summary = summarize(STEP, df, out, active, started, totals.simulated,
                                      totals.model_dump(exclude={"simulated", "wall_seconds"}))
        return out
