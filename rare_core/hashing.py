"""Content hashes of files: what cache keys are made of (never a path's modification time)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_memo: dict[tuple[str, int, int, int], str] = {}


def file_sha256_memo(path: str | Path) -> str:
    """:func:`file_sha256`, computed once per process for a file left unchanged.

    For large files read again and again in one process: a sharded run hashes its corpus file
    for every shard's cache key (600 MB at a million documents). The memo is keyed by the
    file's inode, size and nanosecond modification time, so a rewritten file is hashed again;
    the value returned is still the hash of the bytes, never the time.
    """
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = file_sha256(path)
    return _memo[key]
