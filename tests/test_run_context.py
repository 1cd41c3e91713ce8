"""What a flow run opens in its process is closed when it ends (tasks/run_context.py): its
clients, its Dask worker choice and its step locks, whether it ends well or raises."""

from __future__ import annotations

import fcntl
import logging
import os

import pytest
from prefect import flow

import tasks.llm
import tasks.placement
from rare_core.artifacts.layout import resolve_paths
from rare_core.artifacts.locks import LOCKS_NAME, _offset
from tasks.placement import _flow_run
from tasks.run_context import run_context
from test_flow import make_config

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _locked_elsewhere(path, key: str) -> bool:
    """Whether another process holds ``key``'s byte of the lock file (POSIX locks are per process)."""
    read, write = os.pipe()
    if os.fork() == 0:  # the child tries the byte without waiting
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(key))
            os.write(write, b"0")
        except OSError:
            os.write(write, b"1")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.wait()
    return answer == b"1"


@pytest.mark.parametrize("fails", [False, True])
def test_a_run_leaves_nothing_open_in_its_process(tmp_path, sim, fails):
    config = resolve_paths(make_config(tmp_path, sim))
    seen = {}

    @flow
    def probe():
        with run_context(config, logging.getLogger("test")) as run:
            clients = tasks.llm.clients_for(run.endpoints)
            tasks.placement._CHOSEN[_flow_run()] = ["tcp://worker:1"]  # as a Dask run records its search workers
            run.locks.hold({"probe-key": True})
            seen.update(run=_flow_run(), clients=list(clients.values()),
                        held=_locked_elsewhere(tmp_path / "cache" / LOCKS_NAME, "probe-key"))
            if fails:
                raise RuntimeError("a step failed")

    if fails:
        with pytest.raises(RuntimeError):
            probe()
    else:
        probe()
    assert seen["held"] and seen["clients"]
    assert seen["run"] not in tasks.placement._CHOSEN
    assert not any(c in tasks.llm._clients.values() for c in seen["clients"])  # closed and forgotten
    assert not _locked_elsewhere(tmp_path / "cache" / LOCKS_NAME, "probe-key")
