"""The Prefect API a run reports to, and Prefect servers of our own on loopback.

* :func:`check_api` -> a configured API answers, or :class:`APIUnreachableError` naming it
  (``rare`` calls it before anything is paid).
* :func:`run_api` (context manager) -> the API URL of a ``rare run``: the configured one
  (``PREFECT_API_URL``, from the environment or the profile), else a local API started for the
  run (:func:`local_api`) and stopped at its end.
* :func:`local_api` -> the API Prefect would start on its own for a run without a server (its
  ephemeral API, on the profile's database, so the runs are kept), but in a process of its own
  session. Why: Prefect starts its ephemeral server as a child in the terminal's process group,
  so Ctrl-C killed it first and the interrupted run then spent minutes retrying calls to it
  (and printed a hundred lines of "Error logging to API"). Dask worker processes, which could
  not reach an API inside the flow's process, report there too.
* :func:`prefect_server` -> ``prefect server start`` with its own PREFECT_HOME (the tests', and
  PostgreSQL's through ``PREFECT_API_DATABASE_CONNECTION_URL``).
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

from rare_core.errors import RareError

STARTUP_TIMEOUT = 120.0  # seconds: the first start migrates a fresh database
HEALTH_TIMEOUT = 5.0  # seconds a configured API has to answer /health before a run starts
DRAIN_TIMEOUT = 2.0  # seconds the logs and events still queued get to reach the local API at the end


class ServerError(RuntimeError):
    """The Prefect server exited or did not answer in time; the message ends with its log's tail."""


class APIUnreachableError(RareError):
    """The configured Prefect API does not answer; nothing was run."""


def check_api(api_url: str, timeout: float = HEALTH_TIMEOUT) -> None:
    """Raise :class:`APIUnreachableError` (one line naming ``api_url``) unless ``/health`` answers 200."""
    try:
        status = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code
        why = None if status == 200 else f"/health answered HTTP {status}"
    except httpx.HTTPError as exc:
        why = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no answer'}"
    if why:
        raise APIUnreachableError(
            f"the Prefect API at {api_url} (PREFECT_API_URL) does not answer ({why}): start the server "
            "(`prefect server start`) or unset PREFECT_API_URL to run without one")


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
        worker.drain_all(timeout=DRAIN_TIMEOUT)


@contextmanager
def local_api(timeout: float = STARTUP_TIMEOUT) -> Iterator[str]:
    """Prefect's ephemeral API app on a free loopback port, in a new session (see the module
    docstring), its output in a log file; yields the API URL once healthy; stopped on exit."""
    import prefect
    from prefect.settings import get_current_settings

    port = free_port()
    # The environment Prefect gives its own ephemeral server (prefect.server.api.server.
    # SubprocessASGIServer): the profile's settings, no UI, ephemeral mode (no scheduler services).
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
           "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log_dir = Path(tempfile.mkdtemp(prefix="rare-prefect-api-"))
    log_path = log_dir / "server.log"
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "error", "--lifespan", "on"],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            api_url = f"http://127.0.0.1:{port}/api"
            try:
                _wait_healthy(proc, api_url, timeout, log_path)
                yield api_url
            finally:
                stop_process(proc, timeout=5)
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


@contextmanager
def run_api() -> Iterator[str]:
    """The Prefect API of a ``rare run`` (see the module docstring). While inside, a local API's
    URL is set in this process's settings and environment, so that processes started
    meanwhile (Dask workers) report there too."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    with local_api() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
        os.environ["PREFECT_API_URL"] = api_url
        try:
            yield api_url
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            _drain_queued()
