"""Queries of the deep and lite workers: claim events, save detections, settle statuses.

What these queries hand to other packages is a frozen dataclass per row (``EventToAnalyse``,
``LiteEvent``, ``PendingEvent``), read with psycopg's ``class_row``; a status or tier column
arrives as its ``vigil.vocabulary`` member.

An event's uploaded frame and snapshot live in the blob store, named by ``image_key`` and
``snapshot_key``; a row not yet migrated (``store.blob_migration``) still holds its frame
in ``image``, and is read from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString, Protocol

import psycopg
from psycopg.rows import class_row, scalar_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from inference.errors import ImageNotFoundError
from inference.urls import ImageUrl
from store.blobs import BlobStore
from store.db import transaction
from vigil.vocabulary import ArmMode, EventStatus, Tier, ZoneKind


def stored_source(image: bytes | None, image_url: str | None) -> bytes | ImageUrl | None:
    """An event's image source as stored: the uploaded bytes, else its URL typed as a URL,
    so the fetcher fetches or refuses it and never opens it as a local file."""
    if image is not None:
        return bytes(image)
    return ImageUrl(image_url) if image_url is not None else None


def uploaded_source(
    blobs: BlobStore, image_key: str | None, image: bytes | None, image_url: str | None
) -> bytes | ImageUrl | None:
    """``stored_source``, with the uploaded frame read from the blob store where the row
    names it; ImageNotFoundError if the store does not have it."""
    if image_key is None:
        return stored_source(image, image_url)
    data = blobs.get(image_key)
    if data is None:  # never collected while a row names it: the store lost it
        raise ImageNotFoundError("The uploaded frame is missing from the blob store.")
    return data


@dataclass(frozen=True)
class ZoneOutline:
    """One activity zone of an event's camera, as the snapshot draws it: its kind and its
    points in normalised frame coordinates (0..1)."""

    kind: ZoneKind
    polygon: tuple[tuple[float, float], ...]


def _outline(zone: ZoneOutline | Mapping[str, Any]) -> ZoneOutline:
    if isinstance(zone, ZoneOutline):
        return zone
    points = tuple((float(x), float(y)) for x, y in zone["polygon"])
    return ZoneOutline(ZoneKind(zone["kind"]), points)


@dataclass(frozen=True)
class EventToAnalyse:
    """An event claimed for a deep batch, with its camera's zones (oldest first)."""

    id: int
    home_id: int
    image_url: str | None
    image: bytes | None  # a row not yet migrated to the blob store
    image_key: str | None = None
    zones: tuple[ZoneOutline, ...] = ()

    def __post_init__(self) -> None:
        # class_row passes the JSON the claim aggregates (None: a camera without zones).
        object.__setattr__(self, "zones", tuple(_outline(z) for z in self.zones or ()))

    @property
    def source(self) -> bytes | ImageUrl | None:
        """What the pipeline decodes of a row the blob store has no frame of: the bytes in
        the row, else the URL."""
        return stored_source(self.image, self.image_url)

    def source_from(self, blobs: BlobStore) -> bytes | ImageUrl | None:
        """What the pipeline decodes: the uploaded frame (from ``blobs``), else the URL."""
        return uploaded_source(blobs, self.image_key, self.image, self.image_url)


@dataclass(frozen=True)
class LiteEvent:
    """A queued event with its frame and what its priority depends on."""

    id: int
    home_id: int
    image_url: str | None
    image: bytes | None  # a row not yet migrated to the blob store
    image_key: str | None
    location: str
    motion_score: float
    arm_mode: ArmMode  # its home's, now
    tier: Tier
    age_s: float

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "arm_mode", ArmMode(self.arm_mode))
        object.__setattr__(self, "tier", Tier(self.tier))

    def source_from(self, blobs: BlobStore) -> bytes | ImageUrl | None:
        """What the lite scorer decodes: the uploaded frame (from ``blobs``), else the URL."""
        return uploaded_source(blobs, self.image_key, self.image, self.image_url)


@dataclass(frozen=True)
class PendingEvent:
    """A queued or processing event, with what its candidate in Redis is made of."""

    id: int
    home_id: int
    status: EventStatus
    tier: Tier
    priority: float  # its last triage score
    location: str
    mode: str
    motion_score: float
    needs_lite: bool  # queued and still without a lite result

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", EventStatus(self.status))
        object.__setattr__(self, "tier", Tier(self.tier))


class DetectionToSave(Protocol):
    """What is stored of one detection (``inference.contract.Detection`` is one); ``box``
    is x1, y1, x2, y2 in the analysed image's pixels, ``alternatives`` (label, score)."""

    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def box(self) -> tuple[float, float, float, float]: ...

    @property
    def alternatives(self) -> Sequence[tuple[str, float]]: ...


@dataclass(frozen=True)
class Failure:
    """Why one event could not be analysed: a stable code and a human message."""

    event_id: int
    code: str
    message: str


