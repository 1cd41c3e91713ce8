"""Step artifacts and the one cache policy of the pipeline.

* :class:`ArtifactRef` - what tasks pass to each other instead of DataFrames: a file's path,
  the sha256 of its bytes and its row count. ``ArtifactRef.write(df, path)`` writes a frame
  and describes it; ``ref.load()`` reads it back, refusing a file whose bytes changed.
* :func:`step_path` - the documented storage layout ``{cache_path}/{file_name_prefix}_step{N}.{cache_type}``
  (step 0 is the loaded input, steps 1-3 the operators, as ``FileStorage`` numbers them);
  :func:`spec_path` with a :class:`~rare_core.shards.Shard`: that shard's file beside it.
* :func:`cache_key` / :class:`StepCachePolicy` - a step's cache key: the input artifact's
  content hash (every shard's, in order, for a step over all shards) +
  :meth:`rare_core.pipeline.StepSpec.cache_settings` (settings, columns, and for LLM steps the
  prompt version, model, generation parameters and endpoint scope) + its output file(s), so
  each shard of a step has a key of its own. Never a modification time, never the API key (the config only holds the NAME of the
  key's environment variable, and that name is not part of the key either).
* :func:`recompute_reason` - why a cached result must not be served: the step file is gone or
  not the one it describes, rows of it failed at the HTTP level (a rerun retries them), rows
  failed for their content and ``retry_failed`` is set, or ``llm.cache_mode`` is ``refresh``.
  The caller then reruns the step with ``refresh_cache``; the response cache makes the rows
  already answered free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict, ValidationError

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.hashing import file_sha256
from rare_core.operators.base import CONTENT_ERROR, ERROR_KIND, FAILED, REQUEST_ERROR, StepSummary, step_column
from rare_core.pipeline import STEP_BY_NAME, StepSpec
from rare_core.shards import Shard, shard_file
from rare_core.storage import FileStorage, read_frame, write_frame, write_text_atomic

RESULTS_DIRNAME = "prefect_results"
RESPONSE_CACHE_NAME = "llm_responses.sqlite"
BM25_INDEX_NAME = "bm25_index"
_META_SUFFIX = ".meta.json"


class ArtifactChangedError(RareError):
    """A step file's bytes differ from the hash its reference recorded (edited or overwritten)."""


class ArtifactRef(BaseModel):
    """A step file by path and content hash: what one task hands to the next."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int

    @classmethod
    def write(cls, df: pd.DataFrame, path: str | Path) -> "ArtifactRef":
        """Write ``df`` to ``path`` (format from the extension, atomically) and describe the file."""
        written = write_frame(df, path)
        return cls(path=str(written), sha256=file_sha256(written), rows=len(df))

    def is_intact(self) -> bool:
        """True when the file exists and still has the recorded bytes."""
        path = Path(self.path)
        return path.is_file() and file_sha256(path) == self.sha256

    def verify(self) -> None:
        """``ArtifactChangedError`` when the file is gone or its bytes changed since it was written."""
        if not self.is_intact():
            raise ArtifactChangedError(
                f"{self.path} is missing or was changed after it was written (expected sha256 "
                f"{self.sha256[:12]}...); rerun the pipeline to recompute it"
            )

    def load(self) -> pd.DataFrame:
        """The file's frame; ``ArtifactChangedError`` when the file is gone or its bytes changed."""
        self.verify()
        return read_frame(self.path)


class StepResult(BaseModel):
    """What a step task returns (and what Prefect caches): its output file and its summary."""

    artifact: ArtifactRef
    summary: StepSummary


def resolve_paths(config: PipelineConfig) -> PipelineConfig:
    """``config`` with every path absolute (against the working directory), so that a run finds
    the same files wherever its tasks execute.

    The response cache (``llm.cache_path``) and the BM25 index folder (``hardneg.index_dir``)
    default to paths under ``./cache``; left at their defaults they move under ``cache_path``
    (``{cache_path}/llm_responses.sqlite``, ``{cache_path}/bm25_index``). An ``llm.cache_path``
    of None keeps the response cache off.
    """
    cache = Path(config.cache_path).resolve()

    def place(value: str | None, model: BaseModel, field: str, name: str) -> str | None:
        if value is None:
            return None
        return str(cache / name) if value == type(model).model_fields[field].default else str(Path(value).resolve())

    llm, hardneg = config.llm, config.hardneg
    corpus = hardneg.corpus_path and str(Path(hardneg.corpus_path).resolve())
    return config.model_copy(update={
        "input_path": str(Path(config.input_path).resolve()),
        "cache_path": str(cache),
        "output_path": str(Path(config.output_path).resolve()),
        "export_path": config.export_path and str(Path(config.export_path).resolve()),
        "llm": llm.model_copy(update={"cache_path": place(llm.cache_path, llm, "cache_path", RESPONSE_CACHE_NAME)}),
        "hardneg": hardneg.model_copy(update={
            "index_dir": place(hardneg.index_dir, hardneg, "index_dir", BM25_INDEX_NAME), "corpus_path": corpus}),
    })


