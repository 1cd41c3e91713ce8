"""One Prefect task per step of :data:`rare_core.pipeline.STEPS`, and :func:`run_step`, which the flow calls.

Each task: read the input artifact -> build the step's operator from its spec and call it ->
write the step file of the layout (``{cache_path}/{prefix}_step{N}.{type}``) -> return a
:class:`StepResult` (the file's :class:`ArtifactRef` and the operator's :class:`StepSummary`).
Tasks hold no prompt, parsing or BM25 logic. They are cached by :class:`StepCachePolicy`
(tasks/artifacts.py) with results persisted under ``{cache_path}/prefect_results``;
:func:`run_step` sets that storage, forces a recompute when the cached result must not be
served (:func:`~tasks.artifacts.recompute_reason`), and tells whether Prefect served the cache.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from prefect import Task, get_run_logger, task
from pydantic import BaseModel

from rare_core.config import PipelineConfig
from rare_core.llm.client import APILLMServing_request
from rare_core.pipeline import STEPS, StepSpec
from rare_core.report import StepRecord
from tasks.artifacts import ArtifactRef, StepCachePolicy, StepResult, recompute_reason, results_dir, write_step_artifact
from tasks.progress import step_progress


def _step_task(spec: StepSpec) -> Task:
    """The Prefect task of ``spec``: ``(source, config, clients=None) -> StepResult`` (``clients``:
    the run's LLM client per role)."""

    def run(source: ArtifactRef, config: PipelineConfig,
            clients: dict[str, APILLMServing_request] | None = None) -> StepResult:
        llm = (clients or {}).get(spec.role) if spec.role else None
        progress = step_progress(spec.name, spec.label, llm.concurrency.snapshot) if llm else nullcontext(None)
        with progress as on_progress:
            operator = spec.build(config, clients, on_progress)
            out = operator.process(source.load(), **spec.keys(config))
        summary = operator.last_summary
        if summary is None:  # every operator sets it; a None here is a bug in the operator
            raise RuntimeError(f"{spec.name}: the operator returned no summary")
        ref = write_step_artifact(spec, source, config, out)
        get_run_logger().info(
            "%s: %d rows in, %d out, %d failed%s -> %s (sha256 %s...)", spec.name, summary.rows_in, summary.rows_out,
            summary.failed, f" {summary.failures_by_reason}" if summary.failed else "", ref.path, ref.sha256[:12])
        return StepResult(artifact=ref, summary=summary)

    run.__name__ = run.__qualname__ = spec.task_name.replace("-", "_")
    run.__doc__ = f"{spec.label}: step {spec.index - 1} file -> step {spec.index} file."
    return task(name=spec.task_name, cache_policy=StepCachePolicy(step=spec.name), persist_result=True)(run)


STEP_TASKS: dict[str, Task] = {spec.name: _step_task(spec) for spec in STEPS}


class StepOutcome(BaseModel):
    """A step as the flow sees it: its result, and its line in the report."""

    result: StepResult
    record: StepRecord


def run_step(spec: StepSpec, source: ArtifactRef, config: PipelineConfig,
             clients: dict[str, APILLMServing_request] | None = None) -> StepOutcome:
    """Run ``spec`` on ``source`` inside the current flow run (LLM steps need the run's
    ``clients``, one per role).

    Raises the step's exception when the task failed. ``record.cached`` is True when Prefect
    served the result from its cache (the task run's state is ``Cached``).
    """
    missing = [role for role in spec.roles(config) if role not in (clients or {})]
    if missing:
        raise ValueError(f"{spec.name} calls the LLM as {', '.join(missing)}: pass the run's clients")
    step_task = STEP_TASKS[spec.name]
    logger = get_run_logger()

    def call(refresh: bool):
        configured = step_task.with_options(result_storage=results_dir(config), refresh_cache=refresh)
        state = configured(source, config, clients, return_state=True)
        return state, state.result()

    started = time.perf_counter()
    reason = recompute_reason(spec, source, config)
    if reason:
        logger.info("%s: computing it (%s)", spec.name, reason)
    state, result = call(reason is not None)
    cached = state.name == "Cached"
    if cached and not result.artifact.is_intact():
        # Safety net: a run stopped between writing the step file and recording its result can
        # leave a cache record describing other bytes than the file's. Recompute and re-record.
        logger.warning("%s: the cached result does not match %s: recomputing it", spec.name, result.artifact.path)
        state, result = call(True)
        cached = False
    if cached:
        logger.info("%s: Cached (input and settings unchanged): %s", spec.name, result.artifact.path)
    return StepOutcome(result=result, record=StepRecord(
        summary=result.summary, wall_seconds=time.perf_counter() - started, cached=cached))
