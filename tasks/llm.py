"""The LLM client of one flow run, and the built-in simulator when no endpoint is configured.

In: the pipeline config. Out (context manager): an :class:`LLMEndpoint` holding the client
(built once, from ``config.llm``, with the response cache under ``cache_path``) and whether
its answers are simulated. With an empty ``llm.base_url`` it starts the OpenAI-compatible
simulator subprocess first and stops it on exit. The API key is read by the client from the
environment variable ``llm.api_key_env`` names; it is never a parameter and never logged.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rare_core.config import PipelineConfig
from rare_core.llm.client import APILLMServing_request
from rare_core.llm.config import LLMConfig, redact_url

RESPONSE_CACHE_FILENAME = "llm_responses.sqlite"
SIMULATED_WARNING = (
    "NO LLM ENDPOINT CONFIGURED (llm.base_url is empty): running against the built-in SIMULATOR. "
    "Every question, reasoning and answer of this run is SIMULATED, not written by a model."
)


@dataclass
class LLMEndpoint:
    client: APILLMServing_request
    simulated: bool


def response_cache_path(config: PipelineConfig) -> str | None:
    """``{cache_path}/llm_responses.sqlite``, unless ``llm.cache_path`` was set to another file
    than its default (then that file) or to None (then no response cache)."""
    own = config.llm.cache_path
    if own is None:
        return None
    if own != LLMConfig.model_fields["cache_path"].default:
        return str(Path(own).resolve())
    return str(Path(config.cache_path).resolve() / RESPONSE_CACHE_FILENAME)


@contextmanager
def llm_endpoint(config: PipelineConfig, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[LLMEndpoint]:
    """The run's LLM client; starts (and stops) the simulator when ``llm.base_url`` is empty."""
    llm_config = config.llm.model_copy(update={"cache_path": response_cache_path(config)})
    if llm_config.base_url:
        logger.info("LLM endpoint %s, model %s", redact_url(llm_config.base_url), llm_config.model)
        client = APILLMServing_request(config=llm_config)
        try:
            yield LLMEndpoint(client=client, simulated=False)
        finally:
            client.close()
        return
    from rare_core.llm.simulator import SimulatorProcess  # imports uvicorn/fastapi: only when needed

    logger.warning(SIMULATED_WARNING)
    with SimulatorProcess(latency=0.0) as simulator:
        logger.warning("LLM simulator started at %s (model name %s)", simulator.base_url, llm_config.model)
        client = APILLMServing_request(config=llm_config.model_copy(update={"base_url": simulator.base_url}))
        try:
            yield LLMEndpoint(client=client, simulated=True)
        finally:
            client.close()
