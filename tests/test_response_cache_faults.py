"""The response cache on a full disk, and damaged: the batch stops at once naming the file
(nothing more is paid for and lost), never rows blamed on the endpoint; a damaged file is
moved aside with what can still be read."""

from __future__ import annotations

import sqlite3

import pytest

from rare_core.llm import APILLMServing_request, LLMRequest
from rare_core.llm.cache import (
    ResponseCache, ResponseCacheDamagedError, ResponseCacheWriteError, check, salvage,
)

CHAT = "/v1/chat/completions"
WORKERS = 4


def requests_for(n: int, tag: str = "r") -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"{tag} number {i} " + "words " * 60}],
                       prompt_version="t/1") for i in range(n)]


def client(sim, path) -> APILLMServing_request:
    return APILLMServing_request(api_url=sim.base_url, model_name="test-model", max_workers=WORKERS, timeout=5.0,
                                 backoff_base=0.01, cache_path=str(path))


def sent(sim) -> int:
    return sim.stats().requests_by_path.get(CHAT, 0)


def test_a_full_cache_stops_the_batch_and_the_rerun_pays_only_what_was_in_flight(sim, tmp_path):
    path = tmp_path / "llm_responses.sqlite"
    llm = client(sim, path)
    cache = llm.response_cache()
    pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count={pages + 2}")  # the disk fills after a few answers
    with pytest.raises(ResponseCacheWriteError) as caught:
        llm.chat(requests_for(60))
    message = str(caught.value)
    assert str(path) in message and "disk is full" in message and str(tmp_path) in message
    first = sent(sim)
    llm.close()
    stored = len(ResponseCache(path))
    assert 0 < stored < 60 and first <= stored + WORKERS + 1  # stopped at once: at most what was in flight
    batch = client(sim, path).chat(requests_for(60))  # space freed: the same batch again
    assert all(r.ok for r in batch.responses)
    assert sent(sim) - first == 60 - stored  # answers stored before are not paid again
    assert first - stored <= WORKERS + 1  # paid twice: at most what was in flight


def _filled(path, rows: int = 400) -> None:
    cache = ResponseCache(path)
    for i in range(rows):
        cache.put(f"key-{i}", {"text": f"answer {i} " + "x" * 300})
    cache._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()


def test_garbage_in_the_header_names_the_file_and_the_command(sim, tmp_path):
    path = tmp_path / "llm_responses.sqlite"
    _filled(path)
    with open(path, "r+b") as f:
        f.write(b"this is not sqlite at all")
    with pytest.raises(ResponseCacheDamagedError) as caught:
        client(sim, path).chat(requests_for(3))
    message = str(caught.value)
    assert f"the response cache {path} is damaged" in message and f"rare repair-cache {path}" in message
    assert sent(sim) == 0  # nothing sent, nothing blamed on the endpoint
    result = salvage(path)
    assert result.moved_to is not None and result.moved_to.exists() and result.unreadable
    assert check(path) is None and len(ResponseCache(path)) == 0
    assert all(r.ok for r in client(sim, path).chat(requests_for(3)).responses)


def test_damage_inside_the_file_is_refused_and_the_readable_answers_are_kept(sim, tmp_path):
    path = tmp_path / "llm_responses.sqlite"
    _filled(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # scribble over a stretch of pages in the middle
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
    problem = check(path)
    assert problem is not None
    with pytest.raises(ResponseCacheDamagedError):
        cache = ResponseCache(path)
        for i in range(400):
            cache.get(f"key-{i}")
    result = salvage(path)
    assert result.unreadable and result.moved_to.exists()
    kept = ResponseCache(path)
    assert 300 <= len(kept) < 400  # most answers survive
    assert kept.get("key-0")["text"].startswith("answer 0 ")
    assert check(path) is None


def test_a_sound_file_is_left_alone(tmp_path):
    path = tmp_path / "llm_responses.sqlite"
    _filled(path, 10)
    assert salvage(path).moved_to is None and len(ResponseCache(path)) == 10
    assert not list(tmp_path.glob("*.damaged-*"))


def test_an_unwritable_cache_folder_names_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    with pytest.raises(ResponseCacheWriteError, match=str(blocker)):
        ResponseCache(blocker / "llm_responses.sqlite")
