"""``rare``: RARE's own record (``instruction``, ``predict``, ``id``, ``output``) as one JSON list,
as RARE's scripts (``train/sft.py``, ``process/select_true.py``, ``RL_KTO/process_kto.py``) read it,
with a ``dataset_info.json`` whose ``response`` is ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rare_core.exports.base import Context, Example, ExportFormat, write_with_dataset_info

FILE = "train.json"
NAME = "rare"


def record(ex: Example) -> dict:
    rec = {"id": ex.id, "instruction": ex.user, "predict": ex.target,
           "output": ex.reference if ex.reference is not None else ex.answer,
           "system": ex.system, "question": ex.question, "answer": ex.answer}
    rec.update(ex.optional)  # question_index, sample_index, the reference column, rare_verify_*
    rec["rare_simulated"] = ex.simulated
    return rec


def dataset_info() -> dict:
    return {NAME: {"file_name": FILE, "formatting": "alpaca",
                   "columns": {"prompt": "instruction", "response": "predict", "system": "system"}}}


def write(examples: Iterable[Example], folder: Path, ctx: Context) -> list[str]:
    return write_with_dataset_info(folder, FILE, (record(ex) for ex in examples), dataset_info())


FORMAT = ExportFormat(
    name="rare",
    summary="RARE's own record format (a JSON list, as RARE's training and filtering scripts read it)",
    fields={"id": "the row's id",
            "instruction": "the prompt: the teacher's user message, exactly as the teacher saw it",
            "predict": "the teacher's thought process and answer: `<think>reasoning</think>\\n<answer>answer</answer>`",
            "output": "the standard answer: the reference (`reference_answer`, or the gold answer of given questions) "
                      "when the row has one, else the teacher's answer",
            "system": "the teacher's system message (RARE's `train/sft.py` uses `instruction` and `predict` only)",
            "question": "the question", "answer": "the teacher's final answer",
            "question_index / sample_index / reference_answer (or gold_answer) / rare_verify_verdict / "
            "rare_verify_samples / rare_verify_accepted / rare_pass_rate": "when the dataset has them",
            "rare_simulated": "true when the answer came from the built-in simulator",
            "dataset_info.json": f"LLaMA-Factory entry `{NAME}`: `prompt` -> `instruction`, "
                                 "`response` -> `predict`, `system` -> `system`"},
    usage=f"""```bash
# RARE's scripts
python train/sft.py --train_file_path=path/to/this/folder/{FILE} ...
python process/select_true.py path/to/this/folder/{FILE}   # keeps rows whose predict matches output
```""",
    write=write,
    data_files=FILE,
    notes="Without a reference, `output` is the teacher's own answer, so RARE's `select_true.py` "
          "keeps every row: it filters only against a real standard answer.",
)
