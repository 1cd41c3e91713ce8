"""Cache keys: a step (or step 0), its input and the config in, ``{step}-{sha256}`` out.

* :func:`cache_key` - the input artifact's content hash (every shard's, in order, for a step
  over all shards) + :func:`step_settings` (:meth:`rare_core.step_spec.StepSpec.cache_settings`:
  settings, columns, and for LLM steps the prompt version, model, generation parameters and
  endpoint scope; plus its file(s) in the layout, so each shard of a step has a key of its own).
  Never a modification time, never the API key (the config only holds the NAME of the key's
  environment variable, and that name is not part of the key either).
* :func:`output_paths` - the files a flow run writes for a step: its files of the layout named
  by its cache key (:func:`rare_core.artifacts.layout.keyed`).
* :func:`input_key` - the same for step 0, from the input file's content hash and the settings
  that shape the loaded rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rare_core.artifacts.layout import keyed, layout_paths, step_path
from rare_core.artifacts.refs import Source
from rare_core.config import PipelineConfig
from rare_core.hashing import file_sha256_memo
from rare_core.pipeline import INPUT_STEP_INDEX
from rare_core.step_spec import StepSpec
from rare_core.shards import Shard
from rare_core.storage import format_of

INPUT_KEY = "input"


def step_settings(spec: StepSpec, config: PipelineConfig, outputs: list[Path]) -> dict[str, Any]:
    """Everything the output of ``spec`` depends on besides its input artifact: its
    :meth:`~rare_core.step_spec.StepSpec.cache_settings` and its file(s) in the layout. Endpoint
    credentials, concurrency, rate limits and timeouts are left out, and so are the BM25 index
    folder and thread count: they change how results are computed, not what they are."""
    output = [str(p) for p in outputs]
    return {**spec.cache_settings(config), "output": output[0] if len(output) == 1 else output}


# The shape of what a cached step result holds (StepResult, StepSummary): part of every key,
# raised when that shape changes, so that a record written by an earlier version is never
# served (Prefect could not read it back); the step is computed again, its answers free from
# the response cache. 2: typed LLM counters (StepSummary.llm), the artifact types in rare_core.
RESULT_FORMAT = 2


def _digest(blob: dict[str, Any]) -> str:
    blob = {**blob, "result_format": RESULT_FORMAT}
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source_sha(source: Source) -> str:
    if isinstance(source, list):
        return hashlib.sha256(",".join(ref.sha256 for ref in source).encode()).hexdigest()
    return source.sha256


def cache_key(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> str:
    """``{step}-{sha256}`` of the input's content hash(es) and :func:`step_settings` (its file
    in the layout: the shard's file for a shard)."""
    layout = layout_paths(spec, source, config, shard)
    return f"{spec.name}-{_digest({'input_sha256': _source_sha(source), **step_settings(spec, config, layout)})}"


def output_paths(spec: StepSpec, source: Source, config: PipelineConfig, shard: Shard | None = None) -> list[Path]:
    """The files a step writes for ``source``: one per input shard of a list, else one; each
    its file of the layout named by the step's cache key (:func:`~rare_core.artifacts.layout.keyed`)."""
    key = cache_key(spec, source, config, shard)
    return [keyed(path, key) for path in layout_paths(spec, source, config, shard)]


def input_key(config: PipelineConfig, shards: int) -> str:
    """``input-{sha256}``: the cache key of step 0 as ``shards`` files, from the input file's
    content hash and format and what shapes the rows loaded from it (``limit``, the column
    names, which columns are required, the title column of a sharded run's corpus file)."""
    blob = {"input_sha256": file_sha256_memo(config.input_path), "format": format_of(config.input_path),
            "limit": config.limit, "shards": shards, "columns": config.columns.model_dump(mode="json"),
            "questions_given": config.questions_given, "verify": config.verify.method,
            "title_key": config.hardneg.title_key, "output": str(step_path(config, INPUT_STEP_INDEX))}
    return f"{INPUT_KEY}-{_digest(blob)}"
