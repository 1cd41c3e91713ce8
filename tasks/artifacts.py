"""Step artifacts, the one cache policy of the pipeline, and the locks of runs sharing a cache folder.

* :class:`ArtifactRef` - what tasks pass to each other instead of DataFrames: a file's path,
  the sha256 of its bytes and its row count. ``ArtifactRef.write(df, path)`` writes a frame
  and describes it; ``ref.load()`` reads it back, refusing a file whose bytes changed.
* :func:`step_path` - the documented storage layout ``{cache_path}/{file_name_prefix}_step{N}.{cache_type}``
  (step 0 is the loaded input, steps 1-3 the operators, as ``FileStorage`` numbers them);
  :func:`spec_path` with a :class:`~rare_core.shards.Shard`: that shard's file beside it.
* :func:`cache_key` / :class:`StepCachePolicy` - a step's cache key: the input artifact's
  content hash (every shard's, in order, for a step over all shards) +
  :meth:`rare_core.pipeline.StepSpec.cache_settings` (settings, columns, and for LLM steps the
  prompt version, model, generation parameters and endpoint scope) + its file(s) in the layout,
  so each shard of a step has a key of its own. Never a modification time, never the API key
  (the config only holds the NAME of the key's environment variable, and that name is not part
  of the key either). :func:`input_key`: the same for step 0, from the input file's content hash
  and the settings that shape the loaded rows.
* :func:`keyed` - where a flow run writes a file of the layout: its name with the first 16 hex
  digits of its cache key before the extension (``dataflow_cache_step_step1-3fa9c1d2e4b5a6f7.jsonl``,
  ``..._step1.shards/00003-of-00010-<key>.jsonl``), so that runs with other inputs or settings
  on the same cache folder never write each other's files (:func:`output_paths`). The operator
  API (``FileStorage``) keeps the plain layout.
* :func:`recompute_reason` - why a cached result must not be served: the step file is gone or
  not the one it describes, rows of it failed at the HTTP level (a rerun retries them), rows
  failed for their content and ``retry_failed`` is set, or ``llm.cache_mode`` is ``refresh``.
  The caller then reruns the step with ``refresh_cache``; the response cache makes the rows
  already answered free.
* :class:`StepLocks` / :func:`claim` - runs that reach the same cache key at once: one computes
  it, the others wait and are then served its file; a run never replaces a file that another
  running run still reads.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict, ValidationError

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.hashing import file_sha256, file_sha256_memo
from rare_core.operators.base import CONTENT_ERROR, ERROR_KIND, FAILED, REQUEST_ERROR, StepSummary, step_column
from rare_core.pipeline import INPUT_STEP_INDEX, STEP_BY_NAME, StepSpec
from rare_core.shards import Shard, shard_file
from rare_core.storage import FileStorage, format_of, read_frame, write_frame, write_text_atomic

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


KEY_DIGITS = 16  # hex digits of a cache key in a file's name: 64 bits, no two keys of one folder alike


def keyed(path: Path, key: str) -> Path:
    """``path`` with the first :data:`KEY_DIGITS` hex digits of ``key`` before its extension:
    the file a flow run writes for that key (``..._step1.jsonl`` -> ``..._step1-3fa9c1d2e4b5a6f7.jsonl``)."""
    return path.with_name(f"{path.stem}-{key.rsplit('-', 1)[-1][:KEY_DIGITS]}{path.suffix}")


# What a step reads: one file, or (a corpus-scoped step of a sharded run) every shard's file, in order.
Source = ArtifactRef | list[ArtifactRef]


def _layout_paths(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> list[Path]:
    if isinstance(source, list):
        return [spec_path(config, spec, Shard(index=i, count=len(source))) for i in range(len(source))]
    return [spec_path(config, spec, shard)]


def output_paths(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> list[Path]:
    """The files a step writes for ``source``: one per input shard of a list, else one; each
    its file of the layout named by the step's cache key (:func:`keyed`)."""
    key = cache_key(spec, source, config, shard)
    return [keyed(path, key) for path in _layout_paths(spec, source, config, shard)]


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
    :meth:`~rare_core.pipeline.StepSpec.cache_settings` and its file(s) in the layout. Endpoint
    credentials, concurrency, rate limits and timeouts are left out, and so are the BM25 index
    folder and thread count: they change how results are computed, not what they are."""
    output = [str(p) for p in outputs]
    return {**spec.cache_settings(config), "output": output[0] if len(output) == 1 else output}


def _digest(blob: dict[str, Any]) -> str:
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> str:
    """``{step}-{sha256}`` of the input's content hash(es) and :func:`step_settings` (its file
    in the layout: the shard's file for a shard)."""
    layout = _layout_paths(spec, source, config, shard)
    return f"{spec.name}-{_digest({'input_sha256': _source_sha(source), **step_settings(spec, config, layout)})}"


INPUT_KEY = "input"


