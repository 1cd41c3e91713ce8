"""The pipeline's configuration: one pydantic model, the flow's only parameter.

Each step's settings live beside their operator (``Doc2QueryConfig``, ``BM25HardNegConfig``,
``ReasonDistillConfig``); the LLM endpoint in :class:`rare_core.llm.LLMConfig`. This module
composes them with the input, the column keys, the storage layout and the output.
Field descriptions and constraints are what the Prefect UI's run form shows and enforces.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from rare_core.llm.config import BatchConfig, GenerationParams, LLMConfig
from rare_core.llm.simulated import SIMULATOR_MODEL
from rare_core.operators.base import RESERVED_PREFIX
from rare_core.operators.bm25_hardneg import POSITIVE_RANK, POSITIVE_SCORE
from rare_core.operators.doc2query import QUESTION_INDEX
from rare_core.operators.reason_distill import DOCUMENT_ORDER, POSITIVE_DOC_NUMBER
from rare_core.pipeline import STEPS
from rare_core.step_spec import POSITIVE

Format = Literal["json", "jsonl", "csv", "parquet"]


class ColumnKeys(BaseModel):
    """Column names, as in the operator API of the system we implement."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field("id", description="Document id column (a content hash is used when absent).")
    text: str = Field("text", description="Document text column: the source of questions and the positive.")
    question: str = Field("question", description="Generated question column.")
    scenario: str = Field("scenario", description="Generated scenario column.")
    hard_negatives: str = Field("hard_negatives", description="Hard-negative texts column.")
    reasoning: str = Field("reasoning", description="Distilled reasoning column.")
    answer: str = Field("answer", description="Distilled final answer column.")
    gold_answer: str = Field("gold_answer", description="With questions_given: the input's gold answer column (optional).")
    reference_answer: str = Field("reference_answer", description="The reference answer Doc2Query writes (never shown to the teacher).")

    @model_validator(mode="after")
    def _distinct(self) -> "ColumnKeys":
        """Each key its own column, outside the pipeline's namespace and its fixed output names."""
        named: dict[str, str] = {}
        for field, column in self.model_dump().items():
            if not column.strip():
                raise ValueError(f"columns.{field} is empty")
            if column.startswith(RESERVED_PREFIX):
                raise ValueError(f"columns.{field}={column!r}: names starting with {RESERVED_PREFIX!r} are the pipeline's own")
            if column in named:
                raise ValueError(f"columns.{named[column]} and columns.{field} both name the column {column!r}")
            named[column] = field
        derived = {f"{self.hard_negatives}_ids": "the negatives' ids", f"{self.hard_negatives}_scores": "the negatives' scores",
                   **{name: "a fixed output column" for name in FIXED_OUTPUTS}}
        for column, what in derived.items():
            if column in named:
                raise ValueError(f"columns.{named[column]}={column!r} is {what}; choose another name")
        return self


# Data columns the steps write under fixed names (besides the ``columns`` keys and the
# ``{hard_negatives}_ids``/``_scores`` derived from one), and the dataset's ``positive``.
FIXED_OUTPUTS = (QUESTION_INDEX, POSITIVE_SCORE, POSITIVE_RANK, DOCUMENT_ORDER, POSITIVE_DOC_NUMBER, POSITIVE)


class Prices(BaseModel):
    """Optional prices for the report's cost line, in currency units per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    batch_input_per_million: float | None = Field(None, ge=0, description="Batch API price; default: half of input_per_million.")
    batch_output_per_million: float | None = Field(None, ge=0, description="Batch API price; default: half of output_per_million.")
    currency: str = Field("USD", min_length=1, max_length=8, description="Currency of these prices, shown with every cost.")


def _overrides(model: type[BaseModel], name: str, doc: str, nested: dict[str, type[BaseModel]]) -> type[BaseModel]:
    """A model with every field of ``model`` optional (None: not overridden); ``nested`` fields
    become overrides of their own model."""
    fields: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        annotation = nested.get(field, info.annotation)
        fields[field] = (annotation | None, Field(None, description=info.description))
    return create_model(name, __doc__=doc, __config__=ConfigDict(extra="forbid", hide_input_in_errors=True), **fields)


GenerationOverrides = _overrides(GenerationParams, "GenerationOverrides",
                                 "Generation settings of one role; unset fields are the shared llm section's.", {})
BatchOverrides = _overrides(BatchConfig, "BatchOverrides", "Batch API settings of one role.", {})
LLMRole = _overrides(LLMConfig, "LLMRole", "One role's endpoint settings; every unset field is the shared llm "
                     "section's (a cheap model writing questions, a strong reasoning model teaching...).",
                     {"generation": GenerationOverrides, "batch": BatchOverrides})
# Every LLM role a step of the registry introduces (StepSpec.introduces): name -> what it does.
ROLES: dict[str, str] = {role: what for spec in STEPS for role, what in spec.introduces.items()}
Role = Literal[tuple(ROLES)]  # type: ignore[valid-type]
# Roles that, left unset in ``roles``, take another role's settings (StepSpec.role_falls_back_to).
ROLE_FALLBACK: dict[str, str] = {role: to for spec in STEPS for role, to in spec.role_falls_back_to.items()}


class _Roles(BaseModel):
    """Who does what: each role may use its own endpoint, model, key variable and generation
    settings; what a role leaves unset comes from the shared ``llm`` section."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


