"""Which Dask workers run a step's tasks: the steps that search the run's index stay on a few.

A step that searches the corpus (BM25, ``searches_corpus``) searches with Lucene inside the process that runs it: that
process starts a JVM and opens the index, once, and keeps them (about 0.5 GB of heap and
mapped index at 1,000,000 documents; see ``rare_core.operators.bm25_hardneg``). Lucene's
search threads already use every core of their machine (measured: 2 workers on 2 cores search
no faster than one process), so letting every worker run such shards buys no speed on one
machine and costs a JVM per worker. On Dask the index task and these steps' shards therefore
run on the first ``config.dask.search_workers`` workers (by address, chosen once per flow
run), shard ``i`` on worker ``i mod n``; 0 lets them run on any worker (a cluster of many
machines, where search spreads). The other steps' shards, and every task on the thread pool,
go wherever the runner sends them.

The restriction is loose (``allow_other_workers``): if a chosen worker dies (a nanny restarts
it under another address), its tasks run elsewhere instead of waiting forever. A loose task
can be stolen by an idle worker, so the local clusters of ``flows/runners.py`` run without work
stealing (their tasks are queued on the scheduler anyway).

When the step's shards are done, :func:`restart_search_workers` restarts those workers on a
local cluster of the run's own: a JVM cannot be unloaded from the process that started it, and
the searching worker would otherwise carry it (~160 MiB at 100,000 documents after its heap
shrank, measured) through every later step. Their nannies start them again, empty, under new
addresses. A cluster given by ``dask.address`` is somebody else's: its workers are left alone.

In (:func:`placed`): the step's spec, the run's config, the task's position among the step's
tasks. Out: a context manager to submit the task in (``dask.annotate`` with the worker
restriction, or nothing).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner

from rare_core.config import PipelineConfig
from rare_core.step_spec import StepSpec


_CHOSEN: dict[str, list[str]] = {}  # flow run id -> its Dask workers' addresses, as first seen


def flow_task_runner() -> TaskRunner | None:
    """The task runner of the flow run this code is in (None outside a flow run)."""
    context = FlowRunContext.get()
    return context.task_runner if context else None


def _dask_runner() -> TaskRunner | None:
    """The flow's task runner when it is a DaskTaskRunner, else None."""
    runner = flow_task_runner()
    if runner is None or type(runner).__name__ != "DaskTaskRunner":  # importing prefect_dask would import distributed
        return None
    return runner


def _flow_run() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context.flow_run else ""


def _dask_workers(config: PipelineConfig) -> list[str] | None:
    """The addresses of the flow's Dask workers, sorted; None when its runner is not Dask."""
    runner = _dask_runner()
    if runner is None:
        return None
    run = _flow_run()
    if run not in _CHOSEN:
        if config.dask.workers:  # a local cluster: all its workers, not the first ones to register
            runner.client.wait_for_workers(config.dask.workers, timeout=120)
        _CHOSEN[run] = sorted(runner.client.scheduler_info(n_workers=-1)["workers"])
    return _CHOSEN[run]


def placed(spec: StepSpec, config: PipelineConfig, position: int) -> AbstractContextManager:
    """Where the ``position``-th task of ``spec`` (its index task is 0, like its first shard) is submitted."""
    wanted = config.dask.search_workers
    if not spec.searches_corpus or not wanted:
        return nullcontext()
    workers = _dask_workers(config)
    if not workers:
        return nullcontext()
    import dask

    chosen = workers[:wanted]
    return dask.annotate(workers=[chosen[position % len(chosen)]], allow_other_workers=True)


def forget_workers() -> None:
    """Forget the workers chosen for the current flow run (its end: tasks.run_context)."""
    if FlowRunContext.get() is not None:
        _CHOSEN.pop(_flow_run(), None)


FORGET_TIMEOUT = 10.0  # seconds for the scheduler to forget the step's tasks once their futures are dropped
RESTART_TIMEOUT = 120.0


def _held(keys: list, dask_scheduler=None) -> list:
    """Runs on the scheduler (``Client.run_on_scheduler``): the ``keys`` it still has."""
    return [key for key in keys if key in dask_scheduler.tasks]


def restart_search_workers(spec: StepSpec, config: PipelineConfig, keys: list) -> int:
    """After the shards of ``spec`` (a step that searches the corpus) on a local cluster of the run's
    own: restart the workers :func:`placed` sent its tasks to (see the module docstring).

    In: ``keys``, the Dask keys of the step's tasks (its index task and shards), whose futures
    the caller no longer holds: the scheduler computes a key that a client still holds again
    when the worker holding its result restarts (the index task would open the index once more).
    So this first waits until the scheduler has forgotten them, and restarts nothing if it has
    not within :data:`FORGET_TIMEOUT`. Out: how many workers were restarted.
    """
    runner = _dask_runner()
    if runner is None or not spec.searches_corpus or not config.dask.workers or not config.dask.search_workers:
        return 0
    chosen = _CHOSEN.pop(_flow_run(), None)
    if not chosen:
        return 0
    logger, client = get_run_logger(), runner.client
    deadline = time.monotonic() + FORGET_TIMEOUT
    while client.run_on_scheduler(_held, keys=keys):
        if time.monotonic() > deadline:
            logger.warning("%s: the scheduler still holds the step's tasks; its search workers keep running", spec.name)
            return 0
        time.sleep(0.05)
    workers = chosen[:config.dask.search_workers]
    states = client.restart_workers(workers, timeout=RESTART_TIMEOUT, raise_for_error=False)
    restarted = sum(1 for state in states.values() if state == "OK")
    logger.info("%s: restarted %d search worker(s) to release their JVM and index (%s)", spec.name, restarted,
                ", ".join(f"{address}: {state}" for address, state in states.items()))
    return restarted
