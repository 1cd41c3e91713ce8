"""The LLM clients of one flow run, one per role, and the built-in simulator when a role has no endpoint.

In: the pipeline config. Out (context manager): :class:`LLMEndpoints`, the client of each LLM
role (``config.llm_for(role)``: the shared ``llm`` section with the role's overrides) and which
roles talk to the simulator. Roles whose settings resolve to the same endpoint and settings
share one client, so its adaptive concurrency and rate limits are learned once per endpoint
for the whole run. When a role has no ``base_url`` the OpenAI-compatible simulator subprocess
is started (once) and stopped on exit; its answers are cached under their own scope
(``rare_core.pipeline.SIMULATOR_SCOPE``). The API key is read by each client from the
environment variable its ``api_key_env`` names; it is never a parameter and never logged.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from rare_core.config import LLMRoles, PipelineConfig
from rare_core.llm.client import APILLMServing_request
from rare_core.llm.config import redact_url
from rare_core.pipeline import SIMULATOR_SCOPE

SIMULATED_WARNING = (
    "NO LLM ENDPOINT CONFIGURED for {roles} (base_url is empty): running against the built-in SIMULATOR. "
    "Every answer of {those} is SIMULATED, not written by a model."
)


@dataclass
class LLMEndpoints:
    """The run's client per role, and the roles answered by the built-in simulator."""

    clients: dict[str, APILLMServing_request] = field(default_factory=dict)
    simulated_roles: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return bool(self.simulated_roles)


@contextmanager
def llm_endpoints(config: PipelineConfig, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[LLMEndpoints]:
    """The run's LLM clients; starts (and stops) the simulator when a role's ``base_url`` is empty.
    ``config`` has its paths resolved (tasks.artifacts.resolve_paths): the response cache is
    ``llm.cache_path``, by default ``{cache_path}/llm_responses.sqlite``."""
    roles = {role: config.llm_for(role) for role in LLMRoles.model_fields}
    endpoints = LLMEndpoints(simulated_roles=[r for r, c in roles.items() if not c.base_url])
    with ExitStack() as stack:
        simulator = None
        if endpoints.simulated_roles:
            from rare_core.llm.simulator import SimulatorProcess  # imports uvicorn/fastapi: only when needed

            every = len(endpoints.simulated_roles) == len(roles)
            logger.warning(SIMULATED_WARNING.format(roles="any role" if every else ", ".join(endpoints.simulated_roles),
                                                    those="this run" if every else "those roles"))
            simulator = stack.enter_context(SimulatorProcess(latency=0.0))
            logger.warning("LLM simulator started at %s", simulator.base_url)
        shared: dict[str, APILLMServing_request] = {}
        for role, llm_config in roles.items():
            if not llm_config.base_url:
                llm_config = llm_config.model_copy(update={"base_url": simulator.base_url, "cache_scope": SIMULATOR_SCOPE})
            else:
                logger.info("%s: LLM endpoint %s, model %s", role, redact_url(llm_config.base_url), llm_config.model)
            same = llm_config.model_dump_json()
            if same not in shared:
                shared[same] = APILLMServing_request(config=llm_config)
                stack.callback(shared[same].close)
            endpoints.clients[role] = shared[same]
        yield endpoints
