"""Loading the input and exporting the result, as Prefect tasks (never cached: both are cheap,
and loading is what computes the content hash every step's cache key starts from).

* :func:`load_input` - the documents file -> step 0 of the layout, named by its cache key
  (:func:`rare_core.artifacts.keys.input_key`: the input's content hash and the settings that shape
  the rows), checked, limit applied, an id column added from the text's hash when the input
  has none (:func:`rare_core.inputs.load_documents`) -> :class:`ArtifactRef`. It also removes the
  previous run's dataset, failed rows and report from the output folder, so that the files
  there always describe the last run (a failed run leaves none that look fresh).
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

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from rare_core.artifacts.input_files import corpus_writer, whole_input_corpus, write_shards
from rare_core.artifacts.keys import input_key
from rare_core.artifacts.layout import input_paths
from rare_core.artifacts.refs import ArtifactRef
from rare_core.config import LLMRoles, PipelineConfig
from rare_core.hashing import file_sha256
from rare_core.estimate import build_estimate
from rare_core.estimate_actual import compare, render_comparison
from rare_core.tokens import token_counter_for
from rare_core.exports import export as export_formats, file_chunks
from rare_core.inputs import count_documents, iter_documents, load_documents
from rare_core.llm.config import redact_url
from rare_core.operators.base import ERROR, ERROR_KIND, OK, RESERVED_PREFIX, STATUS, step_column
from rare_core.operators.doc2query import QUESTION_INDEX
from rare_core.pipeline import STEPS, dataset_columns, required_dataset_columns
from rare_core.prices import price_for
from rare_core.report import Report, RunSummary, StepRecord, build_report
from rare_core.report_html import chart_columns, render_html
from rare_core.shards import shard_bounds, shard_count
from rare_core.storage import (
    FORMATS, STREAMED_FORMATS, FrameWriter, format_of, frame_columns, remove_frame, write_text_atomic,
)
from tasks.progress import FINISH_WAIT, publish

DATASET_STEM = "dataset"
FAILED_STEM = "failed_rows"
REPORT_FILE = "report.md"
REPORT_HTML = "report.html"
SUMMARY_FILE = "summary.json"
RUN_CONFIG_FILE = "run_config.json"  # the run's PipelineConfig (no key: only the NAME of its variable)
SIMULATED = f"{RESERVED_PREFIX}simulated"
SAMPLE_ROWS = 5
ESTIMATE_MAX_DOCS = 20_000
SAMPLE_CHARS = 240


class LoadedInput(BaseModel):
    """The run's documents on disk: step 0 of the layout as one file, or one file per shard
    (in row order), and for a sharded run the corpus file its BM25 index is built from."""

    shards: list[ArtifactRef]
    corpus: ArtifactRef | None = None

    @property
    def rows(self) -> int:
        return sum(ref.rows for ref in self.shards)

    def load(self) -> pd.DataFrame:
        """Every document, in order."""
        return load_all(self.shards)


def load_all(refs: list[ArtifactRef]) -> pd.DataFrame:
    """The frames of ``refs`` one after the other (a sharded step's rows, in order)."""
    if len(refs) == 1:
        return refs[0].load()
    return pd.concat([ref.load() for ref in refs], ignore_index=True)


class ExportResult(BaseModel):
    """The files of the final dataset: the usable rows, and the failed ones (None when none failed)."""

    dataset: ArtifactRef
    failed: ArtifactRef | None = None


@task(name="load-input", cache_policy=NO_CACHE, persist_result=False)
def load_input(config: PipelineConfig) -> LoadedInput:
    """The documents file -> step 0 (checked, first ``limit`` rows, ``id`` added when absent),
    as one file or, for ``shard_count(...) > 1``, one file per shard plus the corpus file. A
    sharded input is read chunk by chunk (rare_core.inputs.iter_documents): at most a shard and
    a chunk of documents are in memory at once.

    The files are named by the input's cache key, so runs on other inputs sharing the cache
    folder never replace them; a run on the same input and settings writes the same bytes."""
    removed = clear_outputs(config)
    logger = get_run_logger()
    if removed:
        logger.info("Removed the previous run's %s from %s", ", ".join(removed), config.output_path)
    # jsonl and parquet are counted without decoding a record, then streamed; json and csv can
    # only be read whole, so they are read once and split in memory.
    whole = None if format_of(config.input_path) in STREAMED_FORMATS else load_documents(config)
    total = count_documents(config) if whole is None else len(whole)
    count = shard_count(total, config.shards, config.dask.workers)
    key = input_key(config, count)
    files = input_paths(config, key, count)
    everything = whole_input_corpus(config, key)
    if everything:
        logger.info("limit=%d: BM25 mines the negatives from all %d documents of the input (%s)", config.limit,
                    everything.rows, everything.path)
    if count == 1:
        loaded = LoadedInput(shards=[ArtifactRef.write(load_documents(config) if whole is None else whole, files[0])],
                             corpus=everything)
        logger.info("Loaded %d documents from %s -> %s", loaded.rows, config.input_path, files[0])
        return loaded
    corpus = None if config.hardneg.corpus_path or everything else corpus_writer(config, key)
    chunks = iter_documents(config) if whole is None else [whole]
    shards = write_shards(config, files, shard_bounds(total, count), chunks, corpus)
    loaded = LoadedInput(shards=shards, corpus=everything or (
        corpus.close(lambda: (ref.load() for ref in shards)) if corpus else None))
    logger.info("Loaded %d documents from %s -> %d shards under %s", loaded.rows, config.input_path, count,
                Path(shards[0].path).parent)
    return loaded


def clear_outputs(config: PipelineConfig) -> list[str]:
    """Remove the previous run's dataset, failed rows (any format), report and summary; returns their names."""
    out_dir = Path(config.output_path).resolve()
    removed = [name for stem in (DATASET_STEM, FAILED_STEM) for fmt in FORMATS
               for name in remove_frame(out_dir / f"{stem}.{fmt}")]
    for name in (REPORT_FILE, REPORT_HTML, SUMMARY_FILE, RUN_CONFIG_FILE):
        if (out_dir / name).is_file():
            (out_dir / name).unlink()
            removed.append(name)
    return removed


def trainer_columns(config: PipelineConfig, available: pd.Index) -> dict[str, str]:
    """Final dataset column -> column of the last step file, in output order
    (:func:`rare_core.pipeline.dataset_columns`): the required ones, and the others the step
    file has (``question_index`` with several questions per document, a scenario given with the
    questions, the verification's verdict...)."""
    required = required_dataset_columns(config)
    return {out: src for out, src in dataset_columns(config).items() if out in required or src in available}


def _simulated(df: pd.DataFrame) -> pd.Series:
    columns = [step_column(spec.name, "simulated") for spec in STEPS if spec.uses_llm]
    flags = [df[c].fillna(False).astype(bool) for c in columns if c in df]
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


CHART_ROWS = 50_000  # rows of the final step file report.html draws from, at most (an even sample above)


@task(name="export-dataset", cache_policy=NO_CACHE, persist_result=False)
def export_dataset(final: list[ArtifactRef], config: PipelineConfig) -> ExportResult:
    """The last step's file (or its shards' files, in order) -> the final dataset, the failed
    rows, and a sample-rows table artifact. Shards are read and written one at a time."""
    available = pd.Index(dict.fromkeys(c for ref in final for c in frame_columns(ref.path)))
    columns = trainer_columns(config, available)
    index = [QUESTION_INDEX] if QUESTION_INDEX in available else []
    statuses = [step_column(spec.name, "status") for spec in STEPS if step_column(spec.name, "status") in available]
    # A failed row keeps what was paid for and can still be read: the teacher's answer of a row
    # the judge could not judge, say.
    failed_columns = [config.columns.id, *index, STATUS, ERROR, ERROR_KIND, *statuses,
                      config.columns.reasoning, config.columns.answer]
    dataset_path, failed_path = _output_file(config, DATASET_STEM), _output_file(config, FAILED_STEM)
    sample: list[dict] = []
    simulated = False
    with FrameWriter(dataset_path) as rows, FrameWriter(failed_path) as failed:
        for ref in final:
            df = ref.load()
            ok = df[STATUS] == OK
            part = df.loc[ok].reindex(columns=list(columns.values())).set_axis(list(columns), axis=1)
            part[SIMULATED] = _simulated(df.loc[ok])
            rows.write(part.reset_index(drop=True))
            failed.write(df.loc[~ok].reindex(columns=failed_columns).reset_index(drop=True))
            simulated = simulated or bool(part[SIMULATED].any())
            sample += [{c: _sample_cell(v) for c, v in row.items()}
                       for row in part.head(SAMPLE_ROWS - len(sample)).to_dict("records")]
    result = ExportResult(dataset=ArtifactRef(path=str(dataset_path), sha256=file_sha256(dataset_path), rows=rows.rows))
    if failed.rows:
        result.failed = ArtifactRef(path=str(failed_path), sha256=file_sha256(failed_path), rows=failed.rows)
    else:
        remove_frame(failed_path)  # no failed rows: a file would be an empty table (or one from an earlier run)
    publish(create_table_artifact,
        table=sample, key="rare-dataset-sample",
        description=f"First {len(sample)} of {rows.rows} rows of {result.dataset.path}"
                    + (" - SIMULATED answers" if simulated else ""))
    get_run_logger().info("Wrote %d rows to %s (%d failed rows%s)", rows.rows, result.dataset.path,
                          failed.rows, f" in {result.failed.path}" if result.failed else "")
    return result


def chart_frame(final: list[ArtifactRef], config: PipelineConfig, cap: int = CHART_ROWS) -> tuple[pd.DataFrame, tuple[int, int]]:
    """What report.html draws from: the chart columns of the final step file(s), every row up
    to ``cap`` rows, else an evenly spaced sample of ``cap``; and (rows, ok rows) of them all."""
    total = sum(ref.rows for ref in final)
    step = max(1, -(-total // cap))
    wanted = chart_columns(config.columns)
    parts, seen, ok = [], 0, 0
    for ref in final:
        df = ref.load()
        ok += int((df[STATUS] == OK).sum())
        keep = np.arange((-seen) % step, len(df), step)
        parts.append(df.iloc[keep][[c for c in wanted if c in df.columns]])
        seen += len(df)
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return frame, (total, ok)


def _estimate_section(config: PipelineConfig, source: LoadedInput, records: list[StepRecord]) -> dict[str, str]:
    """The report's "Estimate against actual" (``rare estimate``'s figures beside this run's);
    left out above ESTIMATE_MAX_DOCS documents, where counting every prompt takes minutes."""
    if source.rows > ESTIMATE_MAX_DOCS:
        return {"Estimate against actual": f"Not computed for {source.rows:,} documents (over "
                                           f"{ESTIMATE_MAX_DOCS:,}): run `rare estimate` with the same options."}
    estimate = build_estimate(config, source.load())
    return {"Estimate against actual": render_comparison(compare(estimate, records))}


@task(name="publish-report", cache_policy=NO_CACHE, persist_result=False)
def publish_report(records: list[StepRecord], config: PipelineConfig, source: LoadedInput, final: list[ArtifactRef],
                   exported: ExportResult, simulated_roles: list[str]) -> Report:
    """The run report -> ``report.md``, ``report.html`` (charts), ``summary.json`` and the run's
    ``run_config.json`` in the output folder, and a markdown artifact."""
    header = {"Input": f"{config.input_path} ({source.rows} documents"
                       + (f" in {len(source.shards)} shards)" if len(source.shards) > 1 else ")")}
    for role in LLMRoles.model_fields:
        llm = config.llm_for(role)
        header[f"LLM ({role})"] = (f"built-in simulator (model name `{llm.model}`)" if role in simulated_roles
                                   else f"{redact_url(llm.base_url or '')} model `{llm.model}`")
    header.update({
        "Dataset": exported.dataset.path,
        "Failed rows": exported.failed.path if exported.failed else "none",
        "Step files": str(Path(config.cache_path).resolve()),
    })
    simulated = bool(simulated_roles)
    prices = {spec.name: price_for(config.llm_for(spec.role).model, config.prices) for spec in STEPS if spec.role}
    report = build_report(records, prices, simulated=simulated, dataset_rows=exported.dataset.rows,
                          header=header, sections=_estimate_section(config, source, records))
    out_dir = Path(config.output_path).resolve()
    write_text_atomic(out_dir / REPORT_FILE, report.markdown)
    write_text_atomic(out_dir / SUMMARY_FILE, report.run_summary.model_dump_json(indent=1))
    write_text_atomic(out_dir / RUN_CONFIG_FILE, config.model_dump_json(indent=1))
    counter, _ = token_counter_for(config.llm_for("teacher").model)
    charts, rows = chart_frame(final, config)
    write_text_atomic(out_dir / REPORT_HTML, render_html(report.run_summary, charts, columns=config.columns,
                                                         token_counter=counter, rows=rows))
    published = publish(create_markdown_artifact, markdown=report.markdown, key="rare-report",
                        description="RARE pipeline report" + (" (SIMULATED answers)" if report.run_summary.simulated else ""))
    published.wait(FINISH_WAIT)  # the run's last report: a moment for it to reach the API, never more
    return report


def provenance_of(summary: RunSummary, config: PipelineConfig, command: str | None = None) -> dict:
    """What a dataset card says of the run that made the data: counts per step, verification,
    simulated or not, prompt versions, the command."""
    return {
        "steps": {s.step: {"rows in": s.rows_in, "rows out": s.rows_out, "failed": s.failed, "status": s.status}
                  for s in summary.steps},
        "found": [f"{step}: {said}" for step, said in summary.findings()],
        "verification": config.verify.method,
        "simulated": summary.simulated,
        "prompt_versions": {spec.name: spec.operator.prompt_version for spec in STEPS if spec.uses_llm},
        "command": command,
    }


@task(name="export-formats", cache_policy=NO_CACHE, persist_result=False)
def export_training_formats(dataset: ArtifactRef, config: PipelineConfig, report: Report) -> dict[str, str]:
    """The final dataset -> each of ``config.export`` in ``{export_path}/{format}/`` with its card."""
    target = Path(config.export_path or Path(config.output_path) / "exports").resolve()
    dataset.verify()
    folders = export_formats(file_chunks(dataset.path), config, config.export, target,
                             provenance_of(report.run_summary, config, config.command))
    get_run_logger().info("Exported %s to %s", ", ".join(folders), target)
    return {name: str(path) for name, path in folders.items()}
