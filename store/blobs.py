"""The blob store: frames and snapshots live here, PostgreSQL keeps their keys.

One small interface (``BlobStore``), two backends:

* ``FilesystemBlobs`` (the default): content-addressed files under a root, sharded by the
  first bytes of the key (``ab/cd/<sha256>``). A write goes to a temporary file in the same
  directory, is fsynced, renamed over its final name and the directory fsynced, so a
  reader sees the whole blob or none, even across a crash. Equal bytes get one file.
* ``S3Blobs``: any S3-compatible object store, with presigned GET URLs.

A key is the SHA-256 of the bytes (hex), so storing the same frame twice stores it once;
a blob is deleted only when no row names it any more (``store.retention``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobKeyError(ValueError):
    """Not a key this store makes (64 lowercase hex digits)."""


def blob_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise BlobKeyError(f"not a blob key: {key[:80]!r}")
    return key


@dataclass(frozen=True)
class Usage:
    """Space where the blobs live, in bytes."""

    free: int
    total: int

    @property
    def free_ratio(self) -> float:
        return self.free / self.total if self.total else 0.0


class BlobStore(Protocol):
    name: str  # "filesystem", "s3": for metrics and logs

    def put(self, data: bytes) -> str:
        """Store ``data`` (once, however often it is put); its key."""
        ...

    def get(self, key: str) -> bytes | None:
        """The blob's bytes, or None if it is not there."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing one is not an error (deletes are retried)."""
        ...

    def url(self, key: str, expires_s: int) -> str | None:
        """A URL a phone can GET the blob from without credentials for ``expires_s``, or
        None where the store has none (the API serves the bytes itself)."""
        ...

    def usage(self) -> Usage | None:
        """Free and total space, where the store can tell (None for object storage)."""
        ...


class FilesystemBlobs:
    name = "filesystem"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = blob_key(data)
        final = self.path(key)
        if final.exists():  # content-addressed: the same bytes are already there
            return key
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(final.parent)
        return key

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def url(self, key: str, expires_s: int) -> str | None:
        return None

    def usage(self) -> Usage:
        total, _, free = shutil.disk_usage(self.root)
        return Usage(free=free, total=total)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: the directory entry is data too)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
