"""``sharegpt``: LLaMA-Factory's sharegpt JSONL (``conversations`` of ``from``/``value`` + ``system``)
with its ``dataset_info.json`` entry."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import Context, Example, ExportFormat, dataset_key, write_with_dataset_info

FILE = "train.jsonl"
NAME = dataset_key("sharegpt")


def record(ex: Example) -> dict:
    return {"id": ex.id,
            "conversations": [{"from": "human", "value": ex.user}, {"from": "gpt", "value": ex.target}],
            "system": ex.system}


def dataset_info() -> dict:
    return {NAME: {"file_name": FILE, "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "system": "system"},
                   "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    return write_with_dataset_info(folder, FILE, (record(ex) for ex in examples), dataset_info())


FORMAT = ExportFormat(
    name="sharegpt",
    summary="LLaMA-Factory sharegpt JSONL with its `dataset_info.json` entry",
    fields={"id": "the row's id",
            "conversations": '`[{"from": "human", "value": <the teacher\'s user message>}, '
                             '{"from": "gpt", "value": <think>reasoning</think>\\n<answer>answer</answer>}]`',
            "system": "the teacher's system message",
            "dataset_info.json": f"LLaMA-Factory entry `{NAME}` (formatting sharegpt, columns "
                                 "`messages` -> `conversations`, `system` -> `system`)"},
    usage=f"""```yaml
# LLaMA-Factory training YAML: this folder is the dataset_dir
dataset_dir: path/to/this/folder
dataset: {NAME}
```""",
    write=write,
    data_files=FILE,
)
