"""The Prefect tasks of the steps of :data:`rare_core.pipeline.STEPS`, and the two calls the flow makes.

Per spec there are two tasks, both cached by :class:`StepCachePolicy` (tasks/artifacts.py) with
results persisted under ``{cache_path}/prefect_results``:

* the **row task** ``(source, config, endpoints, shard) -> StepResult``: read one input file ->
  build the step's operator from its spec and call it -> write its output file (the step's
  file of the layout named by its cache key, ``{cache_path}/{prefix}_step{N}-{key}.{type}``, or
  with ``shard`` that shard's file: :func:`rare_core.artifacts.keys.output_paths`) -> its
  :class:`ArtifactRef` and the operator's :class:`StepSummary`;
* the **corpus task** (a ``scope="corpus"`` step of a sharded run): every shard's input file
  at once -> the operator over all rows in order -> one output file per shard
  (:class:`ShardsResult`).

A step that searches the corpus (BM25, ``searches_corpus``) of a sharded run also has its **index task**, run once before
its shards: it builds the index of the run's corpus file (or opens it) where the shards run.

:func:`run_step` runs one step on one file (the single-file layout); :func:`run_shards` runs a
step over the shards: the row task per shard, submitted to the flow's task runner (the thread
pool, or Dask worker processes), each shard cached and resumed on its own. Both force a
recompute when a cached result must not be served (:func:`~rare_core.artifacts.sidecar.recompute_reason`)
and tell whether Prefect served the cache. Both first claim the step's cache keys in the run's
:class:`~rare_core.artifacts.locks.StepLocks` (:func:`~rare_core.artifacts.locks.claim`): a key another run on the
same cache folder is computing is waited for, then served. Tasks get the run's LLM endpoints as settings and
make their clients in the process they run in (:func:`tasks.llm.clients_for`). Tasks hold no
prompt, parsing or BM25 logic.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable

import pandas as pd
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from rare_core.artifacts.keys import cache_key, output_paths
from rare_core.artifacts.layout import results_dir
from rare_core.artifacts.locks import StepLocks, claim
from rare_core.artifacts.refs import ArtifactRef, StepResult
from rare_core.artifacts.sidecar import write_step_artifact
from rare_core.config import PipelineConfig
from rare_core.llm.engine import cancel_running_batches
from rare_core.memory import release_free_memory
from rare_core.operators.base import StepSummary, merge_summaries
from rare_core.pipeline import STEPS
from rare_core.report import StepRecord
from rare_core.shards import Shard
from rare_core.step_spec import StepSpec
from tasks.artifacts import StepCachePolicy, prefect_records
from tasks.llm import LLMEndpoints, clients_for
from tasks.placement import flow_task_runner, placed, restart_search_workers
from tasks.progress import step_progress


class ShardsResult(BaseModel):
    """What a corpus task returns (and what Prefect caches): one output file per shard, and the summary."""

    artifacts: list[ArtifactRef]
    summary: StepSummary


def _compute(spec: StepSpec, df: pd.DataFrame, config: PipelineConfig, endpoints: LLMEndpoints | None,
             shard: Shard | None = None) -> tuple[pd.DataFrame, StepSummary]:
    """The operator of ``spec`` over ``df`` -> (output frame, summary)."""
    clients = clients_for(endpoints)
    llm = clients.get(spec.role) if spec.role else None
    place = {"shard": f"{shard.index + 1}/{shard.count}"} if shard else {}
    live = (lambda: {**llm.concurrency.snapshot(), **place}) if llm else None
    progress = step_progress(spec.name, spec.label, live) if llm else nullcontext(None)
    with progress as on_progress:
        operator = spec.build(config, clients, on_progress)
        out = operator.process(df, **spec.keys(config))
    if operator.last_summary is None:  # every operator sets it; a None here is a bug in the operator
        raise RuntimeError(f"{spec.name}: the operator returned no summary")
    return out, operator.last_summary


def _log_written(spec: StepSpec, summary: StepSummary, refs: list[ArtifactRef]) -> None:
    where = refs[0].path if len(refs) == 1 else f"{len(refs)} shard files under {refs[0].path.rsplit('/', 1)[0]}"
    get_run_logger().info(
        "%s: %d rows in, %d out, %d failed%s -> %s (sha256 %s...)", spec.name, summary.rows_in, summary.rows_out,
        summary.failed, f" {summary.failures_by_reason}" if summary.failed else "", where, refs[0].sha256[:12])


def _row_task(spec: StepSpec) -> Task:
    def run(source: ArtifactRef, config: PipelineConfig, endpoints: LLMEndpoints | None = None,
            shard: Shard | None = None) -> StepResult:
        out, summary = _compute(spec, source.load(), config, endpoints, shard)
        ref = write_step_artifact(spec, cache_key(spec, source, config, shard), out,
                                  output_paths(spec, source, config, shard)[0])
        del out
        release_free_memory()  # a worker runs shard after shard: it holds its live data, not the last shard's peak
        _log_written(spec, summary, [ref])
        return StepResult(artifact=ref, summary=summary)

    run.__name__ = run.__qualname__ = spec.task_name.replace("-", "_")
    run.__doc__ = f"{spec.label}: the previous step's file -> its own (or one shard's)."
    return task(name=spec.task_name, cache_policy=StepCachePolicy(step=spec.name), persist_result=True)(run)


def _corpus_task(spec: StepSpec) -> Task:
    def run(source: list[ArtifactRef], config: PipelineConfig, endpoints: LLMEndpoints | None = None) -> ShardsResult:
        frames = [ref.load() for ref in source]
        sizes = [len(frame) for frame in frames]
        out, summary = _compute(spec, pd.concat(frames, ignore_index=True), config, endpoints)
        del frames
        if len(out) != sum(sizes):  # a corpus-scoped step flags rows, it never adds or drops any
            raise RuntimeError(f"{spec.name}: {sum(sizes)} rows in, {len(out)} out: cannot split them into shards")
        key, refs, start = cache_key(spec, source, config), [], 0
        for size, path in zip(sizes, output_paths(spec, source, config)):
            refs.append(write_step_artifact(spec, key, out.iloc[start:start + size].reset_index(drop=True), path))
            start += size
        del out
        release_free_memory()
        _log_written(spec, summary, refs)
        return ShardsResult(artifacts=refs, summary=summary)

    run.__name__ = run.__qualname__ = spec.task_name.replace("-", "_") + "_all_shards"
    run.__doc__ = f"{spec.label} over every shard at once: each shard's file -> each shard's output file."
    return task(name=spec.task_name, cache_policy=StepCachePolicy(step=spec.name), persist_result=True)(run)


def _index_task(spec: StepSpec) -> Task:
    def run(config: PipelineConfig) -> dict[str, Any]:
        index = spec.build(config).prepare()
        get_run_logger().info("%s: index of %d documents %s at %s", spec.name, index.num_docs,
                              "reused" if index.reused else f"built in {index.build_seconds:.1f}s", index.path)
        return {"docs": index.num_docs, "reused": index.reused, "seconds": round(index.build_seconds, 3)}

    run.__name__ = run.__qualname__ = spec.task_name.replace("-", "_") + "_index"
    run.__doc__ = f"{spec.label}: the index of the run's corpus file, built (or opened) once for every shard."
    return task(name=f"{spec.task_name}-index", cache_policy=NO_CACHE, persist_result=False)(run)


ROW_TASKS: dict[str, Task] = {spec.name: _row_task(spec) for spec in STEPS}
CORPUS_TASKS: dict[str, Task] = {spec.name: _corpus_task(spec) for spec in STEPS if spec.scope == "corpus"}
INDEX_TASKS: dict[str, Task] = {spec.name: _index_task(spec) for spec in STEPS if spec.searches_corpus}


class StepOutcome(BaseModel):
    """A step as the flow sees it: its output file(s), and its line in the report."""

    artifacts: list[ArtifactRef]
    record: StepRecord

    @property
    def artifact(self) -> ArtifactRef:
        """The output file of a step run on one file."""
        return self.artifacts[0]


def _check_roles(spec: StepSpec, config: PipelineConfig, endpoints: LLMEndpoints | None) -> None:
    missing = [role for role in spec.roles(config) if role not in (endpoints.roles if endpoints else {})]
    if missing:
        raise ValueError(f"{spec.name} calls the LLM as {', '.join(missing)}: pass the run's endpoints")


def _waiting(spec: StepSpec) -> Callable[[str, bool], None]:
    """The log line of a step that waits for another run on the same cache folder."""
    def log(key: str, exclusive: bool) -> None:
        get_run_logger().info("%s: waiting for another run on this cache folder, which %s (%s)", spec.name,
                              "reads this step's file" if exclusive else "is computing this step", key[:40])
    return log


def _run_cached(spec: StepSpec, step_task: Task, source: ArtifactRef | list[ArtifactRef], config: PipelineConfig,
                endpoints: LLMEndpoints | None, locks: StepLocks) -> tuple[StepResult | ShardsResult, bool]:
    """Call ``step_task`` in the flow's thread -> (result, served from Prefect's cache)."""
    logger = get_run_logger()

    def call(refresh: bool):
        configured = step_task.with_options(result_storage=results_dir(config), refresh_cache=refresh)
        state = configured(source, config, endpoints, return_state=True)
        return state, state.result()

    key = cache_key(spec, source, config)
    [reason] = claim(locks, spec, [(source, None)], config, prefect_records(config), _waiting(spec))
    if reason:
        logger.info("%s: computing it (%s)", spec.name, reason)
    state, result = call(reason is not None)
    cached = state.name == "Cached"
    written = [result.artifact] if isinstance(result, StepResult) else result.artifacts
    if cached and not all(ref.is_intact() for ref in written):
        # Safety net: a run stopped between writing the step file and recording its result can
        # leave a cache record describing other bytes than the file's. Recompute and re-record.
        logger.warning("%s: the cached result does not match its step file(s): recomputing", spec.name)
        locks.hold({key: True}, _waiting(spec))
        state, result = call(True)
        cached = False
    locks.share([key])
    if cached:
        logger.info("%s: Cached (input and settings unchanged)", spec.name)
    return result, cached


def run_step(spec: StepSpec, source: ArtifactRef, config: PipelineConfig, endpoints: LLMEndpoints | None = None,
             *, locks: StepLocks) -> StepOutcome:
    """Run ``spec`` on one file inside the current flow run (LLM steps need the run's ``endpoints``),
    its cache key held in the run's ``locks``.

    Raises the step's exception when the task failed. ``record.cached`` is True when Prefect
    served the result from its cache (the task run's state is ``Cached``).
    """
    _check_roles(spec, config, endpoints)
    started = time.perf_counter()
    result, cached = _run_cached(spec, ROW_TASKS[spec.name], source, config, endpoints, locks)
    return StepOutcome(artifacts=[result.artifact], record=StepRecord(
        summary=result.summary, wall_seconds=time.perf_counter() - started, cached=cached))


def prepare_index(spec: StepSpec, config: PipelineConfig) -> PrefectFuture:
    """Submit the index task of a step that searches the corpus (``config`` already searching the corpus file)."""
    with placed(spec, config, 0):
        return INDEX_TASKS[spec.name].submit(config)


def run_shards(spec: StepSpec, sources: list[ArtifactRef], config: PipelineConfig,
               endpoints: LLMEndpoints | None = None, wait_for: list[PrefectFuture] | None = None,
               on_shard: Callable[[int, int, int, int], None] | None = None, *, locks: StepLocks) -> StepOutcome:
    """Run ``spec`` over ``sources`` (one file per shard, in order) -> one output file per shard,
    every shard's cache key held in the run's ``locks``.

    A ``scope="corpus"`` step runs once over every shard (:func:`_corpus_task`). Any other step
    runs per shard on the flow's task runner; each shard is cached on its own, so a rerun after
    a crash serves the finished shards (state ``Cached``) and computes the rest.
    ``on_shard(shards_done, shards, rows_done, rows)`` is called as shards finish. If waiting is
    interrupted (Ctrl-C), the shards not finished are cancelled before the exception goes on.
    """
    _check_roles(spec, config, endpoints)
    started = time.perf_counter()
    if spec.scope == "corpus":
        result, cached = _run_cached(spec, CORPUS_TASKS[spec.name], sources, config, endpoints, locks)
        return StepOutcome(artifacts=result.artifacts, record=StepRecord(
            summary=result.summary, wall_seconds=time.perf_counter() - started, cached=cached))
    logger = get_run_logger()
    count = len(sources)
    futures: dict[PrefectFuture, int] = {}
    shards = [Shard(index=i, count=count) for i in range(count)]
    step_keys = [cache_key(spec, source, config, shard) for source, shard in zip(sources, shards)]
    reasons = claim(locks, spec, list(zip(sources, shards)), config, prefect_records(config), _waiting(spec))
    recomputed = sum(reason is not None for reason in reasons)
    for i, (source, shard, reason) in enumerate(zip(sources, shards, reasons)):
        with placed(spec, config, i):
            futures[_shard_task(spec, config, shard, reason is not None).submit(source, config, endpoints, shard,
                                                                                wait_for=wait_for)] = i
    logger.info("%s: %d shards submitted (%d must be recomputed)", spec.name, count, recomputed)
    results: list[StepResult | None] = [None] * count
    cached = [False] * count
    rows_total, rows_done = sum(s.rows for s in sources), 0
    try:
        for done, future in enumerate(as_completed(list(futures)), start=1):
            i = futures[future]
            results[i] = future.result()
            cached[i] = future.state.name == "Cached"
            rows_done += sources[i].rows
            if on_shard is not None:
                on_shard(done, count, rows_done, rows_total)
    except BaseException:
        _stop(list(futures))
        logger.warning("%s: stopped waiting for the shards; the unfinished ones were cancelled", spec.name)
        raise
    broken = [i for i, result in enumerate(results) if cached[i] and not result.artifact.is_intact()]
    if broken:  # see _run_cached's safety net
        locks.hold({key: i in broken for i, key in enumerate(step_keys)}, _waiting(spec))
    for i in broken:
        logger.warning("%s: the cached result of shard %d does not match %s: recomputing", spec.name, i,
                       results[i].artifact.path)
        results[i] = _shard_task(spec, config, shards[i], True)(sources[i], config, endpoints, shards[i])
        cached[i] = False
    locks.share(step_keys)
    summary = merge_summaries([r.summary for r in results])
    if spec.searches_corpus:
        # Drop every future of the step before its search workers restart (tasks/placement.py):
        # the scheduler would compute again a task whose future is still held.
        keys = [key for f in [*futures, *(wait_for or [])]
                if (key := getattr(getattr(f, "wrapped_future", None), "key", None)) is not None]  # Dask's
        futures.clear()
        wait_for = future = None
        restarted = restart_search_workers(spec, config, keys)
        if restarted:
            summary.extra["search_workers_restarted"] = restarted
    served = sum(cached)
    if served:
        logger.info("%s: %d of %d shards Cached", spec.name, served, count)
    return StepOutcome(artifacts=[r.artifact for r in results], record=StepRecord(
        summary=summary, wall_seconds=time.perf_counter() - started, cached=served == count))


def _shard_task(spec: StepSpec, config: PipelineConfig, shard: Shard, refresh: bool) -> Task:
    """The row task of ``spec`` for ``shard``: results under the run's cache, named after the shard."""
    return ROW_TASKS[spec.name].with_options(result_storage=results_dir(config), refresh_cache=refresh,
                                            task_run_name=f"{spec.task_name}-{shard.name}")


STOP_TIMEOUT = 30.0  # seconds to wait for a shard running on a thread of this process to stop


def _stop(futures: list[PrefectFuture]) -> None:
    """Cancel the submitted shards that have not finished: a Dask future is taken off its
    cluster (a LocalCluster's workers end with the run), a thread-pool future that has not
    started never starts. A shard already running on a thread of this process cannot be stopped
    from outside: its LLM batch is cancelled instead (again until the shard ends, since it may be
    about to start one), so that it sends nothing more and the flow can exit."""
    wrapped = [w for w in (getattr(f, "wrapped_future", None) for f in futures) if w is not None]
    for future in wrapped:
        future.cancel()
    deadline = time.monotonic() + STOP_TIMEOUT
    while isinstance(flow_task_runner(), ThreadPoolTaskRunner) and not all(f.done() for f in wrapped) \
            and time.monotonic() < deadline:
        cancel_running_batches()
        time.sleep(0.05)
