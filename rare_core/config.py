"""The pipeline's configuration: one pydantic model, the flow's only parameter.

Each step's settings live beside their operator (``Doc2QueryConfig``, ``BM25HardNegConfig``,
``ReasonDistillConfig``); the LLM endpoint in :class:`rare_core.llm.LLMConfig`. This module
composes them with the input, the column keys, the storage layout and the output.
Field descriptions and constraints are what the Prefect UI's run form shows and enforces.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rare_core.llm.config import LLMConfig
from rare_core.operators.bm25_hardneg import BM25HardNegConfig
from rare_core.operators.doc2query import Doc2QueryConfig
from rare_core.operators.reason_distill import ReasonDistillConfig

Format = Literal["json", "jsonl", "csv", "parquet"]


class ColumnKeys(BaseModel):
    """Column names, as in the operator API of the system we implement."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field("id", description="Document id column (a content hash is used when absent).")
    text: str = Field("text", description="Document text column: the source of questions and the positive.")
    question: str = Field("question", description="Generated question column.")
    scenario: str = Field("scenario", description="Generated scenario column.")
    hard_negatives: str = Field("hard_negatives", description="Hard-negative texts column.")
    reasoning: str = Field("reasoning", description="Distilled reasoning column.")
    answer: str = Field("answer", description="Distilled final answer column.")


class Prices(BaseModel):
    """Optional prices for the report's cost line, in currency units per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)


class PipelineConfig(BaseModel):
    """Everything one pipeline run needs. The API key is never here: ``llm.api_key_env`` names
    the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")

    input_path: str = Field(..., min_length=1, description="Documents file (.json, .jsonl, .csv or .parquet).")
    # Not named ``keys``: dict(model) then calls the field (pydantic#10575), and Prefect resolves
    # flow/task parameters with dict(model) (PrefectHQ/prefect#15610).
    columns: ColumnKeys = Field(default_factory=ColumnKeys, description="Column names of the input and of each step's output.")
    llm: LLMConfig = Field(default_factory=lambda: LLMConfig(model="rare-sim-1"),
                           description="LLM endpoint; leave base_url empty to run on the built-in simulator.")
    doc2query: Doc2QueryConfig = Field(default_factory=Doc2QueryConfig)
    hardneg: BM25HardNegConfig = Field(default_factory=BM25HardNegConfig)
    distill: ReasonDistillConfig = Field(default_factory=ReasonDistillConfig)
    cache_path: str = Field("./cache", description="Folder of the intermediate step files, the response cache and the BM25 index.")
    file_name_prefix: str = Field("dataflow_cache_step", min_length=1, description="Step file prefix: {cache_path}/{prefix}_step{N}.{cache_type}.")
    cache_type: Format = Field("jsonl", description="Format of the intermediate step files.")
    output_path: str = Field("./out", description="Folder for the final dataset and the report.")
    output_format: Format = Field("jsonl", description="Format of the final dataset.")
    limit: int | None = Field(None, ge=1, description="Use only the first N documents (for trials).")
    prices: Prices | None = Field(None, description="Token prices for the report's cost estimate.")
