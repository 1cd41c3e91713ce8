"""Progress of the LLM steps: a Prefect progress artifact, and a hook for local listeners.

In: the client's ``on_progress(done, total)`` calls, and optionally a ``live()`` callable with
the endpoint's state (requests in flight, the adaptive limit, 429s seen:
``AdaptiveConcurrency.snapshot``). Out: a Prefect progress artifact per step run, updated at
most once per ``min_interval`` seconds (and always at the end), whose description shows that
state, and a call of every listener registered in this process with ``(step, done, total,
live)`` each time: that is how ``rare run`` draws its progress bar while the flow runs in the
same process. Inside a shard ``live`` also has ``shard`` ("3/10") and ``done``/``total`` count
that shard's rows; :class:`ShardProgress` (in the flow) reports a sharded step's shards as they
finish, whichever process ran them.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from prefect.artifacts import create_progress_artifact, update_progress_artifact

ProgressListener = Callable[[str, int, int, dict[str, Any]], None]
LiveState = Callable[[], dict[str, Any]]

_listeners: list[ProgressListener] = []
_lock = threading.Lock()


@contextmanager
def progress_listener(listener: ProgressListener) -> Iterator[None]:
    """Call ``listener(step, done, total, live)`` on every progress event of this process while inside."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


@contextmanager
def step_progress(step: str, label: str, live: LiveState | None = None) -> Iterator["StepProgress"]:
    """A :class:`StepProgress` for the block (inside a task run); at 100% when the block ends."""
    progress = StepProgress(step, label, live=live)
    yield progress
    progress.finish()


class ShardProgress:
    """Progress of a step over shards, in the flow: ``on_shard(shards_done, shards, rows_done, rows)``
    (``tasks.steps.run_shards``) -> a progress artifact ``rare-{step}-shards`` ("3/10 shards,
    30,000/100,000 rows") and a call of every listener with ``live={"shards_done", "shards"}``."""

    def __init__(self, step: str, label: str) -> None:
        self.step, self.label = step, label
        self.artifact_id = None  # made on the first shard: a step run over all shards at once has none

    def __call__(self, shards_done: int, shards: int, rows_done: int, rows: int) -> None:
        with _lock:
            listeners = list(_listeners)
        for listener in listeners:
            listener(self.step, rows_done, rows, {"shards_done": shards_done, "shards": shards})
        if self.artifact_id is None:  # artifact keys take lowercase letters, digits and dashes only
            self.artifact_id = create_progress_artifact(
                progress=0.0, key=f"rare-{self.step.replace('_', '-')}-shards", description=self.label, _sync=True)
        update_progress_artifact(
            artifact_id=self.artifact_id, progress=100.0 * shards_done / max(shards, 1),
            description=f"{self.label}: {shards_done}/{shards} shards, {rows_done:,}/{rows:,} rows", _sync=True)


class StepProgress:
    """The ``on_progress`` callback of one step run (create it inside the task run)."""

    def __init__(self, step: str, label: str, min_interval: float = 1.0, live: LiveState | None = None) -> None:
        self.step, self.label, self.min_interval, self.live = step, label, min_interval, live
        self._last_update = time.monotonic()
        self._done = self._total = 0
        self.artifact_id = create_progress_artifact(
            progress=0.0, key=f"rare-{step}-progress", description=f"{label}: starting", _sync=True)

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        with _lock:
            listeners = list(_listeners)
        state = self.live() if self.live else {}
        for listener in listeners:
            listener(self.step, done, total, state)
        now = time.monotonic()
        if done >= total or now - self._last_update >= self.min_interval:
            self._last_update = now
            self._publish(done, total)

    def finish(self) -> None:
        """Set the artifact to 100% (a step with nothing to ask never calls back)."""
        self._publish(self._total, self._total)

    def _publish(self, done: int, total: int) -> None:
        percent = 100.0 if total == 0 else 100.0 * done / total
        # _sync: the client calls back from inside its event loop, where Prefect's
        # async-dispatching helpers would otherwise return an un-awaited coroutine.
        state = self.live() if self.live else {}
        endpoint = (f"; {state['in_flight']} in flight (limit {state['limit']}), {state['refused_429']} 429s"
                    if state else "")
        shard = f" of shard {state['shard']}" if state.get("shard") else ""
        update_progress_artifact(artifact_id=self.artifact_id, progress=percent,
                                 description=f"{self.label}: {done}/{total} rows{shard} answered{endpoint}", _sync=True)