def _returned_ids(
    conn: psycopg.Connection, query: LiteralString, params: Sequence[object]
) -> list[int]:
    """The ids a ``... RETURNING id`` statement answered."""
    with conn.cursor(row_factory=scalar_row) as cur:
        ids: list[int] = cur.execute(query, params).fetchall()
    return ids


def claim_for_analysis(pool: ConnectionPool, event_ids: Sequence[int]) -> list[EventToAnalyse]:
    """Mark still-pending events ``processing`` (one more attempt) and return them, in the
    order of ``event_ids``.

    Events already settled (analysed, skipped, failed) are left alone, so a redelivered
    batch never analyses an event twice. Each comes with its camera's zones, read by the
    same statement, for its snapshot.
    """
    with transaction(pool) as conn, conn.cursor(row_factory=class_row(EventToAnalyse)) as cur:
        claimed = cur.execute(
            """
            WITH claimed AS (
                UPDATE events SET status = 'processing', attempts = attempts + 1
                WHERE id = ANY(%s) AND status IN ('queued', 'processing')
                RETURNING id, home_id, device_id, image_url, image, image_key
            )
            SELECT c.id, c.home_id, c.image_url, c.image, c.image_key, z.zones
            FROM claimed AS c
            LEFT JOIN LATERAL (
                SELECT json_agg(json_build_object('kind', kind, 'polygon', polygon) ORDER BY id)
                    AS zones
                FROM zones WHERE device_id = c.device_id
            ) AS z ON true
            """,
            (list(event_ids),),
        ).fetchall()
    by_id = {event.id: event for event in claimed}
    return [by_id[i] for i in event_ids if i in by_id]


# One statement per batch: the events still processing are marked analysed (with their
# snapshots' keys and frame sizes), their detections inserted, and each written id comes
# back with its latency. A snapshot stored for an event written by no one here (another
# delivery settled it) is queued for the garbage collection, which keeps it if a row names it.
_SAVE = """
WITH given AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(snapshot_keys)s::text[], %(widths)s::int[], %(heights)s::int[]
    ) AS g(id, snapshot_key, width, height)
), written AS (
    UPDATE events AS e
    SET status = 'analyzed', analyzed_at = now(), error = NULL,
        snapshot_key = given.snapshot_key, frame_width = given.width, frame_height = given.height
    FROM given
    WHERE e.id = given.id AND e.status = 'processing'
    RETURNING e.id, e.created_at,
              extract(epoch FROM e.analyzed_at - e.created_at)::float8 AS latency_s
), unsaved AS (
    INSERT INTO blob_garbage (key)
    SELECT DISTINCT g.snapshot_key FROM given AS g
    WHERE g.snapshot_key IS NOT NULL AND g.id NOT IN (SELECT id FROM written)
    ON CONFLICT (key) DO UPDATE SET queued_at = now()
), found AS (
    SELECT * FROM unnest(
        %(event_ids)s::bigint[], %(labels)s::text[], %(scores)s::float8[],
        %(x1)s::float8[], %(y1)s::float8[], %(x2)s::float8[], %(y2)s::float8[],
        %(alternatives)s::jsonb[]
    ) AS f(event_id, label, score, x1, y1, x2, y2, alternatives)
), inserted AS (
    INSERT INTO detections (event_id, event_created_at, label, score, x1, y1, x2, y2, model,
                            alternatives)
    SELECT f.event_id, w.created_at, f.label, f.score, f.x1, f.y1, f.x2, f.y2, %(model)s,
           f.alternatives
    FROM found AS f JOIN written AS w ON w.id = f.event_id
)
SELECT id, latency_s FROM written
"""


def save_detections(
    pool: ConnectionPool,
    results: Iterable[tuple[int, Sequence[DetectionToSave]]],
    model: str,
    snapshot_keys: Mapping[int, str] | None = None,
    frame_sizes: Mapping[int, tuple[int, int]] | None = None,
) -> dict[int, float]:
    """Store each event's detections and mark it analysed, in one statement.

    ``snapshot_keys``: each event's annotated snapshot, already in the blob store.

    ``frame_sizes``: each event's (width, height) in the pixels its boxes are in, which
    places the boxes in the camera's normalised zones.

    Only events still ``processing`` are written: a late duplicate delivery of a batch that
    another worker already finished writes nothing. Returns the ids written, in the order
    given, each with its seconds from created to analysed (the analysis latency metric),
    read by the statement that writes it rather than by a query of its own.
    """
    results = list(results)
    if not results:
        return {}
    snapshot_keys, frame_sizes = snapshot_keys or {}, frame_sizes or {}
    sizes = [frame_sizes.get(event_id) for event_id, _ in results]
    rows = [(event_id, d) for event_id, found in results for d in found]
    params = {
        "ids": [event_id for event_id, _ in results],
        "snapshot_keys": [snapshot_keys.get(event_id) for event_id, _ in results],
        "widths": [None if size is None else size[0] for size in sizes],
        "heights": [None if size is None else size[1] for size in sizes],
        "event_ids": [event_id for event_id, _ in rows],
        "labels": [d.label for _, d in rows],
        "scores": [float(d.score) for _, d in rows],
        "x1": [float(d.box[0]) for _, d in rows],
        "y1": [float(d.box[1]) for _, d in rows],
        "x2": [float(d.box[2]) for _, d in rows],
        "y2": [float(d.box[3]) for _, d in rows],
        "alternatives": [Jsonb(_alternatives(d)) for _, d in rows],
        "model": model,
    }
    with transaction(pool) as conn, conn.cursor(row_factory=tuple_row) as cur:
        written: dict[int, float] = dict(cur.execute(_SAVE, params).fetchall())
    return {event_id: written[event_id] for event_id, _ in results if event_id in written}


