"""Persistent response cache (SQLite).

In: a key (:func:`cache_key`) and a JSON payload per answered request. Out: the payload back.

Key: sha256 of the endpoint's scope + model + rendered messages + generation parameters (as
sent, so a per-request ``max_tokens`` counts) + prompt version. Decision: the endpoint is part
of the key, so answers of one endpoint (the built-in simulator, say) are never served to a run
against another one with the same model name. The scope is ``LLMConfig.cache_scope`` or the
base URL without credentials or query (:func:`rare_core.llm.config.endpoint_scope`); never the
API key, never credentials. Each payload also records its scope and whether it was simulated,
and the client refuses a simulated payload under any other scope.

Every answered request is committed as it arrives, so a run killed halfway resumes paying only
for unanswered rows. Several processes may share one file: WAL journal, a busy timeout so a
writer waits for the other's lock instead of failing with "database is locked", and the setup
(switch to WAL, create the table) retried while another connection holds the file.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


BUSY_TIMEOUT = 30.0
"""Seconds a connection waits for another process's lock on the file before giving up."""


def cache_key(model: str, messages: list[dict], params: dict[str, Any], prompt_version: str, *, scope: str) -> str:
    """Hex digest identifying one request's answer at one endpoint (``scope``). Inputs must not
    contain secrets."""
    blob = json.dumps(
        {"scope": scope, "model": model, "messages": messages, "params": params, "prompt_version": prompt_version},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _setup(conn: sqlite3.Connection) -> None:
    """WAL journal, and the table. Workaround: switching a file to WAL needs an exclusive lock,
    and SQLite answers SQLITE_BUSY at once, without its busy handler (which could deadlock),
    while another connection holds a lock it would have to upgrade: two processes opening one
    new cache file together. The whole setup is retried (short random sleeps) up to
    ``BUSY_TIMEOUT`` seconds."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(random.uniform(0.005, 0.05))


class ResponseCache:
    """A key -> JSON payload store in one SQLite file; safe to use from several threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # timeout: sqlite3's busy handler, so concurrent writers (another process on the same file) wait
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
        self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        _setup(self._conn)

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._conn.execute("SELECT payload FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, payload: dict) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, payload) VALUES (?, ?)",
                (key, json.dumps(payload, ensure_ascii=False)),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