def spec_path(config: PipelineConfig, spec: StepSpec, shard: Shard | None = None) -> Path:
    """The file of ``spec`` in the layout: ``{prefix}_step{N}`` (``{prefix}_{stem}`` for a filter);
    with ``shard``, that shard's file beside it (:func:`rare_core.shards.shard_file`)."""
    if spec.stem:
        path = Path(config.cache_path).resolve() / f"{config.file_name_prefix}_{spec.stem}.{config.cache_type}"
    else:
        path = step_path(config, spec.index)
    return shard_file(path, shard) if shard else path


# What a step reads: one file, or (a corpus-scoped step of a sharded run) every shard's file, in order.
Source = ArtifactRef | list[ArtifactRef]


def output_paths(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> list[Path]:
    """The files a step writes for ``source``: one per input shard of a list, else one."""
    if isinstance(source, list):
        return [spec_path(config, spec, Shard(index=i, count=len(source))) for i in range(len(source))]
    return [spec_path(config, spec, shard)]


def _source_sha(source: Source) -> str:
    if isinstance(source, list):
        return hashlib.sha256(",".join(ref.sha256 for ref in source).encode()).hexdigest()
    return source.sha256


def step_path(config: PipelineConfig, index: int) -> Path:
    """The file of step ``index`` in the documented layout, as an absolute path."""
    storage = FileStorage(
        first_entry_file_name=config.input_path, cache_path=Path(config.cache_path).resolve(),
        file_name_prefix=config.file_name_prefix, cache_type=config.cache_type,
    )
    return storage.step_path(index)


def results_dir(config: PipelineConfig) -> Path:
    """Where Prefect persists the step results (the cache records): ``{cache_path}/prefect_results``."""
    return Path(config.cache_path).resolve() / RESULTS_DIRNAME


def step_settings(spec: StepSpec, config: PipelineConfig, outputs: list[Path]) -> dict[str, Any]:
    """Everything the output of ``spec`` depends on besides its input artifact: its
    :meth:`~rare_core.pipeline.StepSpec.cache_settings` and its output file. Endpoint
    credentials, concurrency, rate limits and timeouts are left out, and so are the BM25 index
    folder and thread count: they change how results are computed, not what they are."""
    output = [str(p) for p in outputs]
    return {**spec.cache_settings(config), "output": output[0] if len(output) == 1 else output}


def cache_key(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> str:
    """``{step}-{sha256}`` of the input's content hash(es) and :func:`step_settings` (its output
    file: the shard's file for a shard)."""
    blob = json.dumps({"input_sha256": _source_sha(source),
                       **step_settings(spec, config, output_paths(spec, source, config, shard))},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{spec.name}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()}"


@dataclass
class StepCachePolicy(CachePolicy):
    """Prefect cache policy of a step task whose parameters include ``source`` (a :data:`Source`),
    ``config: PipelineConfig`` and ``shard: Shard | None`` (any other parameter, such as the LLM
    endpoints, is ignored)."""

    step: str = "doc2query"

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return cache_key(STEP_BY_NAME[self.step], inputs["source"], inputs["config"], inputs.get("shard"))


class _ArtifactMeta(BaseModel):
    """The sidecar ``{step file}.meta.json``: which cache key the step file was written for,
    and how many of its rows this step failed per kind (``request``, ``content``, ``input``)."""

    cache_key: str
    artifact: ArtifactRef
    failed_by_kind: dict[str, int] = {}


def _meta_path(path: str | Path) -> Path:
    return Path(f"{path}{_META_SUFFIX}")


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
    """Why this step must run even if Prefect holds a cached result for it; None: serve the cache.

    Prefect's cache record of a step holds an :class:`ArtifactRef`, not the data, and every
    setting of a step writes the same file of the layout. So before a step runs we check the
    file against its sidecar: the file must exist, have the bytes recorded, and have been
    written for this very cache key. And a result is not final while rows of it failed for a
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
