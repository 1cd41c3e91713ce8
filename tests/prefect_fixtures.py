"""Prefect isolation and fixtures for the flow and deployment tests.

Importing this module (conftest.py does, at its end, before any test module imports Prefect)
points every Prefect location at a fresh temporary folder - PREFECT_HOME (profiles, the
ephemeral database), local and result storage - drops any API URL or key inherited from the
user's environment, and disables telemetry (server analytics and the SDK's DO_NOT_TRACK).
Prefect itself is imported only inside the fixtures, so tests that do not use them stay light.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from waiting import wait_until

from deployments.local_server import free_port, stop_process  # noqa: F401 - re-exported for other test modules
from deployments.local_server import prefect_server as _prefect_server

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = PROJECT_ROOT / "data" / "pubmedqa_sample.jsonl"

_HOME = Path(tempfile.mkdtemp(prefix="rare-prefect-tests-"))
ISOLATED_ENV = {
    "PREFECT_HOME": str(_HOME / "home"),
    "PREFECT_PROFILES_PATH": str(_HOME / "home" / "profiles.toml"),
    "PREFECT_LOCAL_STORAGE_PATH": str(_HOME / "storage"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_UI_ENABLED": "false",
}
for _inherited in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
    os.environ.pop(_inherited, None)
os.environ.update(ISOLATED_ENV)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite, subprocess server) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def rare_run_process(tmp_path: Path, base_url: str, *extra: str, env: dict[str, str] | None = None,
                     docs: int = 30, workers: int = 4) -> subprocess.Popen:
    """``rare run`` on the first ``docs`` sample documents against ``base_url``, in a process group
    of its own as a terminal starts a command (text output captured; ``env`` on top of ours)."""
    return subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "run", "--input", str(SAMPLE), "--limit", str(docs),
         "--output", str(tmp_path / "out"), "--cache-path", str(tmp_path / "cache"), "--base-url", base_url,
         "--model", "sim-model", "--max-workers", str(workers), *extra],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "100", **(env or {})})


def disturbed(proc: subprocess.Popen, ready, disturb, what: str, timeout: float) -> str:
    """Wait until ``ready()`` (``what``), call ``disturb()`` (a signal, a killed server), then wait
    for ``proc`` (``timeout``: a guard against a hang; how soon it exits is bench/operability.py's)
    -> its stderr; the process group is killed if it is still there at the end."""
    try:
        wait_until(lambda: ready() or proc.poll() is not None, 120, what)
        assert proc.poll() is None, proc.communicate()
        disturb()
        _, err = proc.communicate(timeout=timeout)
        return err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def running_prefect_server(home: Path, **env: str) -> Iterator[str]:
    """A real ``prefect server start`` on a free loopback port with ``home`` as PREFECT_HOME (and
    ``env`` on top, e.g. a database URL); yields its API URL once ``/api/health`` answers."""
    with _prefect_server(home, **env) as api_url:
        yield api_url


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A Prefect server with its own PREFECT_HOME (SQLite); yields its API URL."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as api_url:
        yield api_url
