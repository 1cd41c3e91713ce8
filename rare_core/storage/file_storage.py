"""``FileStorage``: the step-by-step file layout of the system we implement (DataFlow).

In: the entry file, a cache folder, a file-name prefix and a format. Out: per step, the file an
operator reads and the file it writes: the first ``step()`` reads the entry file, and the
operator it serves writes ``{cache_path}/{file_name_prefix}_step1.{cache_type}``; the next
``step()`` reads that file and its operator writes ``..._step2``, and so on. Reading and writing
go through ``read_frame`` / ``write_frame`` (``frames.py``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd

from rare_core.errors import StorageError
from rare_core.storage.formats import FORMATS, _records, format_of
from rare_core.storage.frames import read_frame, write_frame


class FileStorage:
    """Step-by-step file storage with the layout and API of the system we implement.

    >>> storage = FileStorage(first_entry_file_name="docs.jsonl", cache_path="./cache",
    ...                       file_name_prefix="dataflow_cache_step", cache_type="jsonl")
    >>> Doc2Query(llm_serving=llm).run(storage=storage.step(), input_key="text")   # doctest: +SKIP

    ``step()`` advances the storage to the next step and returns a copy fixed at that step, so
    several handles can be held at once; ``read()`` returns the previous step's frame (the entry
    file for step 1); ``write(df)`` writes this step's file; ``reset()`` goes back to before the
    first step.
    """

    def __init__(
        self,
        first_entry_file_name: str | os.PathLike,
        cache_path: str | os.PathLike = "./cache",
        file_name_prefix: str = "dataflow_cache_step",
        cache_type: str = "jsonl",
    ) -> None:
        if cache_type not in FORMATS:
            raise StorageError(f"unsupported cache_type '{cache_type}': use one of {', '.join(FORMATS)}")
        format_of(first_entry_file_name)
        self.first_entry_file_name = str(first_entry_file_name)
        self.cache_path = str(cache_path)
        self.file_name_prefix = file_name_prefix
        self.cache_type = cache_type
        self.operator_step = 0

    def step(self) -> "FileStorage":
        """Advance to the next step -> a copy of the storage at that step (pass it to ``run``)."""
        self.operator_step += 1
        return copy.copy(self)

    def reset(self) -> "FileStorage":
        """Go back to before the first step -> ``self``."""
        self.operator_step = 0
        return self

    def step_path(self, step: int) -> Path:
        """Step number ``step`` (1-based) -> the file that step writes."""
        return Path(self.cache_path) / f"{self.file_name_prefix}_step{step}.{self.cache_type}"

    def input_path(self) -> Path:
        """-> the file the current step reads (the entry file for step 1)."""
        if self.operator_step < 1:
            raise StorageError("call storage.step() before running an operator")
        if self.operator_step == 1:
            return Path(self.first_entry_file_name)
        return self.step_path(self.operator_step - 1)

    def output_path(self) -> Path:
        """-> the file the current step writes."""
        if self.operator_step < 1:
            raise StorageError("call storage.step() before running an operator")
        return self.step_path(self.operator_step)

    def read(self, output_type: str = "dataframe") -> pd.DataFrame | list[dict]:
        """-> the input frame of the current step; ``output_type='dict'`` gives a list of records."""
        df = read_frame(self.input_path())
        if output_type == "dict":
            return _records(df)
        return df

    def get_keys_from_dataframe(self) -> list[str]:
        """-> the column names of the current step's input frame, in order."""
        return list(read_frame(self.input_path()).columns)

    def write(self, data: pd.DataFrame | list[dict]) -> Path:
        """A frame or a list of records -> the current step's output file (atomic) -> its path."""
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame.from_records(data)
        return write_frame(df, self.output_path())
