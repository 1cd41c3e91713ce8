"""A Prefect server of our own on loopback: for a run whose tasks run in other processes.

In: a folder to be the server's PREFECT_HOME (its SQLite database and logs) and optional
environment on top (``PREFECT_API_DATABASE_CONNECTION_URL`` for PostgreSQL). Out (context
manager): the API URL, once ``/api/health`` answers; the server is stopped on exit.

Why: without ``PREFECT_API_URL`` Prefect starts an ephemeral API inside the process that runs
the flow, which Dask worker processes cannot reach; each would start one of its own and the
task runs would be recorded in databases nobody reads. ``rare run --dask-workers`` therefore
starts this server for the run (:func:`run_api`) when none is configured, and the workers it
spawns inherit its URL. The tests start it the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

STARTUP_TIMEOUT = 120.0  # seconds: the first start migrates a fresh database


class ServerError(RuntimeError):
    """The Prefect server exited or did not answer in time; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def prefect_server(home: Path, timeout: float = STARTUP_TIMEOUT, **env: str) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with ``home`` as PREFECT_HOME (``env``
    on top); yields its API URL once healthy; SIGTERM (then SIGKILL) on exit."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_PROFILES_PATH=str(home / "profiles.toml"),
                    PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false", **env)
    full_env.pop("PREFECT_API_URL", None)
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
        api_url = f"http://127.0.0.1:{port}/api"
        try:
            _wait_healthy(proc, api_url, timeout, log_path)
            yield api_url
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(proc: subprocess.Popen, api_url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the Prefect server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServerError(f"the Prefect server did not answer within {timeout:g}s: {log_path.read_text()[-2000:]}")


def _drain_queued() -> None:
    """Send the logs and events still queued in this process while the server is up: Prefect
    ships them from background workers, which would otherwise try at exit and print
    "Error logging to API" once the server is gone."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


@contextmanager
def run_api() -> Iterator[str | None]:
    """The Prefect API a multi-process run reports to: ``PREFECT_API_URL`` when set (yields it),
    else a server started here on a temporary SQLite database, removed on exit. While inside,
    ``PREFECT_API_URL`` is set in this process's settings and environment, so that processes
    started meanwhile (Dask workers) report there too."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = Path(tempfile.mkdtemp(prefix="rare-prefect-"))
    try:
        with prefect_server(home) as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
            os.environ["PREFECT_API_URL"] = api_url
            try:
                yield api_url
            finally:
                os.environ.pop("PREFECT_API_URL", None)
                _drain_queued()
    finally:
        shutil.rmtree(home, ignore_errors=True)
