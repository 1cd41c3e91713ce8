"""The locks of runs sharing a cache folder: cache keys in, held (exclusively or shared) until
the run ends.

* :class:`StepLocks` - the keys one run uses, as POSIX byte-range locks on
  ``{cache_path}/step_files.lock``: runs that reach the same cache key at once see each other
  (one computes it, the others wait and are then served its file; a run never replaces a file
  that another running run still reads).
* :func:`claim` - a step's work (inputs, shards), the run's locks and a test for "a cache record
  of this key exists" in -> the keys locked as needed -> each one's
  :func:`~rare_core.artifacts.sidecar.recompute_reason`, read under the lock.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Callable

from rare_core.artifacts.keys import cache_key
from rare_core.artifacts.refs import Source
from rare_core.artifacts.sidecar import recompute_reason
from rare_core.config import PipelineConfig
from rare_core.step_spec import StepSpec
from rare_core.shards import Shard

LOCKS_NAME = "step_files.lock"  # {cache_path}/step_files.lock: the byte ranges of StepLocks


def _offset(key: str) -> int:
    """The byte of :data:`LOCKS_NAME` that stands for ``key`` (56 bits of its hash: never two keys of one folder)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:7], "big")


_LOCK_FILES: dict[Path, int] = {}


def _lock_file(path: Path) -> int:
    """One descriptor per lock file for the whole process: a POSIX lock belongs to the process,
    and closing any descriptor of its file would drop every lock the process holds on it."""
    if path not in _LOCK_FILES:
        path.parent.mkdir(parents=True, exist_ok=True)
        _LOCK_FILES[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    return _LOCK_FILES[path]


class StepLocks:
    """The cache keys one flow run uses, locked against the other runs on its cache folder until
    the run ends (:meth:`release`, or the end of a ``with`` block).

    A key held exclusively is one this run is computing: a run that reaches it waits, then is
    served the file. A key held shared is one whose file this run reads: other runs read it
    too, but none replaces it (a run that must recompute it, say to retry failed rows, waits).
    Locks are POSIX byte-range locks, one byte of ``{cache_path}/step_files.lock`` per key, so
    the OS drops them when the process dies (kill -9), and they belong to the process: one run
    at a time per process. Each :meth:`hold` takes its keys in one order, the same for every
    run, and a run holds only keys of the steps it finished besides those of its current step,
    so no two runs ever wait for each other (no deadlock).
    """

    def __init__(self, cache_path: str | Path) -> None:
        self.path = Path(cache_path).resolve() / LOCKS_NAME
        self._held: dict[str, bool] = {}  # key -> held exclusively

    def hold(self, modes: dict[str, bool], on_wait: Callable[[str, bool], None] | None = None) -> None:
        """Lock each key of ``modes`` (True: exclusively), releasing first those this run holds
        already; ``on_wait(key, exclusive)`` is called before waiting for another run."""
        fd = _lock_file(self.path)
        for key in modes:
            if self._held.pop(key, None) is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _offset(key))
        for key in sorted(modes, key=_offset):
            kind = fcntl.LOCK_EX if modes[key] else fcntl.LOCK_SH
            try:
                fcntl.lockf(fd, kind | fcntl.LOCK_NB, 1, _offset(key))
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if on_wait is not None:
                    on_wait(key, modes[key])
                fcntl.lockf(fd, kind, 1, _offset(key))
            self._held[key] = modes[key]

    def share(self, keys: list[str]) -> None:
        """Let other runs read ``keys`` too: an exclusive lock becomes shared (at once, never waiting)."""
        fd = _lock_file(self.path)
        for key in keys:
            if self._held.get(key):
                fcntl.lockf(fd, fcntl.LOCK_SH, 1, _offset(key))
                self._held[key] = False

    def release(self) -> None:
        """Release every key (the run is over)."""
        if self._held:
            fd = _lock_file(self.path)
            for key in self._held:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _offset(key))
            self._held.clear()

    def __enter__(self) -> "StepLocks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim(locks: StepLocks, spec: StepSpec, work: list[tuple[Source, Shard | None]], config: PipelineConfig,
          has_record: Callable[[str], bool], on_wait: Callable[[str, bool], None] | None = None) -> list[str | None]:
    """Lock the cache keys of a step's ``work`` (each input with its shard, None for a step run
    once) in ``locks`` -> each one's :func:`~rare_core.artifacts.sidecar.recompute_reason`, read
    under the lock.

    A key this run will compute (a reason, or no cache record to serve: ``has_record(key)``
    False) is held exclusively, the others shared; when the files changed while this run waited
    (another run computed or removed them), the keys are taken again as they now need.
    """
    # has_record is passed in: how a cache record is stored (Prefect's result storage, one file
    # per key) is the orchestrator's business; the files of the layout are the core's.
    keys = [cache_key(spec, source, config, shard) for source, shard in work]
    reasons = [recompute_reason(spec, source, config, shard) for source, shard in work]
    while True:
        modes = {key: reason is not None or not has_record(key) for key, reason in zip(keys, reasons)}
        locks.hold(modes, on_wait)
        reasons = [recompute_reason(spec, source, config, shard) for source, shard in work]
        if all(modes[key] or (reason is None and has_record(key)) for key, reason in zip(keys, reasons)):
            return reasons
