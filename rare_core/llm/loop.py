"""Running a coroutine to its end from synchronous code.

In: a coroutine (a batch of requests). Out: its result, or its exception raised.
:func:`run_here` runs it in this thread (``asyncio.run``, the result kept off the main task);
:func:`run_on_private_loop` runs it on a new loop in a thread of ours, for callers that already
run a loop (Jupyter, an async flow): a KeyboardInterrupt while waiting cancels it, waits for its
thread, then propagates.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, TypeVar

_JOIN_POLL = 0.1  # seconds between checks of the waiting thread for a Ctrl-C
START_WAIT = 5.0  # seconds a thread spawned as a Ctrl-C arrived gets to reach its loop
_T = TypeVar("_T")


def run_here(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)`` in this thread, with the result kept off the main task.

    Workaround: when ``asyncio.run`` ends in the main thread it puts back the SIGINT handler,
    and CPython (3.11) formats the repr of the handler it replaces, which holds the main task,
    whose repr includes its result's: a whole :class:`Batch`, every answer's text (found in a
    profile: ~0.16 s and a string of every answer per 2,000 rows, at the end of every call).
    """
    box: dict[str, _T] = {}

    async def main() -> None:
        box["result"] = await coro

    asyncio.run(main())
    return box["result"]


def run_on_private_loop(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on a new event loop in a thread of ours; return its result or raise its error.

    Workaround for callers that already run a loop (Jupyter, an async flow): they cannot run a
    second one in their thread. A KeyboardInterrupt (or any BaseException) raised in the calling
    thread while it waits cancels the coroutine's task thread-safely, waits until the thread has
    finished (the in-flight requests cancelled, the HTTP client closed), then propagates: a
    Ctrl-C does not leave the batch sending, and paying for, every remaining request.
    """
    box: dict[str, Any] = {}
    ready = threading.Event()
    # Set when the thread's work is over. Waited on instead of Thread.join: an exception raised in
    # the waiting thread during join() (Ctrl-C) can leave the Thread marked as stopped while it
    # still runs (CPython 3.11's join/lock handling), and a later join() then returns at once.
    finished = threading.Event()

    async def main() -> _T:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        ready.set()
        return await coro

    def target() -> None:
        try:
            with asyncio.Runner() as runner:  # closes the loop: leftover tasks, async generators, executor
                box["result"] = runner.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc
        finally:
            ready.set()
            finished.set()

    thread = threading.Thread(target=target, name="rare-llm-batch", daemon=True)
    try:
        # Inside the try: a Ctrl-C can land while start() waits for the thread to run, and the
        # thread runs anyway; then it must be stopped like one that reached its batch.
        thread.start()
        _wait_for(finished)
    except BaseException:
        if not ready.wait(START_WAIT):  # never spawned (the Ctrl-C came before): nothing to stop
            raise
        task, loop = box.get("task"), box.get("loop")
        if task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed meanwhile: the batch is over anyway
                pass
        finished.wait()
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _wait_for(finished: threading.Event) -> None:
    """Block until ``finished`` is set, in short waits: a signal or an asynchronous exception
    reaches the waiting thread within ``_JOIN_POLL`` seconds."""
    while not finished.wait(_JOIN_POLL):
        pass