def _alternatives(detection: DetectionToSave) -> list[dict[str, str | float]]:
    return [{"label": label, "score": round(score, 4)} for label, score in detection.alternatives]


def mark_failed(pool: ConnectionPool, failures: Sequence[Failure]) -> list[int]:
    """Settle events as failed (e.g. their image was refused) unless already settled;
    returns the ids this call settled."""
    if not failures:
        return []
    with transaction(pool) as conn:
        settled = _returned_ids(
            conn,
            """
            UPDATE events e SET status = 'failed', error_code = f.code,
                                error = f.code || ': ' || f.message
            FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS f(id, code, message)
            WHERE e.id = f.id AND e.status IN ('queued', 'processing') RETURNING e.id
            """,
            (
                [f.event_id for f in failures],
                [f.code for f in failures],
                [f.message for f in failures],
            ),
        )
    settled_now = set(settled)
    return [f.event_id for f in failures if f.event_id in settled_now]


def requeue(pool: ConnectionPool, event_ids: Sequence[int]) -> list[int]:
    """Back to ``queued`` after a lease expired and the event returned to the candidates."""
    if not event_ids:  # the periodic reaper usually has nothing: no empty transaction
        return []
    with transaction(pool) as conn:
        return _returned_ids(
            conn,
            """
            UPDATE events SET status = 'queued'
            WHERE id = ANY(%s) AND status = 'processing' RETURNING id
            """,
            (list(event_ids),),
        )


def mark_skipped(
    pool: ConnectionPool, event_ids: Sequence[int], code: str, reason: str
) -> list[int]:
    """Settle pending events as skipped (e.g. expired before analysis)."""
    if not event_ids:
        return []
    with transaction(pool) as conn:
        return _returned_ids(
            conn,
            """
            UPDATE events SET status = 'skipped', error_code = %s, error = %s
            WHERE id = ANY(%s) AND status IN ('queued', 'processing') RETURNING id
            """,
            (code, reason, list(event_ids)),
        )


def load_for_lite(pool: ConnectionPool, event_id: int) -> LiteEvent | None:
    """The event if it is still queued, else None."""
    with pool.connection() as conn, conn.cursor(row_factory=class_row(LiteEvent)) as cur:
        return cur.execute(
            """
            SELECT e.id, e.home_id, e.image_url, e.image, e.image_key, e.location, e.motion_score,
                   h.arm_mode, h.tier,
                   extract(epoch FROM now() - e.created_at)::float8 AS age_s
            FROM events e JOIN homes h ON h.id = e.home_id
            WHERE e.id = %s AND e.status = 'queued'
            """,
            (event_id,),
        ).fetchone()


def save_lite_results(
    pool: ConnectionPool, event_id: int, scores: Mapping[str, float], priority: float
) -> bool:
    """Record the lite scorer's presence scores and the new priority of a queued event."""
    with transaction(pool) as conn:
        row = conn.execute(
            """
            UPDATE events SET lite_results = %s, priority = %s
            WHERE id = %s AND status = 'queued' RETURNING id
            """,
            (Jsonb({"source": "server_lite", **scores}), priority, event_id),
        ).fetchone()
    return row is not None


def pending_events(pool: ConnectionPool, older_than_s: float, limit: int) -> list[PendingEvent]:
    """Oldest queued or processing events, for rebuilding Redis after it lost data."""
    with pool.connection() as conn, conn.cursor(row_factory=class_row(PendingEvent)) as cur:
        return cur.execute(
            """
            SELECT e.id, e.home_id, e.status, h.tier, e.priority, e.location, e.mode,
                   e.motion_score, e.status = 'queued' AND e.lite_results IS NULL AS needs_lite
            FROM events e JOIN homes h ON h.id = e.home_id
            WHERE e.status IN ('queued', 'processing')
              AND e.created_at < now() - make_interval(secs => %s)
            ORDER BY e.created_at LIMIT %s
            """,
            (older_than_s, limit),
        ).fetchall()
