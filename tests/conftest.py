"""Shared fixtures."""

from __future__ import annotations

import pytest
from waiting import wait_until


@pytest.fixture(scope="session")
def simulator():
    """One OpenAI-compatible LLM simulator subprocess for the whole session (no latency, no key).

    Prefer the function-scoped ``sim`` fixture, which resets it before each test.
    """
    from rare_sim import SimulatorProcess

    with SimulatorProcess(latency=0.0) as process:
        yield process


@pytest.fixture
def sim(simulator):
    """The session simulator with counters zeroed, no pending faults and no latency.

    Waits first for requests still in flight from an earlier test (a client that stopped early
    leaves them sleeping at the server): they would otherwise consume this test's faults."""
    simulator.set_latency(0.0)
    wait_until(lambda: not simulator.stats().in_flight, 10, "an earlier test's requests in flight to end")
    simulator.reset()
    return simulator


# --- Prefect (tests/test_flow.py, tests/test_deployment.py) ---------------------------------
# Imported here, before any test module imports Prefect: it points PREFECT_HOME and result
# storage at a temporary folder and disables telemetry (see tests/prefect_fixtures.py).
from prefect_fixtures import prefect_harness, prefect_server  # noqa: E402,F401
