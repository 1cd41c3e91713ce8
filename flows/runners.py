"""The task runner of a run, chosen at run time from ``config.dask``, and the flow run with it.

* no Dask settings: Prefect's thread pool with one worker. The shards of a step then run one
  after another in this process, each with the LLM client's whole concurrency: the client's
  CPU (~1.6 ms per request) is the limit in one process, so a second thread would add nothing
  but a second event loop contending for it;
* ``dask.workers=W``: a ``distributed.LocalCluster`` of W single-threaded worker processes
  on loopback, started for the run and closed at its end (``prefect_dask.DaskTaskRunner``);
* ``dask.address``: the existing cluster whose scheduler is there.

Worker processes report their task runs to the Prefect API of ``PREFECT_API_URL``: with
none set, ``rare run`` starts a local server for the run (deployments/local_server.py), since
each worker would otherwise start an ephemeral API of its own. Step files, results and the
BM25 index are on ``cache_path``, which every worker must see (the same machine, or a shared
file system on a real cluster).
"""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.rare_pipeline import rare_pipeline
from rare_core.config import PipelineConfig


def task_runner_for(config: PipelineConfig) -> TaskRunner:
    """The task runner ``config.dask`` asks for (see the module docstring)."""
    dask = config.dask
    if not dask.enabled:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner  # imports distributed: only for Dask runs

    if dask.address:
        return DaskTaskRunner(address=dask.address)
    import dask as dask_config

    # No work stealing on our local clusters: it could move the search shards that
    # tasks/placement.py keeps on a few workers (their restriction is loose) to idle workers,
    # each then starting a JVM of its own. The scheduler queues the other tasks anyway.
    dask_config.config.set({"distributed.scheduler.work-stealing": False})
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": dask.workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
        "memory_limit": dask.memory_limit,
        "dashboard_address": ":0",  # a free port, not 8787: runs side by side must not collide
    })


def run_pipeline(config: PipelineConfig, **kwargs):
    """``rare_pipeline(config, **kwargs)`` on :func:`task_runner_for` ``(config)``."""
    return rare_pipeline.with_options(task_runner=task_runner_for(config))(config, **kwargs)
