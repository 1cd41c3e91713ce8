"""``hf``: a Hugging Face ``datasets.Dataset`` saved with ``save_to_disk`` (``load_from_disk`` reads it):
the ``messages`` column plus the dataset's plain columns."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from rare_core.exports.base import Context, Example, ExportFormat
from rare_core.exports.messages import record as messages_record


CHUNK_ROWS = 10_000  # rows made into one Arrow table at a time


def rows(examples: list[Example]) -> list[dict]:
    return [{**messages_record(ex), **ex.columns} for ex in examples]


def _tables(examples: Iterable[Example]) -> Iterator[pa.Table]:
    """The rows as Arrow tables of up to :data:`CHUNK_ROWS` rows each, types inferred per table."""
    chunk: list[Example] = []
    for ex in examples:
        chunk.append(ex)
        if len(chunk) == CHUNK_ROWS:
            yield pa.Table.from_pylist(rows(chunk))
            chunk = []
    if chunk:
        yield pa.Table.from_pylist(rows(chunk))


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    """The rows written chunk by chunk: one pass unifies the chunks' types (a column empty in one
    chunk takes the type it has in the others), a second writes them cast to it as parquet, which
    ``datasets`` turns into the saved dataset without holding it whole."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError("the hf export needs the `datasets` package (pip install datasets)") from None
    schema = pa.unify_schemas([table.schema for table in _tables(examples)], promote_options="permissive")
    before = {p.name for p in folder.iterdir()}
    bars = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix=".hf-work-", dir=folder.parent))
    try:
        with pq.ParquetWriter(work / "rows.parquet", schema) as out:
            for table in _tables(examples):
                out.write_table(table.select(schema.names).cast(schema))
        dataset = datasets.Dataset.from_parquet(str(work / "rows.parquet"), cache_dir=str(work / "cache"))
        dataset.save_to_disk(str(folder))
        del dataset
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not bars:
            datasets.enable_progress_bars()
    return sorted(p.name for p in folder.iterdir() if p.name not in before)


FORMAT = ExportFormat(
    name="hf",
    summary="Hugging Face `datasets` folder (`save_to_disk`), read with `datasets.load_from_disk`",
    fields={"messages": "`[system, user, assistant]` as in the `messages` export",
            "(the dataset's columns)": "id, question_index (when present), question, scenario, positive, "
                                       "hard_negatives, hard_negatives_ids, document_order, positive_doc_number, "
                                       "reasoning, answer, reference_answer / sample_index / rare_verify_verdict "
                                       "(when present), rare_simulated"},
    usage="""```python
from datasets import load_from_disk
train = load_from_disk("path/to/this/folder")
```""",
    write=write,
    data_files="data-*.arrow",
)
