"""A throwaway PostgreSQL cluster and a Prefect server on it, for the test of many workers on one
server. The cluster runs as the ``postgres`` user (PostgreSQL refuses to run as root) in a
temporary folder, on a free loopback port; the fixture skips, saying why, where it cannot start.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from prefect_fixtures import free_port, running_prefect_server


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + args, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def postgres_url():
    """``postgresql+asyncpg://...`` of a fresh database on a throwaway cluster."""
    bindir = _pg_bin()
    if bindir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("PostgreSQL (Debian's postgresql package) is not installed here")
    root = Path(tempfile.mkdtemp(prefix="rare-pg-"))
    os.chmod(root, 0o777)
    data, port = root / "data", free_port()
    init = _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL cannot start here (initdb: {init.stderr.strip()[-300:]})")
    start = _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-w", "-o",
                          f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"])
    if start.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL cannot start here (pg_ctl: {start.stderr.strip()[-300:]})")
    try:
        created = _as_postgres([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                "prefect"])
        assert created.returncode == 0, created.stderr
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def prefect_server_on_postgres(postgres_url, tmp_path_factory):
    """A ``prefect server start`` whose database is ``postgres_url``; yields its API URL."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-pg-home"),
                                PREFECT_API_DATABASE_CONNECTION_URL=postgres_url) as api_url:
        yield api_url
