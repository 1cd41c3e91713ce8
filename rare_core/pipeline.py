"""The pipeline's steps as data: one :class:`StepSpec` per operator, in run order (:data:`STEPS`).

A spec says what the flow needs to know about a step and nothing else: its name and file
number in the storage layout, its label, the config section holding its settings, the
operator class, which column keys it takes (``process`` keyword -> column), the LLM roles it
calls, whether the run needs it (``enabled``), what besides its input file and settings its
output depends on (its cache inputs), and how a sharded run gives it its rows (``scope``: one
shard at a time, or every shard at once for a step that compares rows; ``shared_index``: the
step searches one index of the whole corpus, built once).
The Prefect layer (``tasks/``) builds one task per spec and one cache key per spec from this;
``rare_core.inputs`` refuses an input that already has a column some step writes. A new step
is a new operator module and one more spec here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from pydantic import BaseModel

from rare_core.config import PipelineConfig
from rare_core.llm.client import APILLMServing_request, ProgressCallback
from rare_core.llm.config import endpoint_scope
from rare_core.operators.base import Operator
from rare_core.operators.bm25_hardneg import BM25HardNeg
from rare_core.operators.doc2query import Doc2Query
from rare_core.filters import DocumentFilter, LeakageFilter, LengthFilter, QuestionDedup
from rare_core.operators.reason_distill import ReasonDistill
from rare_core.hashing import file_sha256_memo


@dataclass(frozen=True)
class StepSpec:
    """One step of the pipeline (see the module docstring)."""

    name: str
    index: int
    label: str
    task_name: str
    section: str
    operator: type[Operator]
    keys: Callable[[PipelineConfig], dict[str, str]]
    role: str | None = None  # the LLM role (rare_core.config.LLMRoles) of an LLM step
    # More roles the operator may call, and its constructor arguments beyond the settings.
    more_roles: Callable[[PipelineConfig], tuple[str, ...]] = lambda config: ()
    extra_args: Callable[[PipelineConfig, dict], dict[str, Any]] = lambda config, clients: {}
    enabled: Callable[[PipelineConfig], bool] = lambda config: True
    stem: str | None = None  # file name in the layout when not ``step{index}`` (the filters' steps)

    cache_exclude: frozenset[str] = field(default_factory=frozenset)
    cache_inputs: Callable[[PipelineConfig], dict[str, Any]] = lambda config: {}
    # "row": each row's output depends on that row alone, so a sharded run gives the step one
    # shard at a time; "corpus": it compares rows with each other (duplicates), so it gets
    # every shard at once, and its row positions are those of the whole run.
    scope: Literal["row", "corpus"] = "row"
    # The step searches the whole corpus: a sharded run builds that index once, before the
    # step's shards, from a corpus file (``corpus_config``), and every shard searches it.
    shared_index: bool = False

    def settings(self, config: PipelineConfig) -> BaseModel:
        """The step's section of ``config`` (a dotted path, e.g. ``filters.question_dedup``)."""
        node: Any = config
        for part in self.section.split("."):
            node = getattr(node, part)
        return node

    def roles(self, config: PipelineConfig) -> tuple[str, ...]:
        """Every LLM role this step calls in this run."""
        return ((self.role,) if self.role else ()) + self.more_roles(config)

    def build(self, config: PipelineConfig, clients: dict[str, APILLMServing_request] | None = None,
              on_progress: ProgressCallback | None = None) -> Operator:
        """The operator with this run's settings (LLM steps: with the run's client per role)."""
        clients = clients or {}
        extra = self.extra_args(config, clients)
        if self.role:
            return self.operator(llm_serving=clients.get(self.role), config=self.settings(config),
                                 on_progress=on_progress, retry_failed=config.retry_failed, **extra)
        return self.operator(config=self.settings(config), **extra)

    def writes(self, config: PipelineConfig) -> list[str]:
        """The data columns the step adds to a row."""
        return self.build(config).output_columns(**self.keys(config))

    def cache_settings(self, config: PipelineConfig) -> dict[str, Any]:
        """Everything the step's output depends on besides its input file (see tasks.artifacts)."""
        out: dict[str, Any] = {
            "step": self.name,
            "settings": self.settings(config).model_dump(mode="json", exclude=set(self.cache_exclude)),
            "columns": self.keys(config),
            **self.cache_inputs(config),
        }
        if self.role:
            out["prompt_version"] = self.operator.prompt_version
        for role in self.roles(config):
            llm = config.llm_for(role)
            out[f"llm:{role}"] = {"model": llm.model, "generation": llm.generation.model_dump(mode="json"),
                                  "endpoint": endpoint_scope(llm) if llm.base_url else SIMULATOR_SCOPE,
                                  "max_tokens_cap": llm.max_tokens_cap}
        return out

    @property
    def uses_llm(self) -> bool:
        return self.role is not None

    def corpus_config(self, config: PipelineConfig, corpus_file: str) -> PipelineConfig:
        """``config`` with this step (``shared_index``) searching ``corpus_file``, unless the
        user gave a separate corpus, which it searches anyway."""
        settings = self.settings(config)
        if settings.corpus_path:
            return config
        return config.model_copy(update={self.section: settings.model_copy(update={"corpus_path": corpus_file})})


