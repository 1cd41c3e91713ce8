"""Shards: a run's documents cut into contiguous row ranges that go through the row-wise steps one by one.

In: the number of documents, ``config.shards`` and the Dask settings. Out:
:func:`shard_count` (how many), :func:`shard_bounds` (which rows each holds) and
:func:`shard_file` (where a step writes a shard, beside the step's single file of the layout).

A shard is a unit of work and of caching: its step files are cached and resumed on their own,
so a crash redoes only unfinished shards. Rows keep their order: the shards of a step,
concatenated in shard order, are the rows an unsharded run would have in that step's file.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict

# ``shards="auto"``: a shard per this many documents. Small enough that a crash loses little
# (at a few hundred requests per second, a shard is a minute of LLM work) and that a shard's
# frames stay small in memory; large enough that per-shard overhead (a task run, two files)
# is negligible. Inputs up to this size stay one shard: the documented single-file layout.
AUTO_SHARD_ROWS = 10_000
# With Dask workers, ``auto`` gives each worker at least this many shards, so that no worker
# idles while another finishes the last big shard.
AUTO_SHARDS_PER_WORKER = 2


class Shard(BaseModel):
    """Shard ``index`` (0-based) of ``count``."""

    model_config = ConfigDict(frozen=True)

    index: int
    count: int

    @property
    def name(self) -> str:
        """``00003-of-00010``: sorts in shard order."""
        return f"{self.index:05d}-of-{self.count:05d}"


def shard_count(rows: int, shards: int | str, workers: int | None = None) -> int:
    """How many shards ``rows`` documents get: ``shards`` when it is a number (at most one per
    document), else one per :data:`AUTO_SHARD_ROWS` documents and at least
    :data:`AUTO_SHARDS_PER_WORKER` per Dask worker."""
    if shards != "auto":
        return max(1, min(int(shards), rows))
    wanted = math.ceil(rows / AUTO_SHARD_ROWS)
    if workers:
        wanted = max(wanted, AUTO_SHARDS_PER_WORKER * workers)
    return max(1, min(wanted, rows))


def shard_bounds(rows: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous ``(start, stop)`` row ranges covering ``range(rows)``, sizes differing by at most one."""
    size, extra = divmod(rows, count)
    bounds, start = [], 0
    for i in range(count):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def shard_file(step_file: Path, shard: Shard) -> Path:
    """Where shard ``shard`` of a step is written: ``{step file's stem}.shards/{shard.name}{suffix}``
    beside the step's single file (``..._step1.shards/00003-of-00010.jsonl``)."""
    return step_file.parent / f"{step_file.stem}.shards" / f"{shard.name}{step_file.suffix}"
