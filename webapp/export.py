"""A home's data as one zip, for its owners: ``GET /homes/<id>/export``.

The zip holds ``events.json`` (every event with its detections and the digest's decision,
newest first, as ``GET /events/<id>`` shows them), ``notifications.json`` (every alert and
summary with its pushes), and each event's pictures: ``images/<event id>.<jpg|png|webp>``
(the upload) and ``snapshots/<event id>.jpg`` (the analysed frame).

It is streamed as it is made, in bounded memory whatever the home's size: the JSON files
are written a page of rows at a time (by the lists' (created_at, id) cursor, a short
borrow of a pool connection per page), the pictures one at a time, and the bytes the zip
writer produced are sent after each page or picture. The writer needs no seekable output:
each entry's sizes follow it in a data descriptor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from typing import IO, Any

from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from psycopg.rows import class_row, dict_row, scalar_row
from psycopg_pool import ConnectionPool

from inference.errors import UnsupportedImageFormatError
from inference.images import sniff_format
from store.blobs import BlobStore
from webapp.access import OWNERS, member_home
from webapp.clients import get_blobs, get_pool
from webapp.event_store import EVENT_COLUMNS, EventRow, event_json
from webapp.notifications import NOTIFICATION_COLUMNS, NotificationRow, with_deliveries
from webapp.responses import EventDetail, Notification
from webapp.tokens import current_user_id

bp = Blueprint("export", __name__, url_prefix="/homes")
logger = logging.getLogger(__name__)

# Rows per page of a JSON file: each page is one short query and a few hundred KiB.
PAGE_SIZE = 200
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_NEWEST_FIRST = "ORDER BY {a}.created_at DESC, {a}.id DESC LIMIT %(limit)s"
_AFTER = "({a}.created_at, {a}.id) < (%(after_at)s, %(after_id)s)"


class _Chunks(io.RawIOBase):
    """Where the zip writer writes: kept until ``drain`` hands the bytes to the response.
    Not seekable, so the writer streams (data descriptors after each entry)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _json_default(value: Any) -> Any:
    # As the API writes dates (webapp.ApiJSONProvider): ISO 8601, "+00:00".
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _json_line(value: Any) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), default=_json_default
    ).encode()


def _page_query(columns: str, table: str, alias: str, cursor: bool, extra: str = "") -> str:
    """A page of the home's rows, newest first, after the cursor if there is one."""
    where = f"{alias}.home_id = %(home_id)s"
    if extra:
        where += " AND " + extra
    if cursor:
        where += " AND " + _AFTER.format(a=alias)
    return f"SELECT {columns} FROM {table} {alias} WHERE {where} " + _NEWEST_FIRST.format(a=alias)


def _event_pages(pool: ConnectionPool, home_id: int) -> Iterator[list[dict[str, Any]]]:
    """The home's events as ``GET /events/<id>`` shows them, newest first, a page at a time."""
    params: dict[str, Any] = {"home_id": home_id, "limit": PAGE_SIZE}
    while True:
        query = _page_query(EVENT_COLUMNS, "events", "e", "after_id" in params)
        with pool.connection() as conn:
            rows = conn.cursor(row_factory=class_row(EventRow)).execute(query, params).fetchall()
            detections: dict[int, list[dict[str, Any]]] = defaultdict(list)
            if rows:
                found = (
                    conn.cursor(row_factory=dict_row)
                    .execute(
                        "SELECT event_id, label, score, x1, y1, x2, y2, model, alternatives"
                        " FROM detections WHERE event_id = ANY(%s)"
                        " AND event_created_at BETWEEN %s AND %s"  # the page's months only
                        " ORDER BY event_id, score DESC, id",
                        ([row.id for row in rows], rows[-1].created_at, rows[0].created_at),
                    )
                    .fetchall()
                )
                for detection in found:
                    detections[detection.pop("event_id")].append(detection)
        if not rows:
            return
        yield [
            EventDetail.model_validate(
                {**event_json(row), "detections": detections[row.id]}
            ).as_json()
            for row in rows
        ]
        if len(rows) < PAGE_SIZE:
            return
        params["after_at"], params["after_id"] = rows[-1].created_at, rows[-1].id


def _notification_pages(pool: ConnectionPool, home_id: int) -> Iterator[list[dict[str, Any]]]:
    """The home's notifications with their pushes, newest first, a page at a time."""
    params: dict[str, Any] = {"home_id": home_id, "limit": PAGE_SIZE}
    while True:
        query = _page_query(NOTIFICATION_COLUMNS, "notifications", "n", "after_id" in params)
        with pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=class_row(NotificationRow))
                .execute(query, params)
                .fetchall()
            )
            shown = with_deliveries(conn, rows)
        if not rows:
            return
        yield [Notification.model_validate(item).as_json() for item in shown]
        if len(rows) < PAGE_SIZE:
            return
        params["after_at"], params["after_id"] = rows[-1].created_at, rows[-1].id


