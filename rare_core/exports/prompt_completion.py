"""``prompt-completion``: TRL's conversational prompt-completion JSONL: the loss falls on the completion only."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import Context, Example, ExportFormat, write_jsonl

FILE = "train.jsonl"


def record(ex: Example) -> dict:
    return {"prompt": ex.prompt_messages, "completion": [ex.completion_message]}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    return [write_jsonl(folder / FILE, (record(ex) for ex in examples))]


FORMAT = ExportFormat(
    name="prompt-completion",
    summary="TRL conversational prompt-completion JSONL (loss on the completion only)",
    fields={"prompt": "`[system, user]`: the teacher's messages exactly as the teacher saw them",
            "completion": '`[{"role": "assistant", "content": <think>reasoning</think>\\n<answer>answer</answer>}]`'},
    usage=f"""```python
from datasets import load_dataset
from trl import SFTConfig, SFTTrainer
train = load_dataset("json", data_files="{FILE}", split="train")
trainer = SFTTrainer(model=..., train_dataset=train, args=SFTConfig(completion_only_loss=True))
```""",
    write=write,
    data_files=FILE,
    notes="Lines carry only `prompt` and `completion` (TRL would treat other columns as data); line *i* "
          "is row *i* of the `rare` and `hf` exports, which keep the ids.",
)
