"""``messages``: OpenAI chat JSONL, one ``{"messages": [system, user, assistant]}`` per line."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import Context, Example, ExportFormat, write_jsonl

FILE = "train.jsonl"


def record(ex: Example) -> dict:
    return {"messages": [*ex.prompt_messages, ex.completion_message]}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    return [write_jsonl(folder / FILE, (record(ex) for ex in examples))]


FORMAT = ExportFormat(
    name="messages",
    summary="OpenAI chat fine-tuning JSONL (also read by TRL's SFTTrainer as conversational data)",
    fields={"messages": "`[system, user, assistant]`: the teacher's system and user messages exactly as the "
                        "teacher saw them, then the assistant turn `<think>reasoning</think>\\n<answer>answer</answer>`"},
    usage=f"""```python
# OpenAI fine-tuning
from openai import OpenAI
OpenAI().files.create(file=open("{FILE}", "rb"), purpose="fine-tune")
# TRL
from datasets import load_dataset
train = load_dataset("json", data_files="{FILE}", split="train")
```""",
    write=write,
    data_files=FILE,
    notes="Lines carry only `messages` (OpenAI's format has no other key); line *i* is row *i* of the "
          "`rare` and `hf` exports, which keep the ids.",
)
