"""``rare serve``: serve the flow with a schedule, for users without a work pool.

In: a :class:`PipelineConfig` (the deployment's default parameters; every run can override
them in the UI's run form), a deployment name and a cron schedule. Out: a deployment on the
Prefect server at ``PREFECT_API_URL`` and a runner in this process that executes its runs
(scheduled, from the UI, or from ``prefect deployment run``) until stopped with Ctrl-C.

One source for both ways of deploying: the schedule, its time zone, the tags, the parameter
schema's enforcement and the runs at once come from the work-pool deployment in
``deployments/prefect.yaml`` (:func:`shared_settings`), so ``rare serve`` and ``prefect deploy``
cannot drift apart. The API enforces the parameter schema: a run with an invalid config is
refused before it exists. The config's paths are made absolute here (``resolve_paths``), so
runs find the same files whatever their working directory.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rare_core.config import PipelineConfig
from rare_core.artifacts.layout import resolve_paths

DEFAULT_DEPLOYMENT = "rare-served"
DEPLOYMENT_FILE = Path(__file__).with_name("prefect.yaml")


@lru_cache(maxsize=1)
def shared_settings() -> dict[str, Any]:
    """What ``rare serve`` takes from the first deployment of ``prefect.yaml``: ``cron``,
    ``timezone``, ``tags``, ``enforce_parameter_schema`` and ``concurrency_limit``."""
    import yaml  # comes with Prefect

    deployment = yaml.safe_load(DEPLOYMENT_FILE.read_text(encoding="utf-8"))["deployments"][0]
    schedule = deployment["schedules"][0]
    return {"cron": schedule["cron"], "timezone": schedule.get("timezone", "UTC"), "tags": deployment["tags"],
            "enforce_parameter_schema": deployment["enforce_parameter_schema"],
            "concurrency_limit": deployment["concurrency_limit"]}


class ServeOptions(BaseModel):
    """How ``rare serve`` registers the deployment (defaults: :func:`shared_settings`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(DEFAULT_DEPLOYMENT, min_length=1, description="Deployment name.")
    cron: str | None = Field(default_factory=lambda: shared_settings()["cron"],
                             description="Cron schedule (in prefect.yaml's time zone); None serves without a schedule.")
    limit: int = Field(default_factory=lambda: shared_settings()["concurrency_limit"], ge=1,
                       description="Runs this runner executes at once.")


def serve(config: PipelineConfig, options: ServeOptions | None = None) -> None:
    """Create the deployment and run its runs in this process until interrupted."""
    from prefect.schedules import Cron

    from flows.rare_pipeline import rare_pipeline  # imports Prefect

    options = options or ServeOptions()
    shared = shared_settings()
    rare_pipeline.serve(
        name=options.name,
        schedule=Cron(options.cron, timezone=shared["timezone"]) if options.cron else None,
        parameters={"config": resolve_paths(config).model_dump(mode="json")},
        enforce_parameter_schema=shared["enforce_parameter_schema"],
        limit=options.limit,
        global_limit=shared["concurrency_limit"],  # the deployment's, as prefect.yaml's concurrency_limit
        tags=shared["tags"],
        description="RARE pipeline on the configured documents (rare serve).",
    )


if __name__ == "__main__":
    from deployments.cli import main

    raise SystemExit(main(["serve", *sys.argv[1:]]))