def input_key(config: PipelineConfig, shards: int) -> str:
    """``input-{sha256}``: the cache key of step 0 as ``shards`` files, from the input file's
    content hash and format and what shapes the rows loaded from it (``limit``, the column
    names, which columns are required, the title column of a sharded run's corpus file)."""
    blob = {"input_sha256": file_sha256_memo(config.input_path), "format": format_of(config.input_path),
            "limit": config.limit, "shards": shards, "columns": config.columns.model_dump(mode="json"),
            "questions_given": config.questions_given, "verify": config.verify.method,
            "title_key": config.hardneg.title_key, "output": str(step_path(config, INPUT_STEP_INDEX))}
    return f"{INPUT_KEY}-{_digest(blob)}"


def input_paths(config: PipelineConfig, key: str, shards: int) -> list[Path]:
    """Where step 0 is written for ``key`` (:func:`input_key`): one file, or one per shard."""
    base = step_path(config, INPUT_STEP_INDEX)
    if shards == 1:
        return [keyed(base, key)]
    return [keyed(shard_file(base, Shard(index=i, count=shards)), key) for i in range(shards)]


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


LOCKS_NAME = "step_files.lock"  # {cache_path}/step_files.lock: the byte ranges of StepLocks


def _offset(key: str) -> int:
    """The byte of :data:`LOCKS_NAME` that stands for ``key`` (56 bits of its hash: never two keys of one folder)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "big")


_LOCK_FILES: dict[Path, int] = {}


def _lock_file(path: Path) -> int:
    """One descriptor per lock file for the whole process: a POSIX lock belongs to the process,
    and closing any descriptor of its file would drop every lock the process holds on it."""
    if path not in _LOCK_FILES:
        path.parent.mkdir(parents=True, exist_ok=True)
        _LOCK_FILES[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    return _LOCK_FILES[path]


class StepLocks:
    """The cache keys one flow run uses, locked against the other runs on its cache folder until
    the run ends (:meth:`release`, or the end of a ``with`` block).

    A key held exclusively is one this run is computing: a run that reaches it waits, then is
    served the file. A key held shared is one whose file this run reads: other runs read it
    too, but none replaces it (a run that must recompute it, say to retry failed rows, waits).
    Locks are POSIX byte-range locks, one byte of ``{cache_path}/step_files.lock`` per key, so
    the OS drops them when the process dies (kill -9), and they belong to the process: one run
    at a time per process. Each :meth:`hold` takes its keys in one order, the same for every
    run, and a run holds only keys of the steps it finished besides those of its current step,
    so no two runs ever wait for each other (no deadlock).
    """

    def __init__(self, cache_path: str | Path) -> None:
        self.path = Path(cache_path).resolve() / LOCKS_NAME
        self._held: dict[str, bool] = {}  # key -> held exclusively

    def hold(self, modes: dict[str, bool], on_wait: Callable[[str, bool], None] | None = None) -> None:
        """Lock each key of ``modes`` (True: exclusively), releasing first those this run holds
        already; ``on_wait(key, exclusive)`` is called before waiting for another run."""
        fd = _lock_file(self.path)
        for key in modes:
            if self._held.pop(key, None) is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _offset(key))
        for key in sorted(modes, key=_offset):
            kind = fcntl.LOCK_EX if modes[key] else fcntl.LOCK_SH
            try:
                fcntl.lockf(fd, kind | fcntl.LOCK_NB, 1, _offset(key))
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if on_wait is not None:
                    on_wait(key, modes[key])
                fcntl.lockf(fd, kind, 1, _offset(key))
            self._held[key] = modes[key]

    def share(self, keys: list[str]) -> None:
        """Let other runs read ``keys`` too: an exclusive lock becomes shared (at once, never waiting)."""
        fd = _lock_file(self.path)
        for key in keys:
            if self._held.get(key):
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, _offset(key))
                self._held[key] = False

    def release(self) -> None:
        """Release every key (the run is over)."""
        if self._held:
            fd = _lock_file(self.path)
            for key in self._held:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _offset(key))
            self._held.clear()

    def __enter__(self) -> "StepLocks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _has_record(config: PipelineConfig, key: str) -> bool:
    """Whether Prefect holds a cache record for ``key`` (one file per key under :func:`results_dir`)."""
    return (results_dir(config) / key).is_file()


def claim(locks: StepLocks, spec: StepSpec, work: list[tuple[Source, Shard | None]], config: PipelineConfig,
          on_wait: Callable[[str, bool], None] | None = None) -> list[str | None]:
    """Lock the cache keys of a step's ``work`` (each input with its shard, None for a step run
    once) in ``locks`` -> each one's :func:`recompute_reason`, read under the lock.

    A key this run will compute (a reason, or no Prefect record to serve) is held exclusively,
    the others shared; when the files changed while this run waited (another run computed or
    removed them), the keys are taken again as they now need.
    """
    keys = [cache_key(spec, source, config, shard) for source, shard in work]
    reasons = [recompute_reason(spec, source, config, shard) for source, shard in work]
    while True:
        modes = {key: reason is not None or not _has_record(config, key) for key, reason in zip(keys, reasons)}
        locks.hold(modes, on_wait)
        reasons = [recompute_reason(spec, source, config, shard) for source, shard in work]
        if all(modes[key] or (reason is None and _has_record(config, key)) for key, reason in zip(keys, reasons)):
            return reasons
