"""What a step of the pipeline is, as data: :class:`StepSpec`.

A spec owns everything the rest of the pipeline needs to know about its step, so that a new
step is one module (its operator, settings model and spec) and one line in the registry
(:data:`rare_core.pipeline.STEPS`):

* its **settings**: the pydantic model of its section of the run's config (``section``, a
  dotted path such as ``hardneg`` or ``filters.question_dedup``), the section's default and
  description. :class:`rare_core.config.PipelineConfig` is derived from the registry;
* its **operator** and the column keys it takes (``keys``: ``process`` keyword -> column);
* the LLM **roles** it calls (``role``, ``more_roles``), those it introduces (``introduces``) and
  the role each of them falls back to when left unset (``role_falls_back_to``);
* whether a run needs it (``enabled``), what it asks of the rest of the run's config when it
  does (``check_config``), and what its output depends on besides its input file and settings
  (``cache_inputs``, ``cache_exclude``: :meth:`StepSpec.cache_settings`);
* how a sharded run gives it its rows (``scope``) and the **resources** it holds where it runs
  (:data:`SEARCH_INDEX`: a JVM and an index of the whole corpus, built once per run);
* its **files**: settings holding paths that default under the run's cache folder
  (``cache_files``);
* the columns it adds to the final **dataset** (``dataset``: dataset name -> step-file column);
* its **estimate** for `rare estimate` (``estimate``, :mod:`rare_core.estimate_model`);
* its lines in the report and the dataset card (``describe``).

The spec never imports the config module: its callables receive the run's config.
Framework-free: no Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel

from rare_core.llm.config import endpoint_scope
from rare_core.operators.base import Operator

if TYPE_CHECKING:  # the config module derives its step sections from the registry: no import at run time
    from rare_core.config import PipelineConfig

# The response-cache scope of the built-in simulator, whose port changes every run: its
# answers are cached under this name, never under a real endpoint's.
SIMULATOR_SCOPE = "rare-simulator"

# The positive's text in the final dataset (the input's text column under this name).
POSITIVE = "positive"

# A resource a step holds in the process that runs it: the Lucene index of the whole corpus
# inside a JVM, which cannot be unloaded (tasks/placement.py keeps such steps on a few Dask
# workers and restarts them afterwards; a sharded run builds the index once, before the shards).
SEARCH_INDEX = "search_index"
Resource = Literal["search_index"]


def _nothing(config: Any) -> dict:
    return {}


@dataclass(frozen=True)
class StepSpec:
    """One step of the pipeline (see the module docstring)."""

    name: str
    label: str
    task_name: str
    section: str
    settings_model: type[BaseModel]
    operator: type[Operator]
    keys: Callable[["PipelineConfig"], dict[str, str]]
    description: str = ""  # of the config section: the Prefect run form and the docs show it
    default: Callable[[], BaseModel] | None = None  # the section's default; None: settings_model()
    role: str | None = None  # the LLM role (rare_core.config.LLMRoles) of an LLM step
    # The roles this step brings to the run's config (``roles.<name>``): name -> what it does.
    introduces: dict[str, str] = field(default_factory=dict)
    # Roles it introduces that, left unset in ``roles``, take another role's settings: role ->
    # that role (the closed-book probe asks the teacher unless given a model of its own).
    role_falls_back_to: dict[str, str] = field(default_factory=dict)
    # More roles the operator may call, and its constructor arguments beyond the settings.
    more_roles: Callable[["PipelineConfig"], tuple[str, ...]] = lambda config: ()
    extra_args: Callable[["PipelineConfig", dict], dict[str, Any]] = lambda config, clients: {}
    enabled: Callable[["PipelineConfig"], bool] = lambda config: True
    # What the step needs of the rest of the run's config, when it is enabled: raises ValueError
    # (one line, naming the setting to change) for a config it cannot run with.
    check_config: Callable[["PipelineConfig"], None] | None = None

    cache_exclude: frozenset[str] = field(default_factory=frozenset)
    cache_inputs: Callable[["PipelineConfig"], dict[str, Any]] = _nothing
    # "row": each row's output depends on that row alone, so a sharded run gives the step one
    # shard at a time; "corpus": it compares rows with each other (duplicates), so it gets
    # every shard at once, and its row positions are those of the whole run.
    scope: Literal["row", "corpus"] = "row"
    resources: frozenset[Resource] = field(default_factory=frozenset)
    # Settings fields holding a path that, left at its default, goes under the run's cache
    # folder: field -> file or folder name there (the BM25 index: {cache_path}/bm25_index).
    cache_files: dict[str, str] = field(default_factory=dict)
    # Settings fields holding a path to a file the user gives (resolved against the working directory).
    input_files: tuple[str, ...] = ()
    # The columns the step adds to the final dataset, in order: dataset column -> step-file
    # column; each comes when the last step file has it.
    dataset: Callable[["PipelineConfig"], dict[str, str]] = _nothing
    # What the step would send and cost, sending nothing (`rare estimate`; LLM steps):
    # rare_core.estimate_model.EstimateInputs -> EstimatePart.
    estimate: Callable[[Any], Any] | None = None
    # What the step did to the rows, in words, from its StepSummary: lines of the run's report
    # and of the dataset card ("12 of 40 rows quote text their document does not hold").
    describe: Callable[[Any], list[str]] | None = None

    @property
    def searches_corpus(self) -> bool:
        """The step holds the index of the whole corpus (:data:`SEARCH_INDEX`)."""
        return SEARCH_INDEX in self.resources

    def default_settings(self) -> BaseModel:
        return self.default() if self.default else self.settings_model()

    def settings(self, config: "PipelineConfig") -> BaseModel:
        """The step's section of ``config`` (a dotted path, e.g. ``filters.question_dedup``)."""
        node: Any = config
        for part in self.section.split("."):
            node = getattr(node, part)
        return node

    def with_settings(self, config: "PipelineConfig", **update: Any) -> "PipelineConfig":
        """``config`` with fields of this step's section replaced."""
        settings = self.settings(config).model_copy(update=update)
        *parents, last = self.section.split(".")
        if not parents:
            return config.model_copy(update={last: settings})
        parent = getattr(config, parents[0])
        return config.model_copy(update={parents[0]: parent.model_copy(update={last: settings})})

    def roles(self, config: "PipelineConfig") -> tuple[str, ...]:
        """Every LLM role this step calls in this run."""
        return ((self.role,) if self.role else ()) + self.more_roles(config)

    def build(self, config: "PipelineConfig", clients: dict | None = None, on_progress: Callable | None = None) -> Operator:
        """The operator with this run's settings (LLM steps: with the run's client per role)."""
        clients = clients or {}
        extra = self.extra_args(config, clients)
        if self.role:
            return self.operator(llm_serving=clients.get(self.role), config=self.settings(config),
                                 on_progress=on_progress, retry_failed=config.retry_failed, **extra)
        return self.operator(config=self.settings(config), **extra)

    def writes(self, config: "PipelineConfig") -> list[str]:
        """The data columns the step adds to a row."""
        return self.build(config).output_columns(**self.keys(config))

    def cache_settings(self, config: "PipelineConfig") -> dict[str, Any]:
        """Everything the step's output depends on besides its input file (see rare_core.artifacts)."""
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

    def corpus_config(self, config: "PipelineConfig", corpus_file: str) -> "PipelineConfig":
        """``config`` with this step (one that searches the corpus) searching ``corpus_file``,
        unless the user gave a separate corpus, which it searches anyway."""
        if self.settings(config).corpus_path:
            return config
        return self.with_settings(config, corpus_path=corpus_file)
