"""Shared fixtures."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="session")
def simulator():
    """One OpenAI-compatible LLM simulator subprocess for the whole session (no latency, no key).

    Prefer the function-scoped ``sim`` fixture, which resets it before each test.
    """
    from rare_core.llm.simulator import SimulatorProcess

    with SimulatorProcess(latency=0.0) as process:
        yield process


@pytest.fixture
def sim(simulator):
    """The session simulator with counters zeroed, no pending faults and no latency.

    Waits first for requests still in flight from an earlier test (a client that stopped early
    leaves them sleeping at the server): they would otherwise consume this test's faults."""
    simulator.set_latency(0.0)
    deadline = time.monotonic() + 10
    while simulator.stats().in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    simulator.reset()
    return simulator


# --- Prefect (tests/test_flow.py, tests/test_deployment.py) ---------------------------------
# Imported here, before any test module imports Prefect: it points PREFECT_HOME and result
# storage at a temporary folder and disables telemetry (see tests/prefect_fixtures.py).
from prefect_fixtures import prefect_harness, prefect_server  # noqa: E402,F401
