"""What one flow run opens in the process that runs the flow, and closes when it ends.

In: the run's config (paths resolved: rare_core.artifacts.layout.resolve_paths) and its logger.
Out: :func:`run_context`, a context manager yielding :class:`RunContext`:

* ``locks``: the run's :class:`~rare_core.artifacts.locks.StepLocks` (its cache keys, held
  against the other runs on the cache folder);
* ``endpoints``: its LLM endpoints (:func:`tasks.llm.llm_endpoints`: the built-in simulator it
  started for the roles without an endpoint).

When the run ends, whatever it left in this process goes with it, in one place: the Dask
workers chosen for its search steps are forgotten (:mod:`tasks.placement`), the clients of its
roles closed and its simulator stopped, its locks released. (A Dask worker process makes its
own clients on first use and closes them when it ends: tasks/llm.py.)
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

from rare_core.artifacts.locks import StepLocks
from rare_core.config import PipelineConfig
from tasks.llm import LLMEndpoints, llm_endpoints
from tasks.placement import forget_workers


@dataclass(frozen=True)
class RunContext:
    """See the module docstring."""

    locks: StepLocks
    endpoints: LLMEndpoints


@contextmanager
def run_context(config: PipelineConfig, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[RunContext]:
    """Open what the run holds; close it all when the block ends, however it ends."""
    with ExitStack() as stack:
        locks = stack.enter_context(StepLocks(config.cache_path))
        endpoints = stack.enter_context(llm_endpoints(config, logger))
        stack.callback(forget_workers)
        yield RunContext(locks=locks, endpoints=endpoints)
