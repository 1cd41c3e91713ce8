"""A disk that fills: every write names its file and folder (one line), on a real full
filesystem (a small tmpfs, where this machine lets the tests mount one) and in-process."""

from __future__ import annotations

import errno
import os
import subprocess

import pandas as pd
import pytest

from rare_core.errors import StorageError
from rare_core.llm.cache import ResponseCache, ResponseCacheWriteError
from rare_core.storage import write_frame, write_text_atomic


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only: the test is skipped, and says so, elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_step_file_on_a_full_disk_names_the_file_and_the_folder(small_disk):
    path = small_disk / "cache" / "dataflow_cache_step_step1.jsonl"
    frame = pd.DataFrame({"id": range(5000), "text": ["a sentence of some length " * 4] * 5000})
    with pytest.raises(StorageError) as caught:
        write_frame(frame, path)
    message = str(caught.value)
    assert str(path) in message and "No space left on device" in message and str(path.parent) in message
    assert "\n" not in message
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_the_response_cache_on_a_full_disk_says_so(small_disk):
    cache = ResponseCache(small_disk / "llm_responses.sqlite")
    with pytest.raises(ResponseCacheWriteError, match="disk is full"):
        for i in range(10_000):
            cache.put(f"key-{i}", {"text": "x" * 500})
    cache.close()


def test_any_write_error_names_the_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match=f"cannot write {tmp_path / 'summary.json'}: No space left on device"):
        write_text_atomic(tmp_path / "summary.json", "{}")
