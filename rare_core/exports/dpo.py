"""``dpo``: preference pairs from rejection sampling, for TRL's DPOTrainer and LLaMA-Factory's DPO stage.

In: the examples, each with the samples of its prompt that verification rejected
(:attr:`Example.rejected`). Out: one pair per rejected sample, the chosen side the first accepted
row of its prompt (with several samples per question, the rejected samples are paired once, not
once per accepted row); a row whose prompt has no rejected sample gives no pair (counted in the
card). Two files, written in one pass: ``dpo.jsonl`` in TRL's conversational preference shape
(``prompt``, ``chosen``, ``rejected`` as message lists) and ``dpo_sharegpt.json`` in LLaMA-Factory's
sharegpt preference shape with its ``dataset_info.json`` entry (``ranking: true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import (
    Context, Example, ExportFormat, FirstOfPrompt, RecordFile, Rejected, Tally, dataset_key, write_json,
)

FILE = "dpo.jsonl"
SHAREGPT_FILE = "dpo_sharegpt.json"
NAME = dataset_key("dpo")


def trl_record(ex: Example, rejected: Rejected) -> dict:
    return {"prompt": ex.prompt_messages, "chosen": [ex.completion_message],
            "rejected": [{"role": "assistant", "content": rejected.target}]}


def sharegpt_record(ex: Example, rejected: Rejected) -> dict:
    return {"id": ex.id, "conversations": [{"from": "human", "value": ex.user}], "system": ex.system,
            "chosen": {"from": "gpt", "value": ex.target}, "rejected": {"from": "gpt", "value": rejected.target}}


def dataset_info() -> dict:
    return {NAME: {"file_name": SHAREGPT_FILE, "formatting": "sharegpt", "ranking": True,
                   "columns": {"messages": "conversations", "system": "system", "chosen": "chosen",
                               "rejected": "rejected"}}}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    first = FirstOfPrompt()
    with RecordFile(folder / FILE) as trl, RecordFile(folder / SHAREGPT_FILE) as sharegpt:
        for ex in examples:
            for rejected in first.of(ex):
                trl.write(trl_record(ex, rejected))
                sharegpt.write(sharegpt_record(ex, rejected))
    return [trl.name, sharegpt.name, write_json(folder / "dataset_info.json", dataset_info())]


def card_lines(tally: Tally) -> list[str]:
    lines = [f"**{tally.rejected} preference pairs**: each sample verification rejected, paired once with the "
             f"first accepted row of its prompt. {tally.no_rejected} of {tally.rows} rows have no rejected "
             "sample and give no pair."]
    if not tally.rejected:
        lines += ["", "No pair: the dataset records no rejected sample (`rare_verify_rejected`): verification "
                      "was off, or accepted every sample it checked. The data files are empty."]
    return lines


FORMAT = ExportFormat(
    name="dpo",
    summary="preference pairs (an accepted and a rejected sample of the same prompt) for TRL's DPOTrainer "
            "and LLaMA-Factory's DPO stage",
    fields={"prompt": "`[system, user]`: the teacher's messages exactly as the teacher saw them",
            "chosen": '`[{"role": "assistant", "content": <think>reasoning</think>\\n<answer>answer</answer>}]`: '
                      "an accepted sample",
            "rejected": "the same shape: a sample of the same prompt that verification rejected",
            SHAREGPT_FILE: "the same pairs for LLaMA-Factory: `id`, `conversations` (the user turn), `system`, "
                           '`chosen` and `rejected` (`{"from": "gpt", "value": ...}`)',
            "dataset_info.json": f"LLaMA-Factory entry `{NAME}` (formatting sharegpt, `ranking: true`, columns "
                                 "`messages` -> `conversations`, `system`, `chosen`, `rejected`)"},
    usage=f"""```python
# TRL
from datasets import load_dataset
from trl import DPOConfig, DPOTrainer
train = load_dataset("json", data_files="{FILE}", split="train")
trainer = DPOTrainer(model=..., train_dataset=train, args=DPOConfig(...))
```

```yaml
# LLaMA-Factory training YAML (stage: dpo): this folder is the dataset_dir
stage: dpo
dataset_dir: path/to/this/folder
dataset: {NAME}
```""",
    write=write,
    data_files=FILE,
    notes=f"Lines of `{FILE}` carry only `prompt`, `chosen` and `rejected` (TRL would treat other columns as "
          "data). A rejected sample is one whose answer verification did not accept (it did not match the "
          "reference), so a pair teaches the answer the documents support, not a style.",
    records=lambda tally: tally.rejected,
    card_lines=card_lines,
)
