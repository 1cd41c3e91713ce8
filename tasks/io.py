"""Loading the input and exporting the result, as Prefect tasks (never cached: both are cheap,
and loading is what computes the content hash every step's cache key starts from).

* :func:`load_input` - the documents file -> step 0 of the layout (limit applied, an id
  column added from the text's hash when the input has none) -> :class:`ArtifactRef`.
* :func:`export_dataset` - the last step's file -> ``{output_path}/dataset.{format}`` (the
  rows that went through every step, with the columns a trainer needs) and
  ``{output_path}/failed_rows.{format}`` (the others, with their reason), plus a table
  artifact of sample rows in the Prefect UI.
* :func:`publish_report` - the steps' records -> the report (rare_core.report) written to
  ``{output_path}/report.md`` and ``summary.json`` and shown as a markdown artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from rare_core.config import PipelineConfig
from rare_core.errors import StorageError
from rare_core.llm.config import redact_url
from rare_core.operators.base import ERROR, OK, STATUS, document_id, require_columns
from rare_core.report import Report, StepRecord, build_report
from rare_core.storage import read_frame, write_text_atomic
from tasks.artifacts import INPUT_STEP_INDEX, ArtifactRef, step_path

DATASET_STEM = "dataset"
FAILED_STEM = "failed_rows"
REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
POSITIVE = "positive"
QUESTION_INDEX = "question_index"
SAMPLE_ROWS = 5
SAMPLE_CHARS = 240


class ExportResult(BaseModel):
    """The files of the final dataset: the usable rows, and the failed ones (None when none failed)."""

    dataset: ArtifactRef
    failed: ArtifactRef | None = None


@task(name="load-input", cache_policy=NO_CACHE, persist_result=False)
def load_input(config: PipelineConfig) -> ArtifactRef:
    """The documents file -> step 0 (first ``limit`` rows, ``id`` added when absent)."""
    df = read_frame(config.input_path)
    k = config.columns
    require_columns(df, [k.text], "load")
    if config.limit is not None:
        df = df.head(config.limit)
    if df.empty:
        raise StorageError(f"{config.input_path} holds no documents")
    if k.id not in df.columns:
        df.insert(0, k.id, df[k.text].map(document_id))
    ref = ArtifactRef.write(df.reset_index(drop=True), step_path(config, INPUT_STEP_INDEX))
    get_run_logger().info("Loaded %d documents from %s -> %s", ref.rows, config.input_path, ref.path)
    return ref


def trainer_columns(config: PipelineConfig, available: pd.Index) -> dict[str, str]:
    """Final dataset column -> column of the last step file, in output order
    (``question_index`` only when Doc2Query wrote several questions per document)."""
    k = config.columns
    index = {QUESTION_INDEX: QUESTION_INDEX} if QUESTION_INDEX in available else {}
    return {
        k.id: k.id, **index, k.question: k.question, k.scenario: k.scenario, POSITIVE: k.text,
        k.hard_negatives: k.hard_negatives, f"{k.hard_negatives}_ids": f"{k.hard_negatives}_ids",
        "document_order": "document_order",
        "positive_doc_number": "positive_doc_number", k.reasoning: k.reasoning, k.answer: k.answer,
    }


def _simulated(df: pd.DataFrame) -> pd.Series:
    flags = [df[c].fillna(False).astype(bool) for c in ("doc2query_simulated", "distill_simulated") if c in df]
    if not flags:
        return pd.Series(False, index=df.index)
    return pd.concat(flags, axis=1).any(axis=1)


def _sample_cell(value: Any) -> Any:
    if isinstance(value, list):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and len(value) > SAMPLE_CHARS:
        return value[:SAMPLE_CHARS] + " ..."
    return value


def _output_file(config: PipelineConfig, stem: str) -> Path:
    return Path(config.output_path).resolve() / f"{stem}.{config.output_format}"


@task(name="export-dataset", cache_policy=NO_CACHE, persist_result=False)
def export_dataset(final: ArtifactRef, config: PipelineConfig) -> ExportResult:
    """The last step's file -> the final dataset, the failed rows, and a sample-rows table artifact."""
    df = final.load()
    columns = trainer_columns(config, df.columns)
    ok = df[STATUS] == OK
    dataset = df.loc[ok, list(columns.values())].set_axis(list(columns), axis=1)
    dataset["simulated"] = _simulated(df.loc[ok])
    result = ExportResult(dataset=ArtifactRef.write(dataset.reset_index(drop=True), _output_file(config, DATASET_STEM)))
    failed_path = _output_file(config, FAILED_STEM)
    if (~ok).any():
        keep = [config.columns.id, STATUS, ERROR, *[c for c in df.columns if c.endswith("_status")]]
        result.failed = ArtifactRef.write(df.loc[~ok, keep].reset_index(drop=True), failed_path)
    else:
        failed_path.unlink(missing_ok=True)  # a file from an earlier run would describe other rows
    sample = [{c: _sample_cell(v) for c, v in row.items()} for row in dataset.head(SAMPLE_ROWS).to_dict("records")]
    create_table_artifact(
        table=sample, key="rare-dataset-sample",
        description=f"First {len(sample)} of {len(dataset)} rows of {result.dataset.path}"
                    + (" - SIMULATED answers" if bool(dataset["simulated"].any()) else ""))
    get_run_logger().info("Wrote %d rows to %s (%d failed rows%s)", len(dataset), result.dataset.path,
                          int((~ok).sum()), f" in {result.failed.path}" if result.failed else "")
    return result


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def publish_report(records: list[StepRecord], config: PipelineConfig, source: ArtifactRef,
                   exported: ExportResult, simulated: bool) -> Report:
    """The run report -> ``report.md`` + ``summary.json`` in the output folder and a markdown artifact."""
    header = {
        "Input": f"{config.input_path} ({source.rows} documents)",
        "LLM": (f"built-in simulator (model name `{config.llm.model}`)" if simulated
                else f"{redact_url(config.llm.base_url or '')} model `{config.llm.model}`"),
        "Dataset": exported.dataset.path,
        "Failed rows": exported.failed.path if exported.failed else "none",
        "Step files": str(Path(config.cache_path).resolve()),
    }
    report = build_report(records, config.prices, simulated=simulated, dataset_rows=exported.dataset.rows,
                          header=header)
    out_dir = Path(config.output_path).resolve()
    write_text_atomic(out_dir / REPORT_FILE, report.markdown)
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(report.summary, indent=1))
    create_markdown_artifact(markdown=report.markdown, key="rare-report",
                             description="RARE pipeline report" + (" (SIMULATED answers)" if report.summary["simulated"] else ""))
    return report
