"""Shared fixtures."""

from __future__ import annotations

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
    """The session simulator with counters zeroed, no pending faults and no latency."""
    simulator.set_latency(0.0)
    simulator.reset()
    return simulator


# --- Prefect (tests/test_flow.py, tests/test_deployment.py) ---------------------------------
# Imported here, before any test module imports Prefect: it points PREFECT_HOME and result
# storage at a temporary folder and disables telemetry (see tests/prefect_fixtures.py).
from prefect_fixtures import prefect_harness, prefect_server  # noqa: E402,F401
