"""``retrieval``: ``{"query", "pos", "neg"}`` JSONL for retriever training (FlagEmbedding's layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import Context, Example, ExportFormat, write_jsonl

FILE = "train.jsonl"


def query_text(ex: Example) -> str:
    """The scenario, then the question: the whole information need the pair was written as
    (the question alone when it came without a scenario)."""
    return f"{ex.scenario}\n\n{ex.question}" if ex.scenario else ex.question


def record(ex: Example) -> dict:
    return {"id": ex.id, "query": query_text(ex), "pos": [ex.positive], "neg": list(ex.hard_negatives)}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    return [write_jsonl(folder / FILE, (record(ex) for ex in examples))]


FORMAT = ExportFormat(
    name="retrieval",
    summary="retriever training JSONL: query, positive and BM25 hard negatives",
    fields={"id": "the row's id",
            "query": "the scenario, a blank line, then the question (the question alone when it has no scenario)",
            "pos": "`[positive]`: the full text of the document the question was written from",
            "neg": "the hard negatives' full texts, best BM25 match first"},
    usage=f"""```python
from datasets import load_dataset
train = load_dataset("json", data_files="{FILE}", split="train")  # FlagEmbedding reads this layout as is
```""",
    write=write,
    task_categories=("text-retrieval",),
    data_files=FILE,
    notes="**Why the query is scenario + question.** Doc2Query writes the two together as one "
          "information need: the question is standalone, but the scenario carries the case's "
          "conditions, and the teacher answered from both. Reasoning-intensive retrievers (ReasonIR "
          "trains on this kind of data) are trained on such long, case-like queries, and a query "
          "without its scenario may be answered by documents the scenario rules out. The hard "
          "negatives were mined by BM25 with the question alone, so they are hard for the question "
          "part; some may in fact be relevant (false negatives), as with any mined negatives. "
          "Documents are full texts here, not cut to the teacher's budget.",
)