@dataclasses.dataclass(frozen=True)
class _Pictures:
    """Where an event's pictures are: a blob's key, or (a row not yet moved to the blob
    store) its own column."""

    id: int
    created_at: dt.datetime
    image_key: str | None
    image_in_row: bool
    snapshot_key: str | None
    snapshot_in_row: bool


_PICTURES = (
    "e.id, e.created_at, e.image_key, e.image IS NOT NULL AS image_in_row,"
    " e.snapshot_key, e.snapshot IS NOT NULL AS snapshot_in_row"
)
_HAS_PICTURE = (
    "(e.image_key IS NOT NULL OR e.image IS NOT NULL"
    " OR e.snapshot_key IS NOT NULL OR e.snapshot IS NOT NULL)"
)


def _picture_bytes(
    pool: ConnectionPool, blobs: BlobStore, event_id: int, key: str | None, column: str
) -> bytes | None:
    if key is not None:
        data = blobs.get(key)
        if data is None:  # never deleted while a row names it: the store lost it
            logger.error("export: event %s names blob %s, which is missing", event_id, key)
        return data
    with pool.connection() as conn:
        found = (
            conn.cursor(row_factory=scalar_row)
            .execute(f"SELECT {column} FROM events WHERE id = %s", (event_id,))
            .fetchone()
        )
    return None if found is None else bytes(found)


def _image_name(event_id: int, data: bytes) -> str:
    try:
        extension = _EXTENSIONS[sniff_format(data)]
    except UnsupportedImageFormatError:  # stored before uploads were checked
        extension = "bin"
    return f"images/{event_id}.{extension}"


def _pictures(pool: ConnectionPool, blobs: BlobStore, home_id: int) -> Iterator[tuple[str, bytes]]:
    """(name in the zip, bytes) of each picture of the home, newest event first, one at a
    time: only one picture's bytes are held."""
    params: dict[str, Any] = {"home_id": home_id, "limit": PAGE_SIZE}
    while True:
        query = _page_query(_PICTURES, "events", "e", "after_id" in params, _HAS_PICTURE)
        with pool.connection() as conn:
            rows = conn.cursor(row_factory=class_row(_Pictures)).execute(query, params).fetchall()
        for row in rows:
            for key, in_row, column in (
                (row.image_key, row.image_in_row, "image"),
                (row.snapshot_key, row.snapshot_in_row, "snapshot"),
            ):
                if key is None and not in_row:
                    continue
                data = _picture_bytes(pool, blobs, row.id, key, column)
                if data is not None:
                    name = _image_name(row.id, data) if column == "image" else None
                    yield name or f"snapshots/{row.id}.jpg", data
                data = None  # sent: not held while the next one is read
        if len(rows) < PAGE_SIZE:
            return
        params["after_at"], params["after_id"] = rows[-1].created_at, rows[-1].id


def _entry(name: str, when: dt.datetime, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = compress
    info.external_attr = 0o644 << 16  # a plain file, readable, when unpacked
    return info


def _json_array(
    out: IO[bytes], sink: _Chunks, pages: Iterator[list[dict[str, Any]]]
) -> Iterator[bytes]:
    """Write ``pages`` as one JSON array, an item per line, yielding the zip's bytes after
    each page."""
    out.write(b"[")
    first = True
    for page in pages:
        for item in page:
            out.write((b"\n" if first else b",\n") + _json_line(item))
            first = False
        yield sink.drain()
    out.write(b"\n]\n")


def zip_stream(pool: ConnectionPool, blobs: BlobStore, home_id: int) -> Iterator[bytes]:
    """The export of ``home_id`` as zip bytes, a page or a picture at a time."""
    now = dt.datetime.now(dt.UTC)
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, pages in (
            ("events.json", _event_pages(pool, home_id)),
            ("notifications.json", _notification_pages(pool, home_id)),
        ):
            # Its size is not known up front: ZIP64 sizes, so no size is too big.
            entry = _entry(name, now, zipfile.ZIP_DEFLATED)
            with archive.open(entry, "w", force_zip64=True) as out:
                yield from _json_array(out, sink, pages)
            yield sink.drain()
        for name, data in _pictures(pool, blobs, home_id):
            # Already compressed (JPEG, PNG, WebP): stored as they are.
            archive.writestr(_entry(name, now, zipfile.ZIP_STORED), data)
            del data
            yield sink.drain()
    yield sink.drain()


@bp.get("/<int:home_id>/export")
@jwt_required()
def export_home(home_id: int) -> Response:
    """Everything the home holds, as a zip download (owners)."""
    pool = get_pool()
    with pool.connection() as conn:
        member_home(conn, current_user_id(), home_id, OWNERS)
    blobs = get_blobs()
    filename = f"vigil-home-{home_id}-{dt.datetime.now(dt.UTC):%Y-%m-%d}.zip"
    response = Response(
        _nonempty(zip_stream(pool, blobs, home_id)),
        mimetype="application/zip",
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _nonempty(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks, less the empty ones (a server sends nothing for them anyway)."""
    return (chunk for chunk in chunks if chunk)
