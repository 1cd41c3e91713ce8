"""``alpaca``: LLaMA-Factory's alpaca JSONL (``instruction``/``input``/``output``/``system``) with a
``dataset_info.json`` entry mapping every column explicitly, ``response`` to the reasoning+answer target."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import Context, Example, ExportFormat, dataset_key, write_with_dataset_info

FILE = "train.jsonl"
NAME = dataset_key("alpaca")
COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}


def record(ex: Example) -> dict:
    # ``input`` stays empty: LLaMA-Factory joins instruction and a non-empty input with "\n",
    # so the whole user message in ``instruction`` is the prompt exactly as the teacher saw it.
    return {"id": ex.id, "instruction": ex.user, "input": "", "output": ex.target, "system": ex.system}


def dataset_info() -> dict:
    return {NAME: {"file_name": FILE, "formatting": "alpaca", "columns": dict(COLUMNS)}}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    return write_with_dataset_info(folder, FILE, (record(ex) for ex in examples), dataset_info())


FORMAT = ExportFormat(
    name="alpaca",
    summary="LLaMA-Factory alpaca JSONL with its `dataset_info.json` entry",
    fields={"id": "the row's id",
            "instruction": "the teacher's user message, exactly as the teacher saw it",
            "input": "empty (the whole prompt is in `instruction`)",
            "output": "the training target: `<think>reasoning</think>\\n<answer>answer</answer>`",
            "system": "the teacher's system message",
            "dataset_info.json": f"LLaMA-Factory entry `{NAME}` with columns `prompt` -> `instruction`, "
                                 "`query` -> `input`, `response` -> `output` (the reasoning + answer), "
                                 "`system` -> `system`"},
    usage=f"""```yaml
# LLaMA-Factory training YAML: this folder is the dataset_dir
dataset_dir: path/to/this/folder
dataset: {NAME}
```""",
    write=write,
    data_files=FILE,
    notes="The `response` column is mapped explicitly to the reasoning + answer target; RARE's own "
          "`dataset_info.json` maps only `prompt`, so LLaMA-Factory falls back to `output`, which in "
          "RARE's records is the gold label, and trains on the label without the reasoning.",
)
