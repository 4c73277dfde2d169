"""Rows and blobs the storage tests build on: homes of a tier, events of a given age with the
rows that hang off them (detection, alert, delivery, escalation) and pictures in a blob store."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from store.blobs import FilesystemBlobs
from tests import factories

# Older than any grace period of the blob collector.
LONG_AGO_S = 24 * 3600.0


def make_home(
    pool: ConnectionPool, tier: str, retention_days: int | None = None
) -> tuple[int, int]:
    """A home of ``tier`` (its owner's choice of days, if any) with a camera and a phone."""
    with pool.connection() as conn:
        n = conn.execute("SELECT count(*) AS n FROM users").fetchone()["n"]
        return factories.make_home(
            conn, email=f"user{n}@example.com", tier=tier, retention_days=retention_days
        )


def put_old(blobs: FilesystemBlobs, data: bytes) -> str:
    """Store ``data`` as if written long ago: past the collector's grace."""
    key = blobs.put(data)
    old = time.time() - LONG_AGO_S
    os.utime(blobs.path(key), (old, old))
    return key


@dataclass(frozen=True)
class Event:
    id: int
    image_key: str | None
    snapshot_key: str | None
    notification_id: int


def add_event(
    pool: ConnectionPool,
    home: int,
    camera: int,
    age_days: float,
    *,
    image_key: str | None = None,
    snapshot_key: str | None = None,
    status: str = "analyzed",
    digest: str | None = "alert",
    summary_id: int | None = None,
) -> Event:
    """An event ``age_days`` old with a detection, an alert, its delivery to the home's
    phone and an escalation."""
    with pool.connection() as conn:
        event = conn.execute(
            """
            INSERT INTO events (home_id, device_id, location, mode, motion_score, status,
                                digest, summary_id, image_key, snapshot_key, created_at)
            VALUES (%s, %s, 'front_door', 'security', 0.8, %s, %s, %s, %s, %s,
                    now() - make_interval(secs => %s))
            RETURNING id
            """,
            (
                home,
                camera,
                status,
                "summary" if summary_id is not None else digest,
                summary_id,
                image_key,
                snapshot_key,
                age_days * 86400,
            ),
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO detections (event_id, event_created_at, label, score, x1, y1, x2, y2,"
            " model) SELECT id, created_at, 'person', 0.9, 1, 2, 30, 40, 'nanodet-416'"
            " FROM events WHERE id = %s",
            (event,),
        )
        notification = conn.execute(
            "INSERT INTO notifications (event_id, home_id, kind, title, body, created_at)"
            " VALUES (%s, %s, 'alert', 'Person', 'at the front door',"
            " now() - make_interval(secs => %s)) RETURNING id",
            (event, home, age_days * 86400),
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO deliveries (notification_id, home_id, device_id)"
            " SELECT %s, %s, id FROM devices WHERE home_id = %s AND kind = 'phone'",
            (notification, home, home),
        )
        conn.execute(
            "INSERT INTO escalations (notification_id, home_id, chain, delay_s, next_at)"
            " SELECT %s, %s, ARRAY[owner_id], 60, now() FROM homes WHERE id = %s",
            (notification, home, home),
        )
    return Event(event, image_key, snapshot_key, notification)


def add_summary(pool: ConnectionPool, home: int, age_days: float) -> int:
    """A summary notification ``age_days`` old, with a delivery."""
    with pool.connection() as conn:
        summary = conn.execute(
            "INSERT INTO notifications (home_id, kind, title, body, summary_key, created_at)"
            " VALUES (%s, 'summary', 'Summary: 2 events', 'calm', %s,"
            " now() - make_interval(secs => %s)) RETURNING id",
            (home, f"summary:{home}:{age_days}", age_days * 86400),
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO deliveries (notification_id, home_id, device_id)"
            " SELECT %s, %s, id FROM devices WHERE home_id = %s AND kind = 'phone'",
            (summary, home, home),
        )
    return summary


def ids(pool: ConnectionPool, query: str, *params: object) -> set[int]:
    with pool.connection() as conn:
        return {row["id"] for row in conn.execute(query, params).fetchall()}


def event_ids(pool: ConnectionPool) -> set[int]:
    return ids(pool, "SELECT id FROM events")


def queued_keys(pool: ConnectionPool) -> set[str]:
    with pool.connection() as conn:
        return {row["key"] for row in conn.execute("SELECT key FROM blob_garbage").fetchall()}


def dangling(pool: ConnectionPool) -> dict[str, int]:
    """Rows left pointing at what is gone: each count must be 0."""
    with pool.connection() as conn:
        row = conn.execute(
            """
            SELECT
              (SELECT count(*) FROM events e WHERE e.summary_id IS NOT NULL AND NOT EXISTS
                 (SELECT 1 FROM notifications n WHERE n.id = e.summary_id)) AS summary_ids,
              (SELECT count(*) FROM events e WHERE NOT EXISTS
                 (SELECT 1 FROM detections d WHERE d.event_id = e.id)) AS without_detection,
              (SELECT count(*) FROM notifications n WHERE n.event_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id))
                 AS without_delivery
            """
        ).fetchone()
    return dict(row)
