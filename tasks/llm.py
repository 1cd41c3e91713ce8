"""The LLM client of one flow run, and the built-in simulator when no endpoint is configured.

In: the pipeline config. Out (context manager): an :class:`LLMEndpoint` holding the client
(built once, from ``config.llm``) and whether its answers are simulated. With an empty ``llm.base_url`` it starts the OpenAI-compatible
simulator subprocess first and stops it on exit. The API key is read by the client from the
environment variable ``llm.api_key_env`` names; it is never a parameter and never logged.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

from rare_core.config import PipelineConfig
from rare_core.llm.client import APILLMServing_request
from rare_core.llm.config import redact_url
from rare_core.pipeline import SIMULATOR_SCOPE

SIMULATED_WARNING = (
    "NO LLM ENDPOINT CONFIGURED (llm.base_url is empty): running against the built-in SIMULATOR. "
    "Every question, reasoning and answer of this run is SIMULATED, not written by a model."
)


@dataclass
class LLMEndpoint:
    """The run's client, and whether it talks to the simulator."""

    client: APILLMServing_request
    simulated: bool


@contextmanager
def llm_endpoint(config: PipelineConfig, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[LLMEndpoint]:
    """The run's LLM client; starts (and stops) the simulator when ``llm.base_url`` is empty.
    ``config`` has its paths resolved (tasks.artifacts.resolve_paths): the response cache is
    ``llm.cache_path``, by default ``{cache_path}/llm_responses.sqlite``."""
    llm_config, simulated = config.llm, not config.llm.base_url
    with ExitStack() as stack:
        if simulated:
            from rare_core.llm.simulator import SimulatorProcess  # imports uvicorn/fastapi: only when needed

            logger.warning(SIMULATED_WARNING)
            simulator = stack.enter_context(SimulatorProcess(latency=0.0))
            logger.warning("LLM simulator started at %s (model name %s)", simulator.base_url, llm_config.model)
            # Its port changes every run: its answers are cached under a scope of their own,
            # which no real endpoint ever has (rare_core.pipeline.SIMULATOR_SCOPE).
            llm_config = llm_config.model_copy(update={"base_url": simulator.base_url, "cache_scope": SIMULATOR_SCOPE})
        else:
            logger.info("LLM endpoint %s, model %s", redact_url(llm_config.base_url or ""), llm_config.model)
        client = APILLMServing_request(config=llm_config)
        stack.callback(client.close)
        yield LLMEndpoint(client=client, simulated=simulated)
