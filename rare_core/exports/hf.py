"""``hf``: a Hugging Face ``datasets.Dataset`` saved with ``save_to_disk`` (``load_from_disk`` reads it):
the ``messages`` column plus the dataset's plain columns."""

from __future__ import annotations

from pathlib import Path

from rare_core.exports.base import Context, Example, ExportFormat
from rare_core.exports.messages import record as messages_record


def rows(examples: list[Example]) -> list[dict]:
    return [{**messages_record(ex), **ex.columns} for ex in examples]


def write(examples: list[Example], folder: Path, ctx: Context) -> list[str]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError("the hf export needs the `datasets` package (pip install datasets)") from None
    before = {p.name for p in folder.iterdir()}
    bars = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        datasets.Dataset.from_list(rows(examples)).save_to_disk(str(folder))
    finally:
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
