"""The RARE pipeline flow: load -> each step of ``rare_core.pipeline.STEPS`` (Doc2Query ->
BM25HardNeg -> ReasonDistill) -> export -> report.

Its one parameter is :class:`rare_core.config.PipelineConfig`; Prefect validates it (and, for
deployments with ``enforce_parameter_schema``, the API refuses invalid values before a run
exists). Composition only: which tasks, in what order, with which config. The steps are cached
(rare_core/artifacts/keys.py), so a rerun with the same input and config makes no LLM request and no
BM25 search, and a changed setting reruns that step and the ones after it.

The run fails (and ``rare run`` exits non-zero) when a step raises, or when no row of a
non-empty input made it through every step; rows failing one by one are only reported.
"""

# No ``from __future__ import annotations`` here: Prefect validates the flow's parameters against
# its annotations, and a served run (flow.serve runs the flow object in a subprocess) cannot
# resolve the string "PipelineConfig" (see PrefectHQ/prefect#19288 for the mechanism).
from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.report import Report
from rare_core.pipeline import enabled_steps
from rare_core.artifacts.layout import resolve_paths
from tasks.io import ExportResult, export_dataset, export_training_formats, load_input, publish_report
from tasks.progress import ShardProgress
from tasks.run_context import run_context
from tasks.steps import prepare_index, run_shards, run_step

FLOW_NAME = "rare-pipeline"


class EmptyDatasetError(RareError):
    """No row of the input went through every step: there is nothing to train on."""


class PipelineResult(BaseModel):
    """What a run produced: the dataset files and the report."""

    exported: ExportResult
    report: Report
    simulated: bool


# One worker thread by default: see flows/runners.py, which also picks Dask at run time.
@flow(name=FLOW_NAME, description="Documents -> questions, BM25 hard negatives, distilled reasoning (RARE training data).",
      task_runner=ThreadPoolTaskRunner(max_workers=1))
def rare_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run the whole pipeline on ``config.input_path``; writes the step files under ``config.cache_path``
    and the dataset and report under ``config.output_path``.

    One shard: each step on the step file of the layout. Several (``config.shards``): each step
    over the shards' files (tasks.steps.run_shards) on the flow's task runner; a step that
    searches the whole corpus first gets its index built once (tasks.steps.prepare_index),
    while the steps before it run."""
    logger = get_run_logger()
    config = resolve_paths(config)
    if config.dask.enabled and isinstance(FlowRunContext.get().task_runner, ThreadPoolTaskRunner):
        logger.warning("dask settings are given but this run has the thread pool: they apply to `rare run` "
                       "(flows.runners.run_pipeline), not to a deployment's runs")
    source = load_input(config)
    artifacts, records = source.shards, []
    steps = enabled_steps(config)
    # What the run holds (its locked cache keys: no other run on the cache folder replaces a
    # step file this run still reads; its endpoints and clients) closes when it ends.
    with run_context(config, logger) as run:
        llm, locks = run.endpoints, run.locks
        # A sharded run, and a run with a limit, have a corpus file (the whole input): the steps
        # that search it get their index now, built while the steps before them run. Each index
        # future is handed to its step (popped):
        # once the step is done nothing may hold it (tasks/placement.py restarts the searchers).
        searching = {spec.name: spec.corpus_config(config, source.corpus.path)
                     for spec in steps if spec.searches_corpus and source.corpus}
        indexes = {spec.name: prepare_index(spec, searching[spec.name])
                   for spec in steps if spec.name in searching and len(artifacts) > 1}
        for spec in steps:
            if len(artifacts) == 1:  # a corpus file here is the whole input of a run with a limit
                outcome = run_step(spec, artifacts[0], searching.get(spec.name, config), llm, locks=locks)
            else:
                outcome = run_shards(spec, artifacts, searching.get(spec.name, config), llm,
                                     wait_for=[indexes.pop(spec.name)] if spec.name in indexes else None,
                                     on_shard=ShardProgress(spec.name, spec.label), locks=locks)
            artifacts = outcome.artifacts
            records.append(outcome.record)
        exported = export_dataset(artifacts, config)
        report = publish_report(records, config, source, artifacts, exported, llm.simulated_roles)
    if config.export and exported.dataset.rows:
        export_training_formats(exported.dataset, config, report)
    if exported.dataset.rows == 0:
        raise EmptyDatasetError(
            f"none of the {source.rows} documents went through every step; reasons in "
            f"{exported.failed.path if exported.failed else 'the report'}")
    return PipelineResult(exported=exported, report=report, simulated=report.run_summary.simulated)
