"""The registry: the pipeline's steps, in run order (:data:`STEPS`), one line each.

Each step's :class:`~rare_core.step_spec.StepSpec` lives in its own module beside its operator
and owns everything about the step (settings, columns, roles, resources, files, dataset
columns). The config's step sections (:class:`rare_core.config.PipelineConfig`), the Prefect
tasks (``tasks/steps.py``), the storage layout's file numbers (:func:`file_number`) and the
dataset's columns (:func:`dataset_columns`) are derived from this list; ``rare_core.inputs``
refuses an input that already has a column some step writes.

A new step is its module and one more line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from rare_core.step_spec import POSITIVE, StepSpec

if TYPE_CHECKING:
    from rare_core.config import PipelineConfig

# One line per step, in run order: the module (under rare_core) that defines its ``SPEC``.
_MODULES = (
    "filters.document",
    "operators.doc2query",
    "filters.dedup",
    "filters.leakage",
    "filters.decontaminate",
    "checks.closed_book",
    "operators.bm25_hardneg",
    "checks.negatives",
    "operators.reason_distill",
    "operators.verification",
    "checks.grounding",
    "filters.length",
)
STEPS: tuple[StepSpec, ...] = tuple(importlib.import_module(f"rare_core.{m}").SPEC for m in _MODULES)
STEP_BY_NAME: dict[str, StepSpec] = {spec.name: spec for spec in STEPS}
INPUT_STEP_INDEX = 0  # the loaded input's file number in the layout


def enabled_steps(config: "PipelineConfig") -> list[StepSpec]:
    """The steps a run with ``config`` runs, in order."""
    return [spec for spec in STEPS if spec.enabled(config)]


def file_number(spec: StepSpec, config: "PipelineConfig") -> int:
    """The step's ``N`` in ``{prefix}_step{N}``: its place among the steps this run runs, as the
    operator API's ``FileStorage.step()`` numbers the operators a script calls in turn (the
    input is 0; with the filters off, Doc2Query 1, BM25HardNeg 2, ReasonDistill 3)."""
    place = [s.name for s in STEPS].index(spec.name)  # by name: a Dask worker holds an unpickled copy of the spec
    return sum(1 for s in STEPS[:place] if s.enabled(config)) + 1


def dataset_columns(config: "PipelineConfig") -> dict[str, str]:
    """The final dataset's columns, in order: dataset column -> column of the last step file.
    The id, then each step's (:attr:`StepSpec.dataset`) in registry order, whether the step ran
    or the input gave its columns (given questions)."""
    out = {config.columns.id: config.columns.id}
    for spec in STEPS:
        out.update(spec.dataset(config))
    return out


def required_dataset_columns(config: "PipelineConfig") -> set[str]:
    """The dataset's columns every row has (the others come when the last step file has them):
    what a training example is made of."""
    k = config.columns
    return {k.id, k.question, POSITIVE, k.hard_negatives, k.reasoning, k.answer}