# The response-cache scope of the built-in simulator, whose port changes every run: its
# answers are cached under this name, never under a real endpoint's.
SIMULATOR_SCOPE = "rare-simulator"


def _corpus_hash(config: PipelineConfig) -> dict[str, Any]:
    corpus = config.hardneg.corpus_path  # a separate corpus: its content counts, like the input's
    return {"corpus_sha256": file_sha256_memo(corpus) if corpus else None}


def _reference_key(config: PipelineConfig) -> str:
    """The column the teacher's answers are checked against: the gold answer given with the
    questions, or the reference answer Doc2Query wrote."""
    return config.columns.gold_answer if config.questions_given else config.columns.reference_answer


def _judged(config: PipelineConfig) -> tuple[str, ...]:
    return ("judge",) if config.verify.method in ("judge", "auto") else ()


def _distill_args(config: PipelineConfig, clients: dict) -> dict[str, Any]:
    return {"verify": config.verify, "judge_serving": clients.get("judge")}


def _distill_cache_inputs(config: PipelineConfig) -> dict[str, Any]:
    return {"verify": config.verify.model_dump(mode="json")}


DOC2QUERY = StepSpec(
    name="doc2query", index=1, label="Doc2Query", task_name="doc2query", section="doc2query", operator=Doc2Query,
    keys=lambda c: {"input_key": c.columns.text, "output_question_key": c.columns.question,
                    "output_scenario_key": c.columns.scenario, "output_reference_key": c.columns.reference_answer},
    role="question_writer", enabled=lambda c: not c.questions_given,
    cache_exclude=frozenset({"role_guard"}))  # the guard stops a step; it never changes a finished step's rows
HARDNEG = StepSpec(
    name="hardneg", index=2, label="BM25HardNeg", task_name="bm25-hardneg", section="hardneg", operator=BM25HardNeg,
    keys=lambda c: {"input_question_key": c.columns.question, "input_text_key": c.columns.text,
                    "output_negatives_key": c.columns.hard_negatives, "input_id_key": c.columns.id},
    cache_exclude=frozenset({"index_dir", "threads"}), cache_inputs=_corpus_hash, shared_index=True)
DISTILL = StepSpec(
    name="distill", index=3, label="ReasonDistill", task_name="reason-distill", section="distill",
    operator=ReasonDistill,
    keys=lambda c: {"input_text_key": c.columns.text, "input_question_key": c.columns.question,
                    "input_scenario_key": c.columns.scenario, "input_hardneg_key": c.columns.hard_negatives,
                    "output_key": c.columns.reasoning, "output_answer_key": c.columns.answer,
                    "input_reference_key": _reference_key(c)},
    role="teacher", more_roles=_judged, extra_args=_distill_args, cache_inputs=_distill_cache_inputs,
    cache_exclude=frozenset({"role_guard"}))

def _filter(name: str, after: int, operator: type[Operator], section: str,
            keys: Callable[[PipelineConfig], dict[str, str]], scope: Literal["row", "corpus"] = "row") -> StepSpec:
    """A data filter as a step: ``{prefix}_step{after}_{name}`` in the layout, run when enabled."""
    return StepSpec(name=operator.step_name, index=after, label=name, task_name=name.replace("_", "-"),
                    section=f"filters.{section}", operator=operator, keys=keys, stem=f"step{after}_{name}",
                    enabled=lambda c: getattr(c.filters, section).enabled, scope=scope)


DOC_FILTER = _filter("docfilter", 0, DocumentFilter, "documents",
                     lambda c: {"input_key": c.columns.text, "id_key": c.columns.id}, scope="corpus")
QUESTION_DEDUP = _filter("dedup", 1, QuestionDedup, "question_dedup", lambda c: {"question_key": c.columns.question},
                         scope="corpus")
LEAKAGE = _filter("leakage", 1, LeakageFilter, "leakage",
                  lambda c: {"question_key": c.columns.question, "scenario_key": c.columns.scenario,
                             "reference_key": _reference_key(c), "input_key": c.columns.text})
LENGTH = _filter("length", 3, LengthFilter, "length",
                 lambda c: {"question_key": c.columns.question, "reasoning_key": c.columns.reasoning})

STEPS: tuple[StepSpec, ...] = (DOC_FILTER, DOC2QUERY, QUESTION_DEDUP, LEAKAGE, HARDNEG, DISTILL, LENGTH)
STEP_BY_NAME: dict[str, StepSpec] = {spec.name: spec for spec in STEPS}
INPUT_STEP_INDEX = 0  # the loaded input's file number in the layout
