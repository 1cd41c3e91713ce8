"""``kto``: every sample with its verdict as a label, for TRL's KTOTrainer and LLaMA-Factory's KTO stage.

In: the examples, each with the samples of its prompt that verification rejected
(:attr:`Example.rejected`). Out: one record per sample: each row (an accepted sample) labelled
true, then the rejected samples of its prompt labelled false, once per prompt (the first row of a
question drawn several times carries them). Two files, written in one pass: ``kto.jsonl`` in TRL's
unpaired preference shape (``prompt``, ``completion``, ``label``) and ``kto_sharegpt.json`` as RARE's
KTO stage builds it (``RL_KTO/process_kto.py``: a JSON list of sharegpt ``conversations``, the
human turn then the gpt turn, and a boolean ``kto_tag``; here the label is verification's verdict
and the teacher's system message rides along in ``system``) with its ``dataset_info.json`` entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import (
    Context, Example, ExportFormat, FirstOfPrompt, RecordFile, Tally, dataset_key, write_json,
)

FILE = "kto.jsonl"
SHAREGPT_FILE = "kto_sharegpt.json"
NAME = dataset_key("kto")


def trl_record(ex: Example, target: str, label: bool) -> dict:
    return {"prompt": ex.prompt_messages, "completion": [{"role": "assistant", "content": target}], "label": label}


def sharegpt_record(ex: Example, target: str, label: bool) -> dict:
    return {"id": ex.id, "conversations": [{"from": "human", "value": ex.user}, {"from": "gpt", "value": target}],
            "system": ex.system, "kto_tag": label}


def dataset_info() -> dict:
    return {NAME: {"file_name": SHAREGPT_FILE, "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "system": "system", "kto_tag": "kto_tag"}}}


def samples(ex: Example, first: FirstOfPrompt) -> Iterable[tuple[str, bool]]:
    """(target, label) of the example's samples: its own (accepted), then its prompt's rejected ones."""
    yield ex.target, True
    for rejected in first.of(ex):
        yield rejected.target, False


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    first = FirstOfPrompt()
    with RecordFile(folder / FILE) as trl, RecordFile(folder / SHAREGPT_FILE) as sharegpt:
        for ex in examples:
            for target, label in samples(ex, first):
                trl.write(trl_record(ex, target, label))
                sharegpt.write(sharegpt_record(ex, target, label))
    return [trl.name, sharegpt.name, write_json(folder / "dataset_info.json", dataset_info())]


def card_lines(tally: Tally) -> list[str]:
    return [f"**{tally.rows + tally.rejected} labelled samples**: {tally.rows} accepted (label true, one per row) "
            f"and {tally.rejected} rejected by verification (label false). {tally.no_rejected} of {tally.rows} "
            "rows have no rejected sample. KTOTrainer's `desirable_weight` and `undesirable_weight` balance the "
            "two counts."]


FORMAT = ExportFormat(
    name="kto",
    summary="every sample labelled by its verdict (accepted true, rejected false) for TRL's KTOTrainer "
            "and LLaMA-Factory's KTO stage",
    fields={"prompt": "`[system, user]`: the teacher's messages exactly as the teacher saw them",
            "completion": '`[{"role": "assistant", "content": <think>reasoning</think>\\n<answer>answer</answer>}]`',
            "label": "true for an accepted sample, false for one verification rejected",
            SHAREGPT_FILE: "the same samples as RARE's KTO stage shapes them: `id`, `conversations` (the user "
                           "turn, then the sample), `system`, `kto_tag` (the label)",
            "dataset_info.json": f"LLaMA-Factory entry `{NAME}` (formatting sharegpt, columns "
                                 "`messages` -> `conversations`, `system`, `kto_tag`)"},
    usage=f"""```python
# TRL
from datasets import load_dataset
from trl import KTOConfig, KTOTrainer
train = load_dataset("json", data_files="{FILE}", split="train")
trainer = KTOTrainer(model=..., train_dataset=train, args=KTOConfig(...))
```

```yaml
# LLaMA-Factory training YAML (stage: kto), as RARE's RL_KTO/train_kto.sh: this folder is the dataset_dir
stage: kto
dataset_dir: path/to/this/folder
dataset: {NAME}
```""",
    write=write,
    data_files=FILE,
    notes=f"Lines of `{FILE}` carry only `prompt`, `completion` and `label` (TRL would treat other columns as "
          "data). RARE labels a sample by comparing its extracted answer with the standard answer; here the "
          "label is verification's verdict on it.",
    records=lambda tally: tally.rows + tally.rejected,
    card_lines=card_lines,
)
