"""The blob store: frames and snapshots live here, PostgreSQL keeps their keys.

One small interface (``BlobStore``), two backends:

* ``FilesystemBlobs`` (the default): content-addressed files under a root, sharded by the
  first bytes of the key (``ab/cd/<sha256>``). A write goes to a temporary file in the same
  directory, is fsynced, renamed over its final name and the directory fsynced, so a
  reader sees the whole blob or none, even across a crash. Equal bytes get one file.
* ``S3Blobs``: any S3-compatible object store through boto3, the objects named like the
  files (``ab/cd/<sha256>``), with presigned GET URLs. Its tests run the same contract as
  the filesystem's against moto's S3 emulator in a process of its own (no real
  S3-compatible server is installable where the tests run): what the emulator does not
  reproduce (real S3's latency, its limits, a provider's own deviations) is not covered.

A key is the SHA-256 of the bytes (hex), so storing the same frame twice stores it once;
a blob is deleted only when no row names it any more (``store.purge``). ``blob_store``
builds the store the settings name. ``iter_blobs`` lists the store in key order, a shard
folder or a page at a time, for the sweep that finds blobs no row ever named
(``store.orphans``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

if TYPE_CHECKING:
    from vigil.settings import Settings

_KEY = re.compile(r"^[0-9a-f]{64}$")
_SHARD = re.compile(r"^[0-9a-f]{2}$")
# S3 refuses a presigned URL that lives longer than this (SigV4).
S3_PRESIGN_MAX_S = 7 * 24 * 3600


class BlobKeyError(ValueError):
    """Not a key this store makes (64 lowercase hex digits)."""


class BlobStoreUnavailable(RuntimeError):
    """The blob store could not be read or written (a full or failing disk, S3 down): the
    request was fine and may work later (the API answers 503)."""


_Self = TypeVar("_Self", bound="_Guarded")
_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


class _Guarded:
    store_errors: tuple[type[BaseException], ...] = ()
    name = ""


def _unavailable_on_failure(
    method: Callable[Concatenate[_Self, _P], _R],
) -> Callable[Concatenate[_Self, _P], _R]:
    """The backend's own errors (``store_errors``) leave as ``BlobStoreUnavailable``."""

    @functools.wraps(method)
    def guarded(self: _Self, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        except self.store_errors as exc:
            raise BlobStoreUnavailable(
                f"{self.name} blob store: {type(exc).__name__}: {exc}"
            ) from exc

    return guarded


def _unavailable_while_listing(
    method: Callable[Concatenate[_Self, _P], Iterator[_T]],
) -> Callable[Concatenate[_Self, _P], Iterator[_T]]:
    """``_unavailable_on_failure`` for a generator: its body runs as it is iterated, after
    the call has returned, so the errors are caught around the iteration."""

    @functools.wraps(method)
    def guarded(self: _Self, *args: _P.args, **kwargs: _P.kwargs) -> Iterator[_T]:
        try:
            yield from method(self, *args, **kwargs)
        except self.store_errors as exc:
            raise BlobStoreUnavailable(
                f"{self.name} blob store: {type(exc).__name__}: {exc}"
            ) from exc

    return guarded


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


@dataclass(frozen=True)
class StoredBlob:
    """A blob the store holds, as its listing shows it."""

    key: str
    written_at: datetime  # UTC: when it was last put (a file's mtime, an object's LastModified)


class BlobStore(Protocol):
    name: str  # "filesystem", "s3": for metrics and logs

    def put(self, data: bytes) -> str:
        """Store ``data`` (once, however often it is put); its key."""
        ...

    def get(self, key: str) -> bytes | None:
        """The blob's bytes, or None if it is not there."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the blob is there (without reading it)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing one is not an error (deletes are retried)."""
        ...

    def delete_if_idle(self, key: str, idle_s: float) -> bool:
        """Remove the blob unless it was put within ``idle_s`` (a writer storing the same
        bytes now keeps it); whether it is gone."""
        ...

    def url(self, key: str, expires_s: int) -> str | None:
        """A URL a phone can GET the blob from without credentials for ``expires_s``, or
        None where the store has none (the API serves the bytes itself)."""
        ...

    def usage(self) -> Usage | None:
        """Free and total space, where the store can tell (None for object storage)."""
        ...

    def iter_blobs(
        self, older_than_s: float, start_after: str | None = None
    ) -> Iterator[StoredBlob]:
        """The blobs last put more than ``older_than_s`` ago, in key order, from the first key
        after ``start_after`` (None: from the first). Read lazily, a shard folder or a page
        at a time: the memory it takes does not grow with the store."""
        ...


# A blob being deleted (``FilesystemBlobs.delete_if_idle``): not a key, so never listed.
TOMBSTONE_PREFIX = ".del-"


class FilesystemBlobs(_Guarded):
    name = "filesystem"
    store_errors = (OSError,)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    @_unavailable_on_failure
    def put(self, data: bytes) -> str:
        key = blob_key(data)
        final = self.path(key)
        try:  # content-addressed: the same bytes are already there; mark them written now
            os.utime(final)
            return key
        except FileNotFoundError:
            pass
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

    @_unavailable_on_failure
    def get(self, key: str) -> bytes | None:
        # A blob set aside by a deletion still deciding (or that died deciding) is read
        # there: until it is gone, it is the blob.
        for path in (self.path(key), self._aside(key)):
            try:
                return path.read_bytes()
            except FileNotFoundError:
                continue
        return None

    @_unavailable_on_failure
    def exists(self, key: str) -> bool:
        return self.path(key).is_file() or self._aside(key).is_file()

    @_unavailable_on_failure
    def delete(self, key: str) -> None:
        for path in (self.path(key), self._aside(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _aside(self, key: str) -> Path:
        """Where ``delete_if_idle`` sets the blob while it decides."""
        return self.path(key).with_name(f"{TOMBSTONE_PREFIX}{key}")

    @_unavailable_on_failure
    def delete_if_idle(self, key: str, idle_s: float) -> bool:
        # The blob is first renamed out of the way (atomic), then its write time read: a put
        # before the rename shows in that time, and it goes back; a put after it finds no
        # file and writes a new one. Checked in place instead, a put between the check and
        # the unlink would be deleted. Putting back may overwrite a newer put's file: with
        # the same bytes, since keys are their hash. A process that died between the rename
        # and the decision left the blob aside, where get() still reads it; the next call
        # decides on it.
        path, aside = self.path(key), self._aside(key)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, aside)
        try:
            written = aside.stat().st_mtime
        except FileNotFoundError:
            return True
        if time.time() - written < idle_s:
            os.replace(aside, path)
            return False
        aside.unlink(missing_ok=True)
        return True

    def url(self, key: str, expires_s: int) -> str | None:
        check_key(key)
        return None

    def usage(self) -> Usage:
        total, _, free = shutil.disk_usage(self.root)
        return Usage(free=free, total=total)

    @_unavailable_while_listing
    def iter_blobs(
        self, older_than_s: float, start_after: str | None = None
    ) -> Iterator[StoredBlob]:
        after = "" if start_after is None else check_key(start_after)
        cutoff = time.time() - older_than_s
        for first in _shard_folders(self.root, after[:2]):
            # Only the shard the listing resumes in starts part-way; the ones after it whole.
            resumes = after[:2] == first
            for second in _shard_folders(self.root / first, after[2:4] if resumes else ""):
                folder = self.root / first / second
                for name in _sorted_names(folder):
                    # Temporary files (".tmp-…") and anything the store did not write are
                    # not blobs; a file in another key's shard could not be deleted by its key.
                    if name <= after or not _KEY.match(name) or name[:4] != first + second:
                        continue
                    try:
                        written = os.stat(folder / name).st_mtime
                    except FileNotFoundError:  # deleted since the folder was read
                        continue
                    if written <= cutoff:
                        yield StoredBlob(name, datetime.fromtimestamp(written, UTC))


class S3Blobs(_Guarded):
    """Blobs as objects of one bucket. The client is boto3's (thread-safe; one per process:
    the web app and each worker build their own after fork)."""

    name = "s3"
    # Objects per listing request (S3's own maximum): one page's memory while listing.
    list_page_size = 1000

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        presign_max_s: int = S3_PRESIGN_MAX_S,
    ) -> None:
        import boto3  # only a process that stores on S3 pays for importing it
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        self._client_error: type[Exception] = ClientError
        self.store_errors = (BotoCoreError, ClientError)
        self.bucket = bucket
        self.presign_max_s = min(presign_max_s, S3_PRESIGN_MAX_S)
        config = Config(
            # An S3-compatible server is usually reached by path, not by a bucket subdomain.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": 3},
            # Bounded waits: a hung store must fail a request, not hold a web thread.
            connect_timeout=5,
            read_timeout=30,
        )
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    @staticmethod
    def object_name(key: str) -> str:
        check_key(key)
        return f"{key[:2]}/{key[2:4]}/{key}"

    @_unavailable_on_failure
    def put(self, data: bytes) -> str:
        # Uploaded even when the object exists: its LastModified is then now, which is what
        # keeps it from a concurrent garbage collection (``delete_if_idle``).
        key = blob_key(data)
        self.client.put_object(Bucket=self.bucket, Key=self.object_name(key), Body=data)
        return key

    @_unavailable_on_failure
    def get(self, key: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_name(key))
        except self._client_error as exc:
            if _missing(exc):
                return None
            raise
        data: bytes = answer["Body"].read()
        return data

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self.object_name(key)
            )
        except self._client_error as exc:
            if _missing(exc):
                return None
            raise
        return head

    @_unavailable_on_failure
    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    @_unavailable_on_failure
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_name(key))

    @_unavailable_on_failure
    def delete_if_idle(self, key: str, idle_s: float) -> bool:
        # Not atomic: a put between the two calls is deleted (S3 has no delete conditional on
        # the write time). A request's writer checks its blob once its row names it and puts
        # it again if it is gone.
        head = self._head(key)
        if head is None:
            return True
        written: datetime = head["LastModified"]
        if (datetime.now(UTC) - written).total_seconds() < idle_s:
            return False
        self.delete(key)
        return True

    def url(self, key: str, expires_s: int) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.object_name(key)},
            ExpiresIn=max(1, min(expires_s, self.presign_max_s)),
        )
        return url

    def usage(self) -> None:
        return None

    @_unavailable_while_listing
    def iter_blobs(
        self, older_than_s: float, start_after: str | None = None
    ) -> Iterator[StoredBlob]:
        # Objects are listed in UTF-8 byte order, and an object's name starts with its key's
        # first bytes: name order is key order.
        params: dict[str, Any] = {"Bucket": self.bucket}
        if start_after is not None:
            params["StartAfter"] = self.object_name(start_after)
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        pages = self.client.get_paginator("list_objects_v2").paginate(
            **params, PaginationConfig={"PageSize": self.list_page_size}
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = str(item["Key"]).rsplit("/", 1)[-1]
                if not _KEY.match(key) or item["Key"] != f"{key[:2]}/{key[2:4]}/{key}":
                    continue  # not one of the store's objects
                written: datetime = item["LastModified"]
                if written <= cutoff:
                    yield StoredBlob(key, written)


def _missing(exc: Exception) -> bool:
    """Whether boto3's error says the object is not there (GET: NoSuchKey; HEAD: a bare
    404, it has no body)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def default_root() -> Path:
    """``var/blobs`` of the checkout, beside the dev servers' data."""
    from devservers import DEFAULT_BASE_DIR

    return DEFAULT_BASE_DIR / "blobs"


def blob_store(settings: Settings) -> BlobStore:
    """The store ``settings`` name (``BLOB_BACKEND``)."""
    if settings.blob_backend == "s3":
        assert settings.s3_bucket is not None  # Settings refuses s3 without a bucket
        return S3Blobs(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            presign_max_s=settings.s3_presign_expires_s,
        )
    return FilesystemBlobs(settings.blob_root or default_root())


def _sorted_names(folder: Path) -> list[str]:
    """The names in one folder of the store, sorted; none if it is not there (yet)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entry.name for entry in entries)
    except FileNotFoundError:
        return []


def _shard_folders(folder: Path, lowest: str) -> list[str]:
    """The shard folders (two hex digits) in ``folder`` from ``lowest`` on, sorted."""
    return [
        name
        for name in _sorted_names(folder)
        if name >= lowest and _SHARD.match(name) and (folder / name).is_dir()
    ]


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: the directory entry is data too)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
