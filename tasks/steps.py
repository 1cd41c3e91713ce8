"""One Prefect task per operator, and :func:`run_step`, which the flow calls to run one.

Each task: read the input artifact -> call the rare_core operator -> write the step file of the
layout (``{cache_path}/{prefix}_step{N}.{type}``) -> return a :class:`StepResult` (the file's
:class:`ArtifactRef` and the operator's :class:`StepSummary`). Tasks hold no prompt, parsing
or BM25 logic. They are cached by :class:`StepCachePolicy` (tasks/artifacts.py) with results
persisted under ``{cache_path}/prefect_results``; :func:`run_step` sets that storage, forces a
recompute when the step file is not the cached one, and tells whether Prefect served the cache.

One module for the three steps: they share the same five lines of plumbing
(:func:`_finish`, the progress artifact), and each task body is only the operator call.
"""

from __future__ import annotations

import time

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel

from rare_core.config import PipelineConfig
from rare_core.llm.client import APILLMServing_request
from rare_core.operators.base import StepSummary
from rare_core.operators.bm25_hardneg import BM25HardNeg
from rare_core.operators.doc2query import Doc2Query
from rare_core.operators.reason_distill import ReasonDistill
from rare_core.report import StepRecord
from tasks.artifacts import (
    DISTILL, DOC2QUERY, HARDNEG, ArtifactRef, StepCachePolicy, StepName, StepResult, needs_recompute,
    results_dir, write_step_artifact,
)
from tasks.progress import step_progress


def _finish(step: StepName, source: ArtifactRef, config: PipelineConfig, out: pd.DataFrame,
            summary: StepSummary | None) -> StepResult:
    """Write the step's file and log what the step did."""
    if summary is None:  # every operator sets it; a None here is a bug in the operator
        raise RuntimeError(f"{step}: the operator returned no summary")
    ref = write_step_artifact(step, source, config, out)
    get_run_logger().info(
        "%s: %d rows in, %d out, %d failed%s -> %s (sha256 %s...)", step, summary.rows_in, summary.rows_out,
        summary.failed, f" {summary.failures_by_reason}" if summary.failed else "", ref.path, ref.sha256[:12])
    return StepResult(artifact=ref, summary=summary)


@task(name="doc2query", cache_policy=StepCachePolicy(step=DOC2QUERY), persist_result=True)
def doc2query_step(source: ArtifactRef, config: PipelineConfig, llm: APILLMServing_request) -> StepResult:
    """Documents in ``source`` -> step 1: a question and a scenario per document (Doc2Query)."""
    k = config.columns
    with step_progress(DOC2QUERY, "Doc2Query") as progress:
        operator = Doc2Query(llm_serving=llm, config=config.doc2query, on_progress=progress)
        out = operator.process(source.load(), input_key=k.text, output_question_key=k.question,
                               output_scenario_key=k.scenario)
    return _finish(DOC2QUERY, source, config, out, operator.last_summary)


@task(name="bm25-hardneg", cache_policy=StepCachePolicy(step=HARDNEG), persist_result=True)
def hardneg_step(source: ArtifactRef, config: PipelineConfig) -> StepResult:
    """Step 1 -> step 2: BM25 hard negatives per question over the documents themselves."""
    k = config.columns
    operator = BM25HardNeg(config=config.hardneg)
    out = operator.process(source.load(), input_question_key=k.question, input_text_key=k.text,
                           output_negatives_key=k.hard_negatives)
    return _finish(HARDNEG, source, config, out, operator.last_summary)


@task(name="reason-distill", cache_policy=StepCachePolicy(step=DISTILL), persist_result=True)
def distill_step(source: ArtifactRef, config: PipelineConfig, llm: APILLMServing_request) -> StepResult:
    """Step 2 -> step 3: the teacher's reasoning and answer over the positive and its negatives."""
    k = config.columns
    with step_progress(DISTILL, "ReasonDistill") as progress:
        operator = ReasonDistill(llm_serving=llm, config=config.distill, on_progress=progress)
        out = operator.process(source.load(), input_text_key=k.text, input_question_key=k.question,
                               input_scenario_key=k.scenario, input_hardneg_key=k.hard_negatives,
                               output_key=k.reasoning, output_answer_key=k.answer)
    return _finish(DISTILL, source, config, out, operator.last_summary)


class StepOutcome(BaseModel):
    """A step as the flow sees it: its result, and its line in the report."""

    result: StepResult
    record: StepRecord


def run_step(step: StepName, source: ArtifactRef, config: PipelineConfig,
             llm: APILLMServing_request | None = None) -> StepOutcome:
    """Run step ``step`` on ``source`` inside the current flow run (LLM steps need ``llm``).

    Raises the step's exception when the task failed. ``record.cached`` is True when Prefect
    served the result from its cache (the task run's state is ``Cached``). The step is run
    with ``refresh_cache=True`` when its file is not the one its cache key describes
    (:func:`tasks.artifacts.needs_recompute`).
    """
    step_task = {DOC2QUERY: doc2query_step, HARDNEG: hardneg_step, DISTILL: distill_step}[step]
    if step != HARDNEG and llm is None:
        raise ValueError(f"{step} is an LLM step: pass the run's LLM client")
    args = (source, config) if step == HARDNEG else (source, config, llm)
    logger = get_run_logger()

    def call(refresh: bool):
        configured = step_task.with_options(result_storage=results_dir(config), refresh_cache=refresh)
        state = configured(*args, return_state=True)
        return state, state.result()

    started = time.perf_counter()
    refresh = needs_recompute(step, source, config)
    if refresh:
        logger.info("%s: no intact step file for this input and these settings: computing it", step)
    state, result = call(refresh)
    cached = state.name == "Cached"
    if cached and not result.artifact.is_intact():
        # Safety net: a run stopped between writing the step file and recording its result can
        # leave a cache record describing other bytes than the file's. Recompute and re-record.
        logger.warning("%s: the cached result does not match %s: recomputing it", step, result.artifact.path)
        state, result = call(True)
        cached = False
    if cached:
        logger.info("%s: Cached (input and settings unchanged): %s", step, result.artifact.path)
    return StepOutcome(result=result, record=StepRecord(
        summary=result.summary, wall_seconds=time.perf_counter() - started, cached=cached))
