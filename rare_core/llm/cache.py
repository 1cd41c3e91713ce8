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
for unanswered rows. An answer that cannot be stored (a full disk) raises
:class:`ResponseCacheWriteError` at once: the client stops its batch rather than go on paying
for answers it would lose. A damaged file raises :class:`ResponseCacheDamagedError`, naming it;
:func:`salvage` (``rare repair-cache PATH``) moves it aside and keeps what can be read. Several processes may share one file: WAL journal, a busy timeout so a
writer waits for the other's lock instead of failing with "database is locked", and the setup
(switch to WAL, create the table) retried while another connection holds the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rare_core.errors import RareError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


BUSY_TIMEOUT = 30.0
"""Seconds a connection waits for another process's lock on the file before giving up."""

_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_FULL = {sqlite3.SQLITE_FULL}


class ResponseCacheError(RareError):
    """The response cache file cannot be used; ``path`` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class ResponseCacheWriteError(ResponseCacheError):
    """An answer could not be stored (full disk, read-only file): the batch stops at once."""


class ResponseCacheDamagedError(ResponseCacheError):
    """The file is not a readable SQLite database (garbage in its header, damaged pages)."""


def _damaged(path: Path, why: object) -> ResponseCacheDamagedError:
    return ResponseCacheDamagedError(
        f"the response cache {path} is damaged ({why}); `rare repair-cache {path}` moves it aside and keeps "
        f"every answer that can still be read", path)


def _typed(exc: sqlite3.Error | OSError, path: Path, doing: str) -> ResponseCacheError:
    """``exc`` (raised while ``doing``) as a one-line error naming ``path`` and what to do."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in _DAMAGED:
        return _damaged(path, exc)
    if code in _FULL or getattr(exc, "errno", None) == 28:
        return ResponseCacheWriteError(
            f"cannot store an answer in the response cache {path}: the disk is full ({exc}); the step stopped "
            f"so that no more answers are paid for and lost; free space in {path.parent} and run the same "
            f"command again", path)
    return ResponseCacheWriteError(f"the response cache {path} failed while {doing}: {exc}", path)


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
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: sqlite3's busy handler, so concurrent writers (another process on the same file) wait
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False,
                                         isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            _setup(self._conn)
        except (sqlite3.Error, OSError) as exc:
            raise _typed(exc, self.path, "opening it") from None

    def get(self, key: str) -> dict | None:
        try:
            with self._lock:
                row = self._conn.execute("SELECT payload FROM responses WHERE key = ?", (key,)).fetchone()
            return json.loads(row[0]) if row else None
        except sqlite3.Error as exc:
            raise _typed(exc, self.path, "reading an answer") from None
        except ValueError as exc:  # a payload that is not JSON
            raise _damaged(self.path, f"an unreadable answer: {exc}") from None

    def put(self, key: str, payload: dict) -> None:
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO responses (key, payload) VALUES (?, ?)",
                    (key, json.dumps(payload, ensure_ascii=False)),
                )
        except sqlite3.Error as exc:
            raise _typed(exc, self.path, "storing an answer") from None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class Salvaged:
    """What :func:`salvage` did: answers copied into a fresh file, and where the damaged one went."""

    kept: int
    unreadable: bool  # some rows (or the whole file) could not be read
    moved_to: Path | None  # None: the file was sound and left as it was


def check(path: str | Path) -> str | None:
    """None when ``path`` is a sound response cache, else what is wrong (one line)."""
    try:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            conn.execute("SELECT COUNT(*) FROM responses").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return None if problems == ["ok"] else "; ".join(problems[:3])


def salvage(path: str | Path) -> Salvaged:
    """Move a damaged cache aside (``{path}.damaged-{time}``, with its -wal/-shm files) and copy
    every answer still readable from it into a fresh file at ``path``; a sound file is left alone."""
    path = Path(path)
    if check(path) is None:
        return Salvaged(kept=0, unreadable=False, moved_to=None)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    rows, unreadable = _readable_rows(aside)
    fresh = ResponseCache(path)
    try:
        with fresh._lock:
            fresh._conn.execute("BEGIN")
            fresh._conn.executemany("INSERT OR REPLACE INTO responses (key, payload) VALUES (?, ?)", rows)
            fresh._conn.execute("COMMIT")
    finally:
        fresh.close()
    return Salvaged(kept=len(rows), unreadable=unreadable, moved_to=aside)


_PROBE_AHEAD = 10_000  # row ids tried one by one past a damaged stretch before giving up


def _readable_rows(path: Path) -> tuple[list[tuple[str, str]], bool]:
    """(key, payload) of every row of ``path`` that reads back as JSON, and whether any did not.
    Rows are read in row id order; past a damaged stretch, ids are tried one by one (up to
    ``_PROBE_AHEAD``) until one reads, and the reading goes on from there."""
    rows: list[tuple[str, str]] = []
    unreadable, last = False, 0

    def keep(key: str, payload: str) -> None:
        nonlocal unreadable
        if _is_json(payload):
            rows.append((key, payload))
        else:
            unreadable = True

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows, True
    try:
        while True:
            try:
                for rowid, key, payload in conn.execute(
                        "SELECT rowid, key, payload FROM responses WHERE rowid > ? ORDER BY rowid", (last,)):
                    last = rowid
                    keep(key, payload)
                return rows, unreadable
            except sqlite3.Error:
                unreadable = True
            for rowid in range(last + 1, last + 1 + _PROBE_AHEAD):
                try:
                    row = conn.execute("SELECT key, payload FROM responses WHERE rowid = ?", (rowid,)).fetchone()
                except sqlite3.Error:
                    continue
                if row is not None:
                    last = rowid
                    keep(*row)
                    break
            else:
                return rows, unreadable
    finally:
        conn.close()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except (TypeError, ValueError):
        return False


def answers_since(path: str | Path, since: float) -> int:
    """How many answers ``path`` stored at or after ``since`` (a Unix time); 0 when it cannot be read."""
    if not Path(path).is_file():
        return 0
    try:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=2)
        try:
            return conn.execute("SELECT COUNT(*) FROM responses WHERE created >= julianday(?, 'unixepoch')",
                                (since,)).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
