"""References to step files: what one step hands to the next instead of a DataFrame.

* :class:`ArtifactRef` - a file's path, the sha256 of its bytes and its row count.
  ``ArtifactRef.write(df, path)`` writes a frame (format from the extension, atomically) and
  describes it; ``ref.load()`` reads it back, refusing (:class:`ArtifactChangedError`) a file
  whose bytes changed since.
* :class:`StepResult` - a step's output file and its :class:`~rare_core.operators.base.StepSummary`.
* :data:`Source` - what a step reads: one file, or (a corpus-scoped step of a sharded run) every
  shard's file, in order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from rare_core.errors import RareError
from rare_core.hashing import file_sha256
from rare_core.operators.base import StepSummary
from rare_core.storage import read_frame, write_frame


class ArtifactChangedError(RareError):
    """A step file's bytes differ from the hash its reference recorded (edited or overwritten)."""


class ArtifactRef(BaseModel):
    """A step file by path and content hash: what one task hands to the next."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int

    @classmethod
    def write(cls, df: pd.DataFrame, path: str | Path) -> "ArtifactRef":
        """Write ``df`` to ``path`` (format from the extension, atomically) and describe the file."""
        written = write_frame(df, path)
        return cls(path=str(written), sha256=file_sha256(written), rows=len(df))

    def is_intact(self) -> bool:
        """True when the file exists and still has the recorded bytes."""
        path = Path(self.path)
        return path.is_file() and file_sha256(path) == self.sha256

    def verify(self) -> None:
        """``ArtifactChangedError`` when the file is gone or its bytes changed since it was written."""
        if not self.is_intact():
            raise ArtifactChangedError(
                f"{self.path} is missing or was changed after it was written (expected sha256 "
                f"{self.sha256[:12]}...); rerun the pipeline to recompute it"
            )

    def load(self) -> pd.DataFrame:
        """The file's frame; ``ArtifactChangedError`` when the file is gone or its bytes changed."""
        self.verify()
        return read_frame(self.path)


class StepResult(BaseModel):
    """What a step task returns (and what Prefect caches): its output file and its summary."""

    artifact: ArtifactRef
    summary: StepSummary


# What a step reads: one file, or (a corpus-scoped step of a sharded run) every shard's file, in order.
Source = ArtifactRef | list[ArtifactRef]