# One optional field per role of ROLES.
LLMRoles = create_model("LLMRoles", __base__=_Roles, __module__=__name__, __doc__=_Roles.__doc__,
                        **{role: (LLMRole | None, Field(None, description=what)) for role, what in ROLES.items()})


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _sections(prefix: str) -> dict[str, Any]:
    """The config fields of the registry's steps whose section is ``{prefix}{name}``: name ->
    (settings model, its default and description), in registry order."""
    return {spec.section[len(prefix):]: (spec.settings_model, Field(default_factory=spec.default_settings,
                                                                     description=spec.description or None))
            for spec in STEPS if spec.section.startswith(prefix) and "." not in spec.section[len(prefix):]}


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Sections that group steps of one kind (a step's section ``{group}.{name}``): the group's
# docstring and its description in the run's config.
GROUPS = {
    "filters": ("The data filters (rare_core.filters), each a step of its own, each off until switched on "
                "(``--set filters.question_dedup.enabled=true``); a filtered row goes to failed_rows with its "
                "reason, and the report counts them by reason.", "Data filters, each switchable."),
    "checks": ("Checks of what the rows teach, each a step of its own, each off until switched on; a row is "
               "flagged in a ``rare_`` column, counted in the report, and dropped only where the check's "
               "settings say so.", "Checks of the rows' content, each switchable."),
}


def _group(name: str) -> type[BaseModel]:
    """The model of group ``name``: one field per step of the registry in it."""
    doc, _ = GROUPS[name]
    return create_model(f"{name.title()}Config", __base__=_Group, __module__=__name__, __doc__=doc,
                        **_sections(f"{name}."))


# One model per group that has steps: FiltersConfig, ChecksConfig...
GROUP_MODELS = {name: _group(name) for name in GROUPS if any(s.section.startswith(f"{name}.") for s in STEPS)}
FiltersConfig = GROUP_MODELS["filters"]


class DaskConfig(BaseModel):
    """Where the shards run: on the default thread pool (neither field set), on a local Dask
    cluster of ``workers`` processes, or on the existing cluster at ``address``. How, not what:
    no setting here changes a row of the output, so none is part of a step's cache key."""

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(None, ge=1, description="Start a distributed.LocalCluster of this many worker processes.")
    address: str | None = Field(None, min_length=1, description="Scheduler of an existing Dask cluster (tcp://HOST:PORT).")
    memory_limit: str = Field("auto", description="Per-worker memory limit of a LocalCluster (Dask's syntax: '2GiB', 'auto').")
    search_workers: int = Field(1, ge=0, description="Workers that run the BM25 index and search shards (each holds "
                                                     "a JVM and the index); 0: any worker. See tasks/placement.py.")

    @model_validator(mode="after")
    def _one_cluster(self) -> "DaskConfig":
        if self.workers and self.address:
            raise ValueError("dask: give workers (a local cluster) or address (an existing one), not both")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.workers or self.address)


