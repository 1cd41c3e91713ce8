"""The Prefect side of the step files (their rules are :mod:`rare_core.artifacts`'s).

* :class:`StepCachePolicy` - a step task's Prefect cache key: the core's
  :func:`~rare_core.artifacts.keys.cache_key` of the task's ``source``, ``config`` and ``shard``.
* :func:`prefect_records` - whether Prefect holds a cache record for a key: what
  :func:`rare_core.artifacts.locks.claim` asks before serving a key's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from rare_core.artifacts.keys import cache_key
from rare_core.artifacts.layout import results_dir
from rare_core.config import PipelineConfig
from rare_core.pipeline import STEP_BY_NAME


@dataclass
class StepCachePolicy(CachePolicy):
    """Prefect cache policy of a step task whose parameters include ``source`` (a
    :data:`~rare_core.artifacts.refs.Source`), ``config: PipelineConfig`` and ``shard: Shard | None``
    (any other parameter, such as the LLM endpoints, is ignored)."""

    step: str = ""  # the registry name of the step (tasks/steps.py gives each task its own)

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return cache_key(STEP_BY_NAME[self.step], inputs["source"], inputs["config"], inputs.get("shard"))


def prefect_records(config: PipelineConfig) -> Callable[[str], bool]:
    """``has_record(key)``: whether Prefect holds a cache record for ``key`` (its result storage
    keeps one file per key under :func:`~rare_core.artifacts.layout.results_dir`)."""
    results = results_dir(config)
    return lambda key: (results / key).is_file()
