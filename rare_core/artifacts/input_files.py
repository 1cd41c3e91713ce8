"""Step 0 of a run as files: the checked documents (as frames, in order) in -> one step-0 file
per shard and the corpus file of the run's BM25 index -> their references.

* :func:`corpus_writer` - the :class:`~rare_core.retrieval.corpus_file.CorpusWriter` of a run
  whose step 0 has cache key ``key``, at :func:`~rare_core.artifacts.layout.corpus_path`.
* :func:`write_shards` - the documents streamed into the step-0 file of each shard (and into
  the corpus file): at most a shard and a chunk of documents in memory at once.
* :func:`whole_input_corpus` - with ``limit``, the corpus file of the whole input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from rare_core.artifacts.layout import corpus_path
from rare_core.artifacts.refs import ArtifactRef
from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.inputs import count_documents, iter_documents
from rare_core.retrieval.corpus_file import CorpusWriter


def corpus_writer(config: PipelineConfig, key: str) -> CorpusWriter:
    """The writer of the corpus file of a run whose step 0 has cache key ``key``: the input's
    id and text columns, and its ``hardneg.title_key`` column as the titles."""
    return CorpusWriter(corpus_path(config, key), config.columns.id, config.columns.text, config.hardneg.title_key)


def whole_input_corpus(config: PipelineConfig, key: str) -> ArtifactRef | None:
    """With ``limit``, the corpus file of the whole input (a trial run's negatives come from the
    corpus the full run searches, not from its few rows; the index is built once and cached);
    None without a limit, with a separate ``hardneg.corpus_path``, or when the limit takes every
    document."""
    if config.limit is None or config.hardneg.corpus_path:
        return None
    everything = config.model_copy(update={"limit": None})
    if count_documents(everything) <= config.limit:
        return None
    corpus = corpus_writer(everything, key)
    for chunk in iter_documents(everything):
        corpus.write(chunk)
    return corpus.close(lambda: iter_documents(everything))


def write_shards(config: PipelineConfig, files: list[Path], bounds: list[tuple[int, int]],
                 chunks: Iterable[pd.DataFrame], corpus: CorpusWriter | None) -> list[ArtifactRef]:
    """Stream the checked documents (``chunks``, in order) into the step-0 file of each shard
    (``files``; ``bounds``: their row ranges), and into the corpus file."""
    sizes = [stop - start for start, stop in bounds]
    shards: list[ArtifactRef] = []
    buffer: list[pd.DataFrame] = []
    buffered = 0
    for chunk in chunks:
        if corpus is not None:
            corpus.write(chunk)
        while len(chunk):
            if len(shards) == len(sizes):
                raise RareError(f"{config.input_path}: more documents than the {sum(sizes)} counted")
            part, chunk = chunk.iloc[:sizes[len(shards)] - buffered], chunk.iloc[sizes[len(shards)] - buffered:]
            buffer.append(part)
            buffered += len(part)
            if buffered == sizes[len(shards)]:
                frame = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0].reset_index(drop=True)
                shards.append(ArtifactRef.write(frame, files[len(shards)]))
                buffer, buffered = [], 0
    if len(shards) != len(sizes):
        raise RareError(f"{config.input_path}: {sum(s.rows for s in shards) + buffered} documents read, "
                        f"{sum(sizes)} counted")
    return shards
