"""Progress reporting never slows or stops the requests it reports on: a Prefect API that
hangs or fails only delays (or drops, with one warning) the progress artifact."""

from __future__ import annotations

import logging
import threading

import pytest

import tasks.progress
from rare_core.llm import APILLMServing_request, LLMRequest
from tasks.progress import StepProgress


def requests_for(n: int) -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"number {i} "}], prompt_version="t/1") for i in range(n)]


@pytest.fixture
def api(monkeypatch):
    """Fakes of Prefect's two artifact calls: they block while ``api.down`` is set (as a sync
    call does while Prefect's client retries a server that is away), or raise with ``api.fail``."""

    class Api:
        def __init__(self) -> None:
            self.up = threading.Event()
            self.fail = False
            self.updates: list[tuple[float, str]] = []
            self.calls = 0

        def _call(self):
            self.calls += 1
            self.up.wait()
            if self.fail:
                raise ConnectionError("All connection attempts failed")

        def create(self, **kwargs):
            self._call()
            return "artifact-id"

        def update(self, *, artifact_id, progress, description, _sync):
            self._call()
            self.updates.append((progress, description))

    fake = Api()
    monkeypatch.setattr(tasks.progress, "create_progress_artifact", fake.create)
    monkeypatch.setattr(tasks.progress, "update_progress_artifact", fake.update)
    monkeypatch.setattr(tasks.progress, "FINISH_WAIT", 0.2)
    yield fake
    fake.up.set()  # let the publisher thread go


def client(sim, tmp_path) -> APILLMServing_request:
    return APILLMServing_request(api_url=sim.base_url, model_name="m", max_workers=4, timeout=5.0,
                                 cache_path=str(tmp_path / "cache.sqlite"))


def test_a_hanging_api_does_not_hold_the_requests(sim, tmp_path, api):
    progress = StepProgress("doc2query", "Doc2Query", min_interval=0.0)
    batch = client(sim, tmp_path).chat(requests_for(40), on_progress=progress)
    progress.finish()  # waits FINISH_WAIT at most, then goes on
    assert all(r.ok for r in batch.responses)  # every row answered while the API call hung
    assert api.updates == [] and api.calls == 1  # one call stuck in the publisher, none on the loop
    api.up.set()
    assert progress.artifact.sent.wait(10)
    assert api.updates[-1][0] == 100.0  # the latest state is sent once the API answers
    assert len(api.updates) <= 2  # the states queued meanwhile were folded into the latest


def test_a_failing_api_is_one_warning_and_the_run_goes_on(sim, tmp_path, api, caplog):
    api.fail = True
    api.up.set()
    with caplog.at_level(logging.WARNING, logger="rare.progress"):
        progress = StepProgress("distill", "ReasonDistill", min_interval=0.0)
        batch = client(sim, tmp_path).chat(requests_for(30), on_progress=progress)
        progress.finish()
        assert progress.artifact.sent.wait(10)
    assert all(r.ok for r in batch.responses)
    warnings = [r.message for r in caplog.records if r.name == "rare.progress"]
    assert len(warnings) == 1 and "does not answer" in warnings[0] and "All connection attempts failed" in warnings[0]
