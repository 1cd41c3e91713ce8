"""The documents of a run, checked before anything is paid for.

In: a :class:`~rare_core.config.PipelineConfig`. Out: :func:`load_documents` -> the input frame
(``limit`` applied, an id column added from the text's hash when the input has none, a fresh
RangeIndex); :func:`preflight` -> the same, after also checking what the run needs besides
the input (the BM25 engine, a separate corpus file). Everything a user can get wrong in the
input is one :class:`InputError` (or :class:`~rare_core.errors.StorageError` from reading)
whose one line names the file, the column or the row:

* an empty input ("has no documents"), a missing text column (with the columns present);
* a column whose name starts with ``rare_`` (the pipeline's bookkeeping namespace);
* a column some step would write (``document_order``, ``hard_negatives_ids``...), which the
  run would otherwise refuse only when it reaches that step, after paying for the earlier ones;
* an id column with missing ids, or one id naming two different texts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.operators.base import RESERVED_PREFIX, document_id, is_blank
from rare_core.pipeline import STEPS
from rare_core.storage import format_of, read_frame


class InputError(RareError, ValueError):
    """The input cannot be used as it is; the message says why in one line."""


def _names(columns) -> str:
    return ", ".join(repr(str(c)) for c in columns)


def load_documents(config: PipelineConfig) -> pd.DataFrame:
    """The run's documents, checked (see the module docstring)."""
    path, k = config.input_path, config.columns
    df = read_frame(path)
    if df.empty:
        raise InputError(f"{path}: the input has no documents")
    if k.text not in df.columns:
        raise InputError(f"{path}: input column {k.text!r} not found (columns.text); columns present: {_names(df.columns)}")
    reserved = [c for c in df.columns if str(c).startswith(RESERVED_PREFIX)]
    if reserved:
        raise InputError(f"{path}: column(s) {_names(reserved)} use the prefix {RESERVED_PREFIX!r}, which is the "
                         "pipeline's own bookkeeping; rename them")
    if config.questions_given and k.question not in df.columns:
        raise InputError(f"{path}: questions_given is set but the input has no {k.question!r} column (columns.question); "
                         f"columns present: {_names(df.columns)}")
    if config.questions_given and config.verify.method != "none" and k.gold_answer not in df.columns:
        raise InputError(f"{path}: verify.method={config.verify.method} checks answers against the gold answer, but the "
                         f"input has no {k.gold_answer!r} column (columns.gold_answer); set verify.method=none to skip")
    for spec in (spec for spec in STEPS if spec.enabled(config)):
        clash = [c for c in spec.writes(config) if c in df.columns]
        if clash:
            raise InputError(f"{path}: column(s) {_names(clash)} would be overwritten by {spec.label}'s output; "
                             "rename them (or set the matching columns.* key)")
    if config.limit is not None:
        df = df.head(config.limit)
    df = df.reset_index(drop=True)
    if k.id in df.columns:
        _check_ids(df, k.id, k.text, path)
    else:
        df.insert(0, k.id, df[k.text].map(document_id))
    return df


def _check_ids(df: pd.DataFrame, id_col: str, text_col: str, path: str) -> None:
    blank = df[id_col].map(is_blank)
    if blank.any():
        rows = df.index[blank]
        raise InputError(f"{path}: column {id_col!r} (columns.id) is empty in {len(rows)} row(s), first row "
                         f"{rows[0] + 1}: give every document an id, or drop the column to use content hashes")
    ids = df[id_col].astype(str)
    dup = ids.duplicated(keep=False)
    if dup.any():
        texts = df.loc[dup, text_col].astype(str)
        differ = texts.groupby(ids[dup]).nunique()
        differ = differ[differ > 1]
        if len(differ):
            first = differ.index[0]
            rows = [int(r) + 1 for r in df.index[(ids == first).to_numpy()][:3]]
            raise InputError(f"{path}: id {first!r} (column {id_col!r}) names {int(differ.iloc[0])} different "
                             f"documents (rows {', '.join(map(str, rows))}); ids must be unique per document")


def preflight(config: PipelineConfig) -> pd.DataFrame:
    """:func:`load_documents`, plus the BM25 engine (``RetrievalError`` saying how to install it)
    and a separate corpus file checked to be there, in a supported format."""
    df = load_documents(config)
    from rare_core.retrieval.jvm import anserini_jar  # finds the jar without starting Java

    anserini_jar()
    corpus = config.hardneg.corpus_path
    if corpus:
        format_of(corpus)
        if not Path(corpus).is_file():
            raise InputError(f"hardneg.corpus_path {corpus} is not a file")
    return df
