"""Where a run's files lie: a config (and a step, a shard, a cache key) in, absolute paths out.

* :func:`resolve_paths` - the config with every path absolute, the response cache and the BM25
  index folder moved under ``cache_path`` when left at their defaults.
* :func:`step_path` - the documented layout ``{cache_path}/{file_name_prefix}_step{N}.{cache_type}``
  (step 0 is the loaded input, then the steps the run runs, in registry order, as ``FileStorage``
  numbers the operators a script calls); :func:`spec_path` - a step's file, with a
  :class:`~rare_core.shards.Shard`: that shard's file beside it; :func:`layout_paths` - the
  file(s) a step writes for its input, one per input shard.
* :func:`keyed` - where a flow run writes a file of the layout: its name with the first 16 hex
  digits of its cache key before the extension (``dataflow_cache_step_step1-3fa9c1d2e4b5a6f7.jsonl``,
  ``..._step1.shards/00003-of-00010-<key>.jsonl``), so that runs with other inputs or settings
  on the same cache folder never write each other's files. The operator API (``FileStorage``)
  keeps the plain layout. :func:`input_paths` (step 0) and :func:`corpus_path` (the corpus file
  of a sharded run) are named so.
* :func:`results_dir` - ``{cache_path}/prefect_results``, where the flow's cache records lie.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rare_core.artifacts.refs import Source
from rare_core.config import PipelineConfig
from rare_core.pipeline import INPUT_STEP_INDEX, STEPS, file_number
from rare_core.step_spec import StepSpec
from rare_core.shards import Shard, shard_file
from rare_core.storage import FileStorage

RESULTS_DIRNAME = "prefect_results"
RESPONSE_CACHE_NAME = "llm_responses.sqlite"
CORPUS_STEM = "corpus"  # {cache_path}/{prefix}_corpus-{key}.parquet: what a sharded run's BM25 searches
KEY_DIGITS = 16  # hex digits of a cache key in a file's name: 64 bits, no two keys of one folder alike


def resolve_paths(config: PipelineConfig) -> PipelineConfig:
    """``config`` with every path absolute (against the working directory), so that a run finds
    the same files wherever its tasks execute.

    The response cache (``llm.cache_path``) and each step's own files (``StepSpec.cache_files``:
    the BM25 index folder) default to paths under ``./cache``; left at their defaults they move
    under ``cache_path`` (``{cache_path}/llm_responses.sqlite``, ``{cache_path}/bm25_index``).
    An ``llm.cache_path`` of None keeps the response cache off.
    """
    cache = Path(config.cache_path).resolve()

    def place(value: str | None, model: BaseModel, field: str, name: str) -> str | None:
        if value is None:
            return None
        return str(cache / name) if value == type(model).model_fields[field].default else str(Path(value).resolve())

    llm = config.llm
    config = config.model_copy(update={
        "input_path": str(Path(config.input_path).resolve()),
        "cache_path": str(cache),
        "output_path": str(Path(config.output_path).resolve()),
        "export_path": config.export_path and str(Path(config.export_path).resolve()),
        "llm": llm.model_copy(update={"cache_path": place(llm.cache_path, llm, "cache_path", RESPONSE_CACHE_NAME)}),
    })
    for spec in STEPS:  # each step's own files: under the cache folder by default, the user's resolved
        settings = spec.settings(config)
        update = {name: place(getattr(settings, name), settings, name, file) for name, file in spec.cache_files.items()}
        update.update({name: getattr(settings, name) and str(Path(getattr(settings, name)).resolve())
                       for name in spec.input_files})
        if update:
            config = spec.with_settings(config, **update)
    return config


def step_path(config: PipelineConfig, index: int) -> Path:
    """The file of step ``index`` in the documented layout, as an absolute path."""
    storage = FileStorage(
        first_entry_file_name=config.input_path, cache_path=Path(config.cache_path).resolve(),
        file_name_prefix=config.file_name_prefix, cache_type=config.cache_type,
    )
    return storage.step_path(index)


def spec_path(config: PipelineConfig, spec: StepSpec, shard: Shard | None = None) -> Path:
    """The file of ``spec`` in the layout: ``{prefix}_step{N}``, ``N`` its place among the steps
    the run runs (:func:`rare_core.pipeline.file_number`); with ``shard``, that shard's file
    beside it (:func:`rare_core.shards.shard_file`)."""
    path = step_path(config, file_number(spec, config))
    return shard_file(path, shard) if shard else path


def layout_paths(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> list[Path]:
    """The files of ``spec`` in the plain layout for ``source``: one per shard of a list, else one."""
    if isinstance(source, list):
        return [spec_path(config, spec, Shard(index=i, count=len(source))) for i in range(len(source))]
    return [spec_path(config, spec, shard)]


def keyed(path: Path, key: str) -> Path:
    """``path`` with the first :data:`KEY_DIGITS` hex digits of ``key`` before its extension:
    the file a flow run writes for that key (``..._step1.jsonl`` -> ``..._step1-3fa9c1d2e4b5a6f7.jsonl``)."""
    return path.with_name(f"{path.stem}-{key.rsplit('-', 1)[-1][:KEY_DIGITS]}{path.suffix}")


def input_paths(config: PipelineConfig, key: str, shards: int) -> list[Path]:
    """Where step 0 is written for ``key`` (:func:`rare_core.artifacts.keys.input_key`): one file,
    or one per shard."""
    base = step_path(config, INPUT_STEP_INDEX)
    if shards == 1:
        return [keyed(base, key)]
    return [keyed(shard_file(base, Shard(index=i, count=shards)), key) for i in range(shards)]


def corpus_path(config: PipelineConfig, key: str) -> Path:
    """The corpus file of a sharded run whose step 0 has cache key ``key``:
    ``{cache_path}/{prefix}_corpus-{key}.parquet`` (``.jsonl`` when parquet cannot hold it,
    :class:`rare_core.retrieval.corpus_file.CorpusWriter`)."""
    return keyed(Path(config.cache_path).resolve() / f"{config.file_name_prefix}_{CORPUS_STEM}.parquet", key)


def results_dir(config: PipelineConfig) -> Path:
    """Where Prefect persists the step results (the cache records): ``{cache_path}/prefect_results``."""
    return Path(config.cache_path).resolve() / RESULTS_DIRNAME
