"""The LLM endpoints of one flow run, one per role, and the clients that talk to them in each process.

* :func:`llm_endpoints` (in the flow, context manager): the endpoint settings of each LLM role
  (``config.llm_for(role)``: the shared ``llm`` section with the role's overrides), with the
  built-in simulator's address for the roles that have no ``base_url`` (the simulator
  subprocess is started once, stopped on exit; its answers are cached under their own scope,
  ``rare_core.pipeline.SIMULATOR_SCOPE``). Out: :class:`LLMEndpoints`, plain settings that
  travel to a task wherever it runs, a thread of this process or a Dask worker process.
* :func:`clients_for` (in a task): the client of each role in *this* process. Clients are
  made once per process and settings and shared by every task run there: roles with the same
  settings share one, so its adaptive concurrency and rate limits are learned once per
  endpoint and process, and a Dask worker opens its clients (and its response-cache
  connection) once, not per shard. A client is never pickled.

The API key is read by each client, in its own process, from the environment variable its
``api_key_env`` names; it is never a parameter, a setting or a log line.
"""

from __future__ import annotations

import atexit
import logging
import threading
from contextlib import ExitStack, contextmanager
from typing import Iterator

from pydantic import BaseModel, Field

from rare_core.config import LLMRoles, PipelineConfig
from rare_core.llm.serving import APILLMServing_request
from rare_core.llm.config import LLMConfig, redact_url
from rare_core.step_spec import SIMULATOR_SCOPE

SIMULATED_WARNING = (
    "NO LLM ENDPOINT CONFIGURED for {roles} (base_url is empty): running against the built-in SIMULATOR. "
    "Every answer of {those} is SIMULATED, not written by a model."
)


class LLMEndpoints(BaseModel):
    """The run's endpoint settings per role, and the roles answered by the built-in simulator."""

    roles: dict[str, LLMConfig] = Field(default_factory=dict)
    simulated_roles: list[str] = Field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return bool(self.simulated_roles)


@contextmanager
def llm_endpoints(config: PipelineConfig, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[LLMEndpoints]:
    """The run's endpoints; starts (and stops) the simulator when a role's ``base_url`` is empty,
    and closes this process's clients of the run on exit. ``config`` has its paths resolved
    (rare_core.artifacts.layout.resolve_paths): the response cache is ``llm.cache_path``, by default
    ``{cache_path}/llm_responses.sqlite``."""
    roles = {role: config.llm_for(role) for role in LLMRoles.model_fields}
    endpoints = LLMEndpoints(simulated_roles=[r for r, c in roles.items() if not c.base_url])
    with ExitStack() as stack:
        simulator = None
        if endpoints.simulated_roles:
            from rare_sim import SimulatorProcess  # imports uvicorn/fastapi: only when needed

            every = len(endpoints.simulated_roles) == len(roles)
            logger.warning(SIMULATED_WARNING.format(roles="any role" if every else ", ".join(endpoints.simulated_roles),
                                                    those="this run" if every else "those roles"))
            simulator = stack.enter_context(SimulatorProcess(latency=0.0))
            logger.warning("LLM simulator started at %s", simulator.base_url)
        for role, llm_config in roles.items():
            if not llm_config.base_url:
                llm_config = llm_config.model_copy(update={"base_url": simulator.base_url, "cache_scope": SIMULATOR_SCOPE})
            else:
                logger.info("%s: LLM endpoint %s, model %s", role, redact_url(llm_config.base_url), llm_config.model)
            endpoints.roles[role] = llm_config
        stack.callback(close_clients, list(endpoints.roles.values()))
        yield endpoints


_clients: dict[str, APILLMServing_request] = {}
_clients_lock = threading.Lock()


def clients_for(endpoints: LLMEndpoints | None) -> dict[str, APILLMServing_request]:
    """This process's client of each role of ``endpoints`` (made on first use, then shared)."""
    if endpoints is None:
        return {}
    with _clients_lock:
        out = {}
        for role, llm_config in endpoints.roles.items():
            same = llm_config.model_dump_json()
            if same not in _clients:
                _clients[same] = APILLMServing_request(config=llm_config)
            out[role] = _clients[same]
        return out


def close_clients(configs: list[LLMConfig] | None = None) -> None:
    """Close and forget this process's clients of ``configs`` (all of them when None)."""
    with _clients_lock:
        keys = list(_clients) if configs is None else [c.model_dump_json() for c in configs]
        for key in keys:
            client = _clients.pop(key, None)
            if client is not None:
                client.close()


# A Dask worker process never runs the flow's exit: its clients close when it ends.
atexit.register(close_clients)
