"""Step artifacts and the one cache policy of the pipeline.

* :class:`ArtifactRef` - what tasks pass to each other instead of DataFrames: a file's path,
  the sha256 of its bytes and its row count. ``ArtifactRef.write(df, path)`` writes a frame
  and describes it; ``ref.load()`` reads it back, refusing a file whose bytes changed.
* :func:`step_path` - the documented storage layout ``{cache_path}/{file_name_prefix}_step{N}.{cache_type}``
  (step 0 is the loaded input, steps 1-3 the operators, as ``FileStorage`` numbers them).
* :func:`cache_key` / :class:`StepCachePolicy` - a step's cache key: the input artifact's
  content hash + the step's settings + its prompt version and model (LLM steps) + its
  output file. Never a modification time, never the API key (the config only holds the NAME
  of the key's environment variable, and that name is not part of the key either).
* :func:`needs_recompute` - whether a cached result would point to a step file that is gone
  or no longer the one it describes; the caller then reruns the step with ``refresh_cache``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel, ConfigDict, ValidationError

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.operators.base import StepSummary
from rare_core.operators.doc2query import Doc2Query
from rare_core.operators.reason_distill import ReasonDistill
from rare_core.storage import FileStorage, read_frame, write_frame, write_text_atomic

StepName = Literal["doc2query", "hardneg", "distill"]
DOC2QUERY: StepName = "doc2query"
HARDNEG: StepName = "hardneg"
DISTILL: StepName = "distill"
STEP_INDEX: dict[StepName, int] = {DOC2QUERY: 1, HARDNEG: 2, DISTILL: 3}
INPUT_STEP_INDEX = 0
RESULTS_DIRNAME = "prefect_results"
RESPONSE_CACHE_NAME = "llm_responses.sqlite"
BM25_INDEX_NAME = "bm25_index"
_META_SUFFIX = ".meta.json"
_CHUNK = 1 << 20


class ArtifactChangedError(RareError):
    """A step file's bytes differ from the hash its reference recorded (edited or overwritten)."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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

    def load(self) -> pd.DataFrame:
        """The file's frame; ``ArtifactChangedError`` when the file is gone or its bytes changed."""
        if not self.is_intact():
            raise ArtifactChangedError(
                f"{self.path} is missing or was changed after it was written (expected sha256 "
                f"{self.sha256[:12]}...); rerun the pipeline to recompute it"
            )
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
        "llm": llm.model_copy(update={"cache_path": place(llm.cache_path, llm, "cache_path", RESPONSE_CACHE_NAME)}),
        "hardneg": hardneg.model_copy(update={
            "index_dir": place(hardneg.index_dir, hardneg, "index_dir", BM25_INDEX_NAME), "corpus_path": corpus}),
    })


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


def step_settings(step: StepName, config: PipelineConfig) -> dict[str, Any]:
    """Everything the output of ``step`` depends on besides its input artifact.

    That is the step's own settings, the columns it reads and writes, its output file, the
    content hash of a separate BM25 corpus file if any, and for the LLM steps the prompt
    version, the model, the generation parameters and whether the answers come from the simulator. Endpoint URL, key variable, concurrency, rate limits
    and timeouts are left out, and so are the BM25 index folder and thread count: they change
    how results are computed, not what they are.
    """
    k = config.columns
    llm = {
        "model": config.llm.model,
        "generation": config.llm.generation.model_dump(mode="json"),
        "simulated": not config.llm.base_url,
    }
    common = {"step": step, "output": str(step_path(config, STEP_INDEX[step]))}
    if step == DOC2QUERY:
        return {**common, **llm, "settings": config.doc2query.model_dump(mode="json"),
                "prompt_version": Doc2Query.prompt_version, "columns": [k.text, k.question, k.scenario]}
    if step == HARDNEG:
        corpus = config.hardneg.corpus_path  # a separate corpus: its content counts, like the input's
        return {**common, "settings": config.hardneg.model_dump(mode="json", exclude={"index_dir", "threads"}),
                "corpus_sha256": file_sha256(corpus) if corpus else None,
                "columns": [k.id, k.text, k.question, k.hard_negatives]}
    if step == DISTILL:
        return {**common, **llm, "settings": config.distill.model_dump(mode="json"),
                "prompt_version": ReasonDistill.prompt_version,
                "columns": [k.text, k.question, k.scenario, k.hard_negatives, k.reasoning, k.answer]}
    raise ValueError(f"unknown step {step!r}")


def cache_key(step: StepName, source: ArtifactRef, config: PipelineConfig) -> str:
    """``{step}-{sha256}`` of the input's content hash and :func:`step_settings`."""
    blob = json.dumps({"input_sha256": source.sha256, **step_settings(step, config)},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{step}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()}"


@dataclass
class StepCachePolicy(CachePolicy):
    """Prefect cache policy of a step task whose parameters include ``source: ArtifactRef``
    and ``config: PipelineConfig`` (any other parameter, such as the LLM client, is ignored)."""

    step: StepName = DOC2QUERY

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return cache_key(self.step, inputs["source"], inputs["config"])


class _ArtifactMeta(BaseModel):
    """The sidecar ``{step file}.meta.json``: which cache key the step file was written for."""

    cache_key: str
    artifact: ArtifactRef


def _meta_path(path: str | Path) -> Path:
    return Path(f"{path}{_META_SUFFIX}")


def write_step_artifact(step: StepName, source: ArtifactRef, config: PipelineConfig,
                        df: pd.DataFrame) -> ArtifactRef:
    """Write a step's output to its file in the layout, plus the sidecar naming its cache key."""
    ref = ArtifactRef.write(df, step_path(config, STEP_INDEX[step]))
    meta = _ArtifactMeta(cache_key=cache_key(step, source, config), artifact=ref)
    write_text_atomic(_meta_path(ref.path), meta.model_dump_json(indent=1))
    return ref


def needs_recompute(step: StepName, source: ArtifactRef, config: PipelineConfig) -> bool:
    """True when a cached result of this step cannot be trusted to point to a usable file.

    Prefect's cache record of a step holds an :class:`ArtifactRef`, not the data, and every
    setting of a step writes the same file of the layout. So before a step runs we check the
    file against its sidecar: the file must exist, have the bytes recorded, and have been
    written for this very cache key. If not (deleted, edited, or overwritten by a run with
    other settings), the caller runs the step with ``refresh_cache=True``: it is recomputed
    (through the response cache, so answered rows cost nothing) and its cache record is
    overwritten, instead of a stale record being served. When the file is intact, the task
    is called normally and Prefect serves the cached result if it has one.
    """
    path = step_path(config, STEP_INDEX[step])
    try:
        meta = _ArtifactMeta.model_validate_json(_meta_path(path).read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return True
    return (meta.cache_key != cache_key(step, source, config)
            or Path(meta.artifact.path) != path or not meta.artifact.is_intact())
