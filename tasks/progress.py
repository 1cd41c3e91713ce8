"""Progress of the LLM steps (a Prefect progress artifact, and a hook for local listeners), and
every other artifact a run reports (:func:`publish`), all off the work's path.

In: the client's ``on_progress(done, total)`` calls, and optionally a ``live()`` callable with
the endpoint's state (requests in flight, the adaptive limit, 429s seen:
``AdaptiveConcurrency.snapshot``). Out: a Prefect progress artifact per step run, updated at
most once per ``min_interval`` seconds (and always at the end), whose description shows that
state, and a call of every listener registered in this process with ``(step, done, total,
live)`` each time: that is how ``rare run`` draws its progress bar while the flow runs in the
same process. Inside a shard ``live`` also has ``shard`` ("3/10") and ``done``/``total`` count
that shard's rows; :class:`ShardProgress` (in the flow) reports a sharded step's shards as they
finish, whichever process ran them.

Nothing here may slow the work it reports on: the artifacts are written by one publisher
thread per process (:class:`_Publisher`), never from the LLM client's event loop. A Prefect
API call is synchronous and retried by Prefect's client for up to a minute when the API is
away (a server restart); meanwhile only the latest state of each artifact waits (older ones
are dropped), one warning says the API does not answer, and the requests go on. A step's end
waits for its last update at most :data:`FINISH_WAIT` seconds.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from prefect.artifacts import create_progress_artifact, update_progress_artifact

ProgressListener = Callable[[str, int, int, dict[str, Any]], None]
LiveState = Callable[[], dict[str, Any]]

_listeners: list[ProgressListener] = []
_lock = threading.Lock()
FINISH_WAIT = 2.0  # seconds a step's end waits for its progress artifact's last update
log = logging.getLogger("rare.progress")


class _Artifact:
    """One progress artifact: made by the publisher on its first update, in the context
    (flow or task run) of the code that reports it, so Prefect links it to that run."""

    def __init__(self, key: str, label: str) -> None:
        self.key, self.label = key, label
        self.context = contextvars.copy_context()
        self.id = None
        self.pending: tuple | None = None  # the latest (progress, description) not yet sent
        self.sent = threading.Event()  # set while nothing is pending

    def publish(self, progress: float, description: str) -> None:
        if self.id is None:
            self.id = self.context.run(create_progress_artifact, progress=0.0, key=self.key,
                                       description=self.label, _sync=True)
        self.context.run(update_progress_artifact, artifact_id=self.id, progress=progress,
                         description=description, _sync=True)


class _OneShot(_Artifact):
    """Any other artifact (a table, a markdown report): one call of a Prefect artifact function."""

    def __init__(self, create: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        super().__init__(kwargs.get("key") or "", "")
        self.create, self.kwargs = create, kwargs

    def publish(self, *_: Any) -> None:
        self.context.run(self.create, **self.kwargs, _sync=True)


class _Publisher:
    """The thread that writes every progress artifact of this process (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Artifact] = []
        self._thread: threading.Thread | None = None
        self._failing = False
        self.dropped = 0  # reports the API did not take, over the life of the process
        self.last_error: str | None = None

    def submit(self, artifact: _Artifact, *state: Any) -> None:
        """Queue the artifact's new state (replacing one not sent yet); never blocks on the API."""
        with self._cond:
            artifact.sent.clear()
            if artifact.pending is None:
                self._queue.append(artifact)
            artifact.pending = state
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rare-progress", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                artifact = self._queue.pop(0)
                state = artifact.pending
                artifact.pending = None
            try:
                artifact.publish(*state)
            except Exception as exc:  # noqa: BLE001 - reporting must never fail the work
                self.dropped += 1
                self.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                if not self._failing:
                    self._failing = True
                    log.warning("the Prefect API does not answer (%s): progress and artifacts are dropped while it is "
                                "away; the run goes on", self.last_error)
            else:
                if self._failing:
                    self._failing = False
                    log.warning("the Prefect API answers again: progress updates resume")
            with self._cond:
                if artifact.pending is None:
                    artifact.sent.set()


_publisher = _Publisher()


def dropped_reports() -> tuple[int, str | None]:
    """How many reports this process could not send to the Prefect API, and the last error."""
    return _publisher.dropped, _publisher.last_error


def publish(create: Callable[..., Any], **kwargs: Any) -> threading.Event:
    """Call ``create(**kwargs)`` (``create_markdown_artifact``, ``create_table_artifact``...) on the
    publisher thread, in the caller's run context -> an event set once it was sent or dropped."""
    artifact = _OneShot(create, kwargs)
    _publisher.submit(artifact)
    return artifact.sent


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
        # made on the first shard: a step run over all shards at once has none. Artifact keys
        # take lowercase letters, digits and dashes only.
        self.artifact: _Artifact | None = None

    def __call__(self, shards_done: int, shards: int, rows_done: int, rows: int) -> None:
        with _lock:
            listeners = list(_listeners)
        for listener in listeners:
            listener(self.step, rows_done, rows, {"shards_done": shards_done, "shards": shards})
        if self.artifact is None:
            self.artifact = _Artifact(f"rare-{self.step.replace('_', '-')}-shards", self.label)
        _publisher.submit(self.artifact, 100.0 * shards_done / max(shards, 1),
                          f"{self.label}: {shards_done}/{shards} shards, {rows_done:,}/{rows:,} rows")


class StepProgress:
    """The ``on_progress`` callback of one step run (create it inside the task run)."""

    def __init__(self, step: str, label: str, min_interval: float = 1.0, live: LiveState | None = None) -> None:
        self.step, self.label, self.min_interval, self.live = step, label, min_interval, live
        self._last_update = time.monotonic()
        self._done = self._total = 0
        self.artifact = _Artifact(f"rare-{step}-progress", f"{label}: starting")

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
        """Set the artifact to 100% (a step with nothing to ask never calls back); waits for it
        at most :data:`FINISH_WAIT` seconds."""
        self._publish(self._total, self._total)
        self.artifact.sent.wait(FINISH_WAIT)

    def _publish(self, done: int, total: int) -> None:
        percent = 100.0 if total == 0 else 100.0 * done / total
        state = self.live() if self.live else {}
        endpoint = (f"; {state['in_flight']} in flight (limit {state['limit']}), {state['refused_429']} 429s"
                    if state else "")
        shard = f" of shard {state['shard']}" if state.get("shard") else ""
        _publisher.submit(self.artifact, percent, f"{self.label}: {done}/{total} rows{shard} answered{endpoint}")