class _Run(BaseModel):
    """Everything one pipeline run needs. The API key is never here: ``llm.api_key_env`` names
    the environment variable that holds it."""

    # hide_input_in_errors: a refused llm.base_url may carry a secret; a ValidationError's text
    # must not echo it (pydantic applies the outermost model's setting to nested fields).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    input_path: str = Field(..., min_length=1, description="Documents file (.json, .jsonl, .csv or .parquet).")
    # Not named ``keys``: dict(model) then calls the field (pydantic#10575), and Prefect resolves
    # flow/task parameters with dict(model) (PrefectHQ/prefect#15610).
    columns: ColumnKeys = Field(default_factory=ColumnKeys, description="Column names of the input and of each step's output.")
    llm: LLMConfig = Field(default_factory=LLMConfig,
                           description="LLM endpoint shared by every role; leave base_url empty to run on the built-in simulator.")
    roles: LLMRoles = Field(default_factory=LLMRoles, description="Per-role endpoint settings (" + ", ".join(ROLES) + ").")
    questions_given: bool = Field(
        False, description="The input holds questions (question column, positive in the text column, optional "
                           "gold answer and scenario): Doc2Query is skipped, as the RARE paper does on PubMedQA.")
    cache_path: str = Field("./cache", description="Folder of the intermediate step files, the response cache and the BM25 index.")
    file_name_prefix: str = Field("dataflow_cache_step", min_length=1, description="Step file prefix: {cache_path}/{prefix}_step{N}.{cache_type}.")
    cache_type: Format = Field("jsonl", description="Format of the intermediate step files.")
    output_path: str = Field("./out", description="Folder for the final dataset and the report.")
    output_format: Format = Field("jsonl", description="Format of the final dataset.")
    limit: int | None = Field(None, ge=1, description="Use only the first N documents (for trials).")
    prices: Prices | None = Field(None, description="Token prices for the report's cost estimate.")
    export: list[str] = Field(default_factory=list, description="Training formats written at the end of a run "
                              "(messages, sharegpt, alpaca, prompt-completion, retrieval, rare, hf; "
                              "dpo and kto: preference data from the samples verification rejected).")
    export_path: str | None = Field(None, description="Folder of the exports; default {output_path}/exports.")
    command: str | None = Field(None, description="The command line that started the run (for the dataset card).")
    shards: int | Literal["auto"] = Field(
        "auto", description="Split the documents into this many shards, each its own step files, cached and "
                            "resumable on its own. auto: one per 10,000 documents, at least two per Dask worker; "
                            "a single shard keeps the single-file step layout.")
    dask: DaskConfig = Field(default_factory=DaskConfig, description="Run the shards on a Dask cluster.")
    retry_failed: bool = Field(
        False, description="Ask again the rows an earlier run failed for their content (unusable answers). "
                           "Rows that failed at the HTTP level are always asked again.")

    @model_validator(mode="after")
    def _positive_shards(self) -> "_Run":
        if self.shards != "auto" and self.shards < 1:
            raise ValueError(f"shards must be 'auto' or at least 1, got {self.shards}")
        return self

    @model_validator(mode="after")
    def _known_exports(self) -> "_Run":
        from rare_core.exports import FORMATS  # the exporters import this module

        unknown = [f for f in self.export if f not in FORMATS]
        if unknown:
            raise ValueError(f"export: unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
        return self

    @model_validator(mode="after")
    def _model_for_endpoint(self) -> "_Run":
        """A real endpoint needs a model name; the built-in simulator answers to any (default ``rare-sim-1``)."""
        if self.llm.model is None:
            if self.llm.base_url:
                raise ValueError("llm.model is required with llm.base_url (the model name the endpoint serves)")
            self.llm = self.llm.model_copy(update={"model": SIMULATOR_MODEL})
        for role in LLMRoles.model_fields:
            self.llm_for(role)  # each role must resolve to a valid endpoint config
        return self

    @model_validator(mode="after")
    def _steps_accept(self) -> "_Run":
        """Each enabled step's conditions on the rest of the config (``StepSpec.check_config``)."""
        for spec in STEPS:
            if spec.check_config is not None and spec.enabled(self):
                spec.check_config(self)
        return self

    def llm_for(self, role: str) -> LLMConfig:
        """The endpoint settings of ``role``: the shared ``llm`` section with the role's overrides;
        a role left unset that falls back to another (:data:`ROLE_FALLBACK`) gets that role's."""
        override = getattr(self.roles, role)
        if override is None:
            return self.llm_for(ROLE_FALLBACK[role]) if role in ROLE_FALLBACK else self.llm
        data = _merge(self.llm.model_dump(), override.model_dump(exclude_none=True))
        if override.base_url and not override.model and not self.llm.base_url:  # the shared model is the simulator's
            raise ValueError(f"roles.{role}.model is required with roles.{role}.base_url")
        try:
            return LLMConfig.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"roles.{role}: {exc}") from None


    @property
    def reference_key(self) -> str:
        """The column the teacher's answers are checked against: the gold answer given with the
        questions, or the reference answer Doc2Query wrote."""
        return self.columns.gold_answer if self.questions_given else self.columns.reference_answer


# The run's config: the fields above, then one section per step of the registry
# (rare_core.pipeline.STEPS) whose section is not nested (the filters' are in ``filters``).
PipelineConfig = create_model("PipelineConfig", __base__=_Run, __module__=__name__, __doc__=_Run.__doc__,
                              **_sections(""),
                              **{name: (model, Field(default_factory=model, description=GROUPS[name][1]))
                                 for name, model in GROUP_MODELS.items()})

