"""Prefect isolation and fixtures for the flow and deployment tests.

Importing this module (conftest.py does, at its end, before any test module imports Prefect)
points every Prefect location at a fresh temporary folder - PREFECT_HOME (profiles, the
ephemeral database), local and result storage - drops any API URL or key inherited from the
user's environment, and disables telemetry (server analytics and the SDK's DO_NOT_TRACK).
Prefect itself is imported only inside the fixtures, so tests that do not use them stay light.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_prefect_server(home: Path, **env: str) -> Iterator[str]:
    """A real ``prefect server start`` on a free loopback port with ``home`` as PREFECT_HOME (and
    ``env`` on top, e.g. a database URL); yields its API URL once ``/api/health`` answers."""
    port = free_port()
    full_env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_PROFILES_PATH=str(home / "profiles.toml"), **env)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    api_url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 120, "the Prefect server's /api/health")
        yield api_url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A Prefect server with its own PREFECT_HOME (SQLite); yields its API URL."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server-home")) as api_url:
        yield api_url
