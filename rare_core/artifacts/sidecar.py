"""The sidecar ``{step file}.meta.json`` and why a cached result must not be served.

* :func:`write_step_artifact` - a step's output frame, its cache key and its file in -> the file
  and its sidecar written (which key the file was written for, and how many of its rows this
  step failed per kind) -> the file's :class:`~rare_core.artifacts.refs.ArtifactRef`.
* :func:`recompute_reason` - a step, its input and the config in -> why a cached result must not
  be served (None: serve it): the step file is gone or not the one it describes, rows of it
  failed at the HTTP level (a rerun retries them), rows failed for their content and
  ``retry_failed`` is set, or ``llm.cache_mode`` is ``refresh``. The caller then reruns the
  step with ``refresh_cache``; the response cache makes the rows already answered free.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ValidationError

from rare_core.artifacts.keys import cache_key, output_paths
from rare_core.artifacts.refs import ArtifactRef, Source
from rare_core.config import PipelineConfig
from rare_core.operators.base import CONTENT_ERROR, ERROR_KIND, FAILED, REQUEST_ERROR, step_column
from rare_core.step_spec import StepSpec
from rare_core.shards import Shard
from rare_core.storage import write_text_atomic

META_SUFFIX = ".meta.json"


class _ArtifactMeta(BaseModel):
    """The sidecar ``{step file}.meta.json``: which cache key the step file was written for,
    and how many of its rows this step failed per kind (``request``, ``content``, ``input``)."""

    cache_key: str
    artifact: ArtifactRef
    failed_by_kind: dict[str, int] = {}


def _meta_path(path: str | Path) -> Path:
    return Path(f"{path}{META_SUFFIX}")


def _failed_by_kind(spec: StepSpec, df: pd.DataFrame) -> dict[str, int]:
    status = step_column(spec.name, "status")
    if status not in df.columns or ERROR_KIND not in df.columns:
        return {}
    return {str(k): int(n) for k, n in df.loc[df[status] == FAILED, ERROR_KIND].value_counts().items()}


def write_step_artifact(spec: StepSpec, key: str, df: pd.DataFrame, path: Path) -> ArtifactRef:
    """Write a step's output to ``path`` (its file in the layout), plus the sidecar naming its cache key."""
    ref = ArtifactRef.write(df, path)
    meta = _ArtifactMeta(cache_key=key, artifact=ref, failed_by_kind=_failed_by_kind(spec, df))
    write_text_atomic(_meta_path(ref.path), meta.model_dump_json(indent=1))
    return ref


def recompute_reason(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> str | None:
    """Why this step must run even if a cache record of its result exists; None: serve the cache.

    Prefect's cache record of a step holds an :class:`ArtifactRef`, not the data, and the file
    is named by the key, not by its content. So before a step runs we check the file against
    its sidecar: the file must exist, have the bytes recorded, and have been written for this
    very cache key. And a result is not final while rows of it failed for a
    reason a rerun may remove: at the HTTP level (always retried), or for their content when
    ``retry_failed`` is set; ``llm.cache_mode=refresh`` asks every row again.
    """
    if spec.role and config.llm_for(spec.role).cache_mode == "refresh":
        return "llm.cache_mode is refresh: every row is asked again"
    key = cache_key(spec, source, config, shard)
    for path in output_paths(spec, source, config, shard):
        reason = _file_reason(path, key, config)
        if reason:
            return reason
    return None


def _file_reason(path: Path, key: str, config: PipelineConfig) -> str | None:
    """Why the step file at ``path`` cannot be served for cache key ``key`` (None: it can)."""
    try:
        meta = _ArtifactMeta.model_validate_json(_meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return "no step file for this input and these settings"
    if meta.cache_key != key or Path(meta.artifact.path) != path:
        return "the step file was written for another input or other settings"
    if not meta.artifact.is_intact():
        return "the step file is missing or was changed"
    if meta.failed_by_kind.get(REQUEST_ERROR):
        return f"{meta.failed_by_kind[REQUEST_ERROR]} row(s) failed at the HTTP level last time: asking them again"
    if config.retry_failed and meta.failed_by_kind.get(CONTENT_ERROR):
        return f"retry_failed: asking again the {meta.failed_by_kind[CONTENT_ERROR]} row(s) whose answers were unusable"
    return None
