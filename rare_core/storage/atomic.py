"""Atomic writes.

In: a path and what to write there (text, or a callback that writes a given temp file). Out: the
file in place whole or not at all: written to a temp file in the same folder, with the mode a
file created in place would get (``current_umask``), then ``os.replace``d over the path. Around
any write, ``writing(path)`` turns an ``OSError`` (full disk, read-only folder) into a one-line
``StorageError`` naming the file and its folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from rare_core.errors import StorageError


def current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux shows it, else by setting it
    and setting it back at once (not thread-safe: a file another thread creates meanwhile gets 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around writing ``path``: an ``OSError`` (a full disk, a read-only folder, a path under a
    file) becomes a one-line ``StorageError`` naming the file and its folder."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc} (in the folder {path.parent})") from exc


def _temp_beside(path: Path) -> str:
    """-> the name of a new empty temp file in ``path``'s folder (where ``os.replace`` is atomic),
    with the mode a file created in place would get: mkstemp's 0600 would make every file
    renamed from it private to this user (a trainer running as another could not read it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    return tmp


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it over ``path``."""
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: temp file in the same folder, then rename
    -> ``path``."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
