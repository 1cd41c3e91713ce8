"""The one wait of the test suite: poll a condition the system under test exposes.

In: a predicate over observable state (the simulator's counters, a process's exit status, a
Prefect API's task runs, a batch's status), a timeout that only guards against a hang, and what
is awaited in words. Out: the predicate's first truthy value; on timeout the test fails naming
what it waited for.

Tests wait on state, never for a fixed time: where an event or a process's output can say that
something happened, they use that; where only polling can, they use :func:`wait_until`.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import pytest

_T = TypeVar("_T")


def wait_until(predicate: Callable[[], _T], timeout: float, what: str, interval: float = 0.05) -> _T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value (returned);
    fail the test with ``what`` once ``timeout`` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
