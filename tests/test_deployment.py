"""Deployments against a real ``prefect server start`` (SQLite, loopback, own PREFECT_HOME):

* ``deployments/prefect.yaml`` deployed with ``prefect deploy`` on a process work pool: cron
  schedule and parameter schema registered, a run triggered through the API executed by a
  process worker to Completed, a run with an invalid parameter refused by the API;
* ``rare serve``: the served deployment executes a run triggered with ``run_deployment``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect_fixtures import PROJECT_ROOT, SAMPLE, stop_process
from waiting import wait_until

from rare_core.storage import read_frame

pytestmark = pytest.mark.slow

FLOW = "rare-pipeline"
POOL = "rare-process"


@pytest.fixture
def api(prefect_server):
    """Prefect settings pointing this process's client at the test server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server


def subprocess_env(api_url: str) -> dict[str, str]:
    return dict(os.environ, PREFECT_API_URL=api_url)


def prefect_cli(api_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "prefect", *args], env=subprocess_env(api_url), cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def run_config(tmp_path: Path, **extra) -> dict:
    return {"input_path": str(SAMPLE), "limit": 3, "cache_path": str(tmp_path / "cache"),
            "output_path": str(tmp_path / "out"), **extra}


def assert_invalid_run_refused(deployment_name: str, deployment_id) -> None:
    """The API refuses (409) a run whose config breaks the schema, and creates no flow run."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError

    def count_runs() -> int:
        with get_client(sync_client=True) as client:
            return len(client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))))

    before = count_runs()
    with pytest.raises(PrefectHTTPStatusError) as refused:
        run_deployment(deployment_name, parameters={"config": {"input_path": str(SAMPLE), "hardneg": {"num_neg": 0}}},
                       timeout=0)
    assert refused.value.response.status_code == 409
    assert "num_neg" in refused.value.response.text
    assert count_runs() == before


def test_prefect_yaml_deployment_runs_on_a_process_worker(api, tmp_path):
    from prefect import get_client
    from prefect.deployments import run_deployment

    prefect_cli(api, "work-pool", "create", POOL, "--type", "process")
    prefect_cli(api, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")

    name = f"{FLOW}/rare-nightly"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
        assert deployment.work_pool_name == POOL and deployment.enforce_parameter_schema
        [schedule] = deployment.schedules
        assert schedule.schedule.cron == "0 3 * * *" and schedule.active
        schema = deployment.parameter_openapi_schema["definitions"]
        assert "description" in schema["PipelineConfig"]["properties"]["input_path"]
        assert schema["BM25HardNegConfig"]["properties"]["num_neg"]["minimum"] == 1
        # The nightly run reads and writes the project folder: keep it from firing during the test.
        client.update_deployment_schedule(deployment.id, schedule.id, active=False)

    assert_invalid_run_refused(name, deployment.id)

    flow_run = run_deployment(name, parameters={"config": run_config(tmp_path)}, timeout=0)
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once"],
        env=subprocess_env(api), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert worker.returncode == 0, worker.stdout + worker.stderr

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), f"{state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) == 3
    assert "SIMULATED" in (tmp_path / "out" / "report.md").read_text()


def test_rare_serve_executes_a_triggered_run(api, tmp_path):
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    name = f"{FLOW}/rare-served-test"
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "serve", "--name", "rare-served-test", "--cron", "0 4 * * *",
         "--input", str(SAMPLE), "--limit", "3", "--cache-path", str(tmp_path / "cache"),
         "--output", str(tmp_path / "out")],
        env=subprocess_env(api), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        def registered():
            if serve.poll() is not None:
                raise RuntimeError(f"rare serve exited:\n{(tmp_path / 'serve.log').read_text()}")
            try:
                with get_client(sync_client=True) as client:
                    return client.read_deployment_by_name(name)
            except ObjectNotFound:
                return None

        deployment = wait_until(registered, 60, "the served deployment", interval=0.5)
        assert deployment.enforce_parameter_schema
        assert [s.schedule.cron for s in deployment.schedules] == ["0 4 * * *"]
        # What both ways of deploying share comes from prefect.yaml (deployments/serve.py).
        nightly = yaml.safe_load((PROJECT_ROOT / "deployments" / "prefect.yaml").read_text())["deployments"][0]
        assert [s.schedule.timezone for s in deployment.schedules] == [nightly["schedules"][0]["timezone"]]
        assert deployment.tags == nightly["tags"]
        assert deployment.global_concurrency_limit.limit == nightly["concurrency_limit"]
        assert deployment.parameters["config"]["input_path"] == str(SAMPLE)

        assert_invalid_run_refused(name, deployment.id)
        flow_run = run_deployment(name, timeout=180, poll_interval=1)  # the served defaults
        assert flow_run.state.is_completed(), f"{flow_run.state}\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
        assert len(read_frame(tmp_path / "out" / "dataset.jsonl")) == 3
    finally:
        stop_process(serve)
        log.close()
