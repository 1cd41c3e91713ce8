"""``rare serve``: serve the flow with a schedule, for users without a work pool.

In: a :class:`PipelineConfig` (the deployment's default parameters; every run can override
them in the UI's run form), a deployment name and a cron schedule. Out: a deployment on the
Prefect server at ``PREFECT_API_URL`` and a runner in this process that executes its runs
(scheduled, from the UI, or from ``prefect deployment run``) until stopped with Ctrl-C.

The API enforces the parameter schema: a run with an invalid config is refused before it
exists. The config's paths are made absolute here (``resolve_paths``), so runs find the same
files whatever their working directory. One run at a time (``limit=1``): runs share the cache folder.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict, Field

from rare_core.config import PipelineConfig
from tasks.artifacts import resolve_paths

DEFAULT_DEPLOYMENT = "rare-served"
DEFAULT_CRON = "0 3 * * *"


class ServeOptions(BaseModel):
    """How ``rare serve`` registers the deployment."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(DEFAULT_DEPLOYMENT, min_length=1, description="Deployment name.")
    cron: str | None = Field(DEFAULT_CRON, description="Cron schedule (UTC); None serves without a schedule.")
    limit: int = Field(1, ge=1, description="Runs this runner executes at once.")


def serve(config: PipelineConfig, options: ServeOptions | None = None) -> None:
    """Create the deployment and run its runs in this process until interrupted."""
    from flows.rare_pipeline import rare_pipeline  # imports Prefect

    options = options or ServeOptions()
    rare_pipeline.serve(
        name=options.name,
        cron=options.cron,
        parameters={"config": resolve_paths(config).model_dump(mode="json")},
        enforce_parameter_schema=True,
        limit=options.limit,
        tags=["rare"],
        description="RARE training-data pipeline on the configured documents (rare serve).",
    )


if __name__ == "__main__":
    from deployments.cli import main

    raise SystemExit(main(["serve", *sys.argv[1:]]))
