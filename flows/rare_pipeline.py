"""The RARE pipeline flow: load -> each step of ``rare_core.pipeline.STEPS`` (Doc2Query ->
BM25HardNeg -> ReasonDistill) -> export -> report.

Its one parameter is :class:`rare_core.config.PipelineConfig`; Prefect validates it (and, for
deployments with ``enforce_parameter_schema``, the API refuses invalid values before a run
exists). Composition only: which tasks, in what order, with which config. The steps are cached
(tasks/artifacts.py), so a rerun with the same input and config makes no LLM request and no
BM25 search, and a changed setting reruns that step and the ones after it.

The run fails (and ``rare run`` exits non-zero) when a step raises, or when no row of a
non-empty input made it through every step; rows failing one by one are only reported.
"""

# No ``from __future__ import annotations`` here: Prefect validates the flow's parameters against
# its annotations, and a served run (flow.serve runs the flow object in a subprocess) cannot
# resolve the string "PipelineConfig" (see PrefectHQ/prefect#19288 for the mechanism).
from prefect import flow, get_run_logger
from pydantic import BaseModel

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.report import Report
from rare_core.pipeline import STEPS
from tasks.artifacts import resolve_paths
from tasks.io import ExportResult, export_dataset, export_training_formats, load_input, publish_report
from tasks.llm import llm_endpoints
from tasks.steps import run_step

FLOW_NAME = "rare-pipeline"


class EmptyDatasetError(RareError):
    """No row of the input went through every step: there is nothing to train on."""


class PipelineResult(BaseModel):
    """What a run produced: the dataset files and the report."""

    exported: ExportResult
    report: Report
    simulated: bool


@flow(name=FLOW_NAME, description="Documents -> questions, BM25 hard negatives, distilled reasoning (RARE training data).")
def rare_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run the whole pipeline on ``config.input_path``; writes the step files under ``config.cache_path``
    and the dataset and report under ``config.output_path``."""
    logger = get_run_logger()
    config = resolve_paths(config)
    source = load_input(config)
    artifact, records = source, []
    with llm_endpoints(config, logger) as llm:
        for spec in (spec for spec in STEPS if spec.enabled(config)):
            outcome = run_step(spec, artifact, config, llm.clients)
            artifact = outcome.result.artifact
            records.append(outcome.record)
    exported = export_dataset(artifact, config)
    report = publish_report(records, config, source, artifact, exported, llm.simulated_roles)
    if config.export and exported.dataset.rows:
        export_training_formats(exported.dataset, config, report)
    if exported.dataset.rows == 0:
        raise EmptyDatasetError(
            f"none of the {source.rows} documents went through every step; reasons in "
            f"{exported.failed.path if exported.failed else 'the report'}")
    return PipelineResult(exported=exported, report=report, simulated=report.summary["simulated"])
