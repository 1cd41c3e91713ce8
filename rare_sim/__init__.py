"""rare_sim: an OpenAI-compatible LLM simulator with deterministic, prompt-aware answers over real
HTTP. The test-suite's fixture (through the real ``openai`` client), the offline backend of
``rare run``'s dry run and of the benchmarks; nothing here calls a real model. It depends on
the core (the prompts' readers, the shared constants of :mod:`rare_core.llm.simulated`); the
core never imports it. Install its web stack with the ``sim`` extra.

In: chat completions, Batch API calls, admin calls. Out: answers in the formats of the
pipeline's prompts, marked ``[simulated]`` and by ``system_fingerprint``
(:data:`rare_core.llm.simulated.SIMULATED_FINGERPRINT`), faults on demand, counters.

* :mod:`rare_sim.answers`: what it answers (Doc2Query questions, ReasonDistill reasoning,
  judge verdicts, closed answers, closed-book answers, echoes), read from the prompt by
  :func:`rare_core.prompts.view.read_prompt`.
* :mod:`rare_sim.completions`: how a real server renders it (reasoning modes, long thinking
  under ``max_tokens``, usage) and the OpenAI body shapes.
* :mod:`rare_sim.faults`: the faults it injects (:class:`FaultSpec`).
* :mod:`rare_sim.batch_api`: the Batch API (files, batches, their lines).
* :mod:`rare_sim.engine`: the state of one simulator and how it answers a request.
* :mod:`rare_sim.app`: the HTTP app (FastAPI). :mod:`rare_sim.models`: settings, counters,
  request types.
* :mod:`rare_sim.process`: :func:`serve`, the command line (``python -m rare_sim --port 0``
  prints ``RARE_SIMULATOR_READY http://127.0.0.1:PORT/v1``) and :class:`SimulatorProcess`, the
  simulator in a child process with sync admin helpers.
"""

from rare_sim.completions import estimate_tokens, prompt_parity
from rare_sim.engine import format_reset
from rare_sim.faults import FaultSpec
from rare_sim.models import SimulatorConfig, SimulatorStats
from rare_sim.process import SimulatorProcess, serve

__all__ = [
    "FaultSpec",
    "SimulatorConfig",
    "SimulatorProcess",
    "SimulatorStats",
    "estimate_tokens",
    "format_reset",
    "prompt_parity",
    "serve",
]
