"""The process that runs the simulator, and its handle from another process.

In: settings (:class:`~rare_sim.models.SimulatorConfig`, host, port, API key). Out:
:func:`serve` (the app on uvicorn in the foreground; it prints :data:`READY_PREFIX` and its
``base_url`` once it accepts connections), :func:`main` (the command line, ``python -m rare_sim
--port 0``) and :class:`SimulatorProcess` (the simulator in a child process with sync admin
helpers: stats, faults, settings), which tests, benchmarks and ``rare run``'s dry run start.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Literal

import httpx
import uvicorn

from rare_sim.app import create_app
from rare_sim.faults import FaultSpec
from rare_sim.models import ReasoningMode, SimulatorConfig, SimulatorStats

READY_PREFIX = "RARE_SIMULATOR_READY"
API_KEY_ENV = "RARE_SIMULATOR_API_KEY"


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints the READY line once its socket accepts connections."""

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            print(f"{READY_PREFIX} http://{self.config.host}:{port}/v1", flush=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    latency: float = 0.0,
    api_key: str | None = None,
    *,
    jitter: float = 0.0,
    stop_on_stdin_eof: bool = False,
    config: SimulatorConfig | None = None,
) -> None:
    """Run the simulator in the foreground until SIGINT/SIGTERM (port 0 picks a free port).

    ``config`` (all settings) wins over ``latency``/``jitter``. With ``stop_on_stdin_eof`` it
    also stops when its stdin closes, i.e. when the parent process that holds the other end
    dies, so a crashed parent leaves no orphan behind.
    """
    uv_config = uvicorn.Config(
        create_app(latency=latency, api_key=api_key, jitter=jitter, config=config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = _AnnouncingServer(uv_config)
    if stop_on_stdin_eof:

        def stop_at_eof() -> None:
            sys.stdin.buffer.read()
            server.should_exit = True

        threading.Thread(target=stop_at_eof, name="stdin-eof-watch", daemon=True).start()
    server.run()


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m rare_sim --host H --port P --latency S [--api-key K] [--config JSON]``
    (``--config``: any :class:`SimulatorConfig` settings as a JSON object; ``--latency``/
    ``--jitter`` win over it when given)."""
    parser = argparse.ArgumentParser(prog="python -m rare_sim",
                                     description="An OpenAI-compatible LLM simulator over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=None, help="seconds per chat completion")
    parser.add_argument("--jitter", type=float, default=None, help="latency jitter fraction in [0, 1]")
    parser.add_argument("--config", default=None, help="SimulatorConfig settings as a JSON object")
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV), help=f"required bearer token (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)
    settings = json.loads(args.config) if args.config else {}
    settings.update({k: v for k, v in (("latency", args.latency), ("jitter", args.jitter)) if v is not None})
    config = SimulatorConfig.model_validate(settings)
    serve(args.host, args.port, api_key=args.api_key, stop_on_stdin_eof=args.stop_on_stdin_eof, config=config)


class SimulatorProcess:
    """The simulator in a child process (own CPU and GIL), with sync admin helpers.

    The keyword settings are :class:`SimulatorConfig`'s (defaults: the plain behaviour);
    :meth:`configure` and :meth:`set_latency` change them while it runs.

    >>> with SimulatorProcess(latency=0.0, reasoning="reasoning_content") as sim:
    ...     client = openai.OpenAI(base_url=sim.base_url, api_key="x")
    """

    def __init__(
        self,
        latency: float = 0.0,
        api_key: str | None = None,
        *,
        jitter: float = 0.0,
        host: str = "127.0.0.1",
        startup_timeout: float = 30.0,
        reasoning: ReasoningMode = "inline",
        thinking_tokens: int = 0,
        max_in_flight: int | None = None,
        cap_retry_after: int | None = 1,
        structured_output: Literal["supported", "unsupported"] = "supported",
        batch_delay: float = 0.0,
    ) -> None:
        self.latency, self.api_key, self.jitter = latency, api_key, jitter
        self.host, self.startup_timeout = host, startup_timeout
        self.settings = SimulatorConfig(
            latency=latency, jitter=jitter, reasoning=reasoning, thinking_tokens=thinking_tokens,
            max_in_flight=max_in_flight, cap_retry_after=cap_retry_after, structured_output=structured_output,
            batch_delay=batch_delay,
        )
        """The settings it starts with; :meth:`configure` starts from them."""
        self._proc: subprocess.Popen | None = None
        self._admin: httpx.Client | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` for an OpenAI client."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._base_url

    def start(self) -> SimulatorProcess:
        """Start the child and wait for its READY line; ``RuntimeError`` with its stderr on failure."""
        if self._proc is not None:
            return self
        project_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")])))
        env.pop(API_KEY_ENV, None)
        if self.api_key is not None:
            env[API_KEY_ENV] = self.api_key  # not on the command line, where `ps` would show it
        cmd = [
            sys.executable, "-m", "rare_sim", "--host", self.host, "--port", "0",
            "--latency", str(self.latency), "--jitter", str(self.jitter), "--stop-on-stdin-eof",
            "--config", self.settings.model_dump_json(),
        ]
        stderr = tempfile.TemporaryFile()
        self._proc = proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True,
            start_new_session=True,  # a Ctrl-C to the terminal reaches us, not the server we stop ourselves
        )
        atexit.register(self.stop)
        ready = threading.Event()
        url: list[str] = []

        def read_stdout() -> None:  # keeps draining stdout after READY so the child never blocks
            with proc.stdout:
                for line in proc.stdout:
                    if not ready.is_set() and line.startswith(READY_PREFIX):
                        url.append(line.split()[1])
                        ready.set()

        threading.Thread(target=read_stdout, name="simulator-stdout", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.02):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                stderr.seek(0)
                detail = stderr.read().decode("utf-8", "replace").strip() or "(no stderr)"
                raise RuntimeError(
                    f"LLM simulator did not become ready within {self.startup_timeout:g} s "
                    f"(exit code {proc.returncode}); stderr:\n{detail}"
                )
        stderr.close()
        self._base_url = url[0]
        self._admin = httpx.Client(base_url=self._base_url.removesuffix("/v1"), timeout=10.0)
        return self

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s) and wait for it. Idempotent."""
        proc, self._proc, self._base_url = self._proc, None, None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if proc is None:
            return
        atexit.unregister(self.stop)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdin.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, json_body: Any = None) -> Any:
        if self._admin is None:
            raise RuntimeError("the simulator is not running; call start() first")
        response = self._admin.request(method, path, json=json_body)
        response.raise_for_status()
        return response.json()

    def stats(self) -> SimulatorStats:
        """The simulator's counters (this call counts itself under ``/_sim/stats``)."""
        return SimulatorStats.model_validate(self._call("GET", "/_sim/stats"))

    def inject(self, faults: Iterable[FaultSpec]) -> list[FaultSpec]:
        """Queue faults after those pending; returns all pending faults."""
        specs = [f.model_dump(exclude_none=True) for f in faults]
        return [FaultSpec.model_validate(f) for f in self._call("POST", "/_sim/faults", specs)]

    def clear_faults(self) -> None:
        """Drop all pending faults."""
        self._call("DELETE", "/_sim/faults")

    def reset(self) -> None:
        """Zero the counters and drop pending faults."""
        self._call("POST", "/_sim/reset")

    def set_latency(self, latency: float, jitter: float = 0.0) -> None:
        """Change the latency of subsequent chat completions (the other settings go back to the
        constructor's, as with :meth:`configure`)."""
        self.configure(latency=latency, jitter=jitter)

    def configure(self, **settings: Any) -> SimulatorConfig:
        """Set :class:`SimulatorConfig` settings for what follows. Each call starts from the
        constructor's settings: whatever it does not name goes back to them (``configure()``
        restores them all). Returns the settings now in effect."""
        config = SimulatorConfig.model_validate({**self.settings.model_dump(), **settings})
        return SimulatorConfig.model_validate(self._call("POST", "/_sim/config", config.model_dump()))

    def config(self) -> SimulatorConfig:
        """The settings in effect."""
        return SimulatorConfig.model_validate(self._call("GET", "/_sim/config"))
