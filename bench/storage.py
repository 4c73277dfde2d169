"""PostgreSQL bytes per event with frames and snapshots in the blob store, against the same
events stored the old way (bytea columns), and retention's pace on them.

    .venv/bin/python bench/storage.py [--events 500] [--old-events N]

Prints ONE JSON line. Starts its own embedded Redis and PostgreSQL under var/bench-storage/
(the blob store beside them) and:

1. Blobs: ``--events`` uploads of real photos (each made unique by a JPEG comment, as every
   camera frame is) through ``POST /events`` of the app, in this process; then each event is
   analysed as the deep worker writes it (claimed, an annotated snapshot put in the blob
   store, two detections saved, ``store.analysis``). ``pg_bytes_per_event``: the events,
   detections, notifications and event_requests tables, every partition (heap, TOAST and
   indexes, ``pg_total_relation_size``) after ``VACUUM FULL``, over the events;
   ``pg_marginal_bytes_per_event`` without what the same tables take empty (the empty
   months made ahead have indexes too: ``pg_empty_schema_bytes``).
2. Baseline: the same frames, snapshots and detections written as rows were before the blob
   store (``events.image`` and ``events.snapshot`` bytea) into a second database migrated
   alike: ``baseline_pg_bytes_per_event``.
3. Retention (``store.retention.run_retention``): the blob-backed events made older than
   every plan's days, then deleted in its batches: ``retention_events_per_s`` and
   ``retention_max_lock_ms`` (its longest batch transaction, the longest a row stays locked).
4. Months dropped whole (``store.partitions``): ``--old-events`` (default ``--events``)
   old events (two detections and an alert each) deleted in retention's batches, and as
   many more in the same expired month dropped with it: ``partition_drop_events_per_s``
   against ``baseline_row_delete_events_per_s``, and ``partition_drop_max_lock_ms`` (the
   longest statement holding a lock that others wait on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg_pool import ConnectionPool  # noqa: E402

from bench.stack import fresh_servers, stack_env  # noqa: E402
from demo.processes import ROOT  # noqa: E402
from inference.contract import Detection  # noqa: E402
from inference.frames import snapshot_jpeg  # noqa: E402
from inference.images import decode_image  # noqa: E402
from store.analysis import claim_for_analysis, save_detections  # noqa: E402
from store.blobs import FilesystemBlobs, blob_store  # noqa: E402
from store.db import create_pool  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.retention import RetentionReport, run_retention, tier_days  # noqa: E402
from vigil.settings import Settings  # noqa: E402

BASE_DIR = ROOT / "var" / "bench-storage"
PHOTOS = ROOT / "tests" / "data" / "photos"
NAMES = ("person", "dog", "horses", "eagle", "giraffe")
NEVER_REACHED = str(10**9)
TABLES = ("events", "detections", "notifications", "event_requests")
DETECTIONS = [
    Detection("person", 0.91, (120.0, 80.0, 260.0, 400.0)),
    Detection("dog", 0.77, (300.0, 250.0, 420.0, 380.0)),
]
BATCH = 100


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def unique(jpeg: bytes, n: int) -> bytes:
    """The same picture with a comment segment naming ``n`` after SOI: other bytes, as two
    frames of a camera are, at the photo's size."""
    comment = f"vigil bench frame {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def on_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def relation_bytes(url: str) -> dict[str, int]:
    """Each table's heap, TOAST and indexes, compacted (``VACUUM FULL``); a partitioned
    table's are those of all its partitions, the empty months ahead included."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(sql.SQL("VACUUM FULL ANALYZE {}").format(sql.Identifier(table)))
        return {
            table: int(
                conn.execute(
                    # A table in no partition tree has no rows there: its own size.
                    "SELECT coalesce(sum(pg_total_relation_size(relid)),"
                    " pg_total_relation_size(%s::regclass))"
                    " FROM pg_partition_tree(%s::regclass)",
                    (table, table),
                ).fetchone()[0]
            )
            for table in TABLES
        }


def with_blobs(
    env: dict[str, str], frames: list[bytes], snapshots: list[bytes]
) -> tuple[list[int], float]:
    """Uploads through the app, then the deep worker's writes; (event ids, upload seconds)."""
    from webapp import create_app
    from webapp.accounts import create_user
    from webapp.clients import clients

    settings = Settings.from_environ(env)
    app = create_app({"TESTING": True}, settings=settings)
    client = app.test_client()
    with app.app_context():
        _, home_id = create_user("bench@storage.vigil", "bench-password", "Bench", "premium", "UTC")
        pool = clients(app).pool
    with pool.connection() as conn:
        conn.execute("UPDATE homes SET arm_mode = 'away' WHERE id = %s", (home_id,))
        conn.execute(
            "INSERT INTO devices (home_id, kind, platform, name)"
            " VALUES (%s, 'camera', 'camera', 'front_door_cam')",
            (home_id,),
        )
    token = client.post(
        "/auth/login", json={"email": "bench@storage.vigil", "password": "bench-password"}
    ).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    ids: list[int] = []
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        form = {
            "device_id": "front_door_cam",
            "location": "front_door",
            "mode": "security",
            "motion_score": "0.8",
            "image": (BytesIO(frame), f"frame-{i}.jpg", "image/jpeg"),
        }
        answer = client.post("/events", data=form, headers=headers)
        if answer.status_code != 202:
            raise RuntimeError(f"POST /events -> {answer.status_code}: {answer.get_json()}")
        ids.append(answer.get_json()["event_id"])
    ingest_s = time.perf_counter() - start
    blobs = clients(app).blobs
    for at in range(0, len(ids), BATCH):
        chunk = ids[at : at + BATCH]
        claim_for_analysis(pool, chunk)
        keys = {event_id: blobs.put(snapshots[at + i]) for i, event_id in enumerate(chunk)}
        save_detections(pool, [(e, DETECTIONS) for e in chunk], "nanodet-416", keys)
    clients(app).close()
    return ids, ingest_s


def baseline(url: str, frames: list[bytes], snapshots: list[bytes]) -> None:
    """The same events as rows held them before the blob store."""
    with psycopg.connect(url) as conn:
        user = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES ('old@storage.vigil', 'x')"
            " RETURNING id"
        ).fetchone()[0]
        home = conn.execute(
            "INSERT INTO homes (owner_id, name, tier, arm_mode) VALUES (%s, 'Old', 'premium',"
            " 'away') RETURNING id",
            (user,),
        ).fetchone()[0]
        camera = conn.execute(
            "INSERT INTO devices (home_id, kind, platform, name)"
            " VALUES (%s, 'camera', 'camera', 'front_door_cam') RETURNING id",
            (home,),
        ).fetchone()[0]
        for frame, snapshot in zip(frames, snapshots, strict=True):
            event = conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score, image,"
                " snapshot, priority, status, analyzed_at, frame_width, frame_height)"
                " VALUES (%s, %s, 'front_door', 'security', 0.8, %s, %s, 0.8, 'analyzed',"
                " now(), 640, 424) RETURNING id",
                (home, camera, frame, snapshot),
            ).fetchone()[0]
            for d in DETECTIONS:
                conn.execute(
                    "INSERT INTO detections (event_id, event_created_at, label, score, x1, y1,"
                    " x2, y2, model, alternatives) SELECT id, created_at, %s, %s, %s, %s, %s,"
                    " %s, 'nanodet-416', '[]' FROM events WHERE id = %s",
                    (d.label, d.score, *d.box, event),
                )


def timed_retention(pool: ConnectionPool, settings: Settings) -> tuple[RetentionReport, float]:
    """A retention run to the end of what is due, and its seconds."""
    start = time.perf_counter()
    report = run_retention(
        pool,
        blob_store(settings),
        tier_days(settings),
        settings.retention_batch,
        max_batches=10**6,
    )
    return report, time.perf_counter() - start


def retention(env: dict[str, str], ids: list[int]) -> dict[str, Any]:
    """Every blob-backed event older than any plan keeps, then deleted by retention."""
    settings = Settings.from_environ(env)
    pool = create_pool(env["DATABASE_URL"], min_size=1, max_size=2)
    with pool.connection() as conn:
        conn.execute(
            "UPDATE events SET created_at = now() - interval '4000 days' WHERE id = ANY(%s)",
            (ids,),
        )
    report, elapsed = timed_retention(pool, settings)
    pool.close()
    if report.events_deleted != len(ids):
        raise RuntimeError(f"retention deleted {report.events_deleted} of {len(ids)} events")
    return {
        "retention_batch": settings.retention_batch,
        "retention_events_per_s": round(report.events_deleted / elapsed, 1),
        "retention_max_lock_ms": round(report.max_batch_ms, 1),
    }


# Synthetic history of one camera: events of a month every plan has let go of, each with
# two detections and an alert, and blob keys (the blobs themselves are not needed: the
# drop and the batches only queue keys, and the collector deletes them afterwards).
_OLD_HISTORY = """
WITH cam AS (SELECT id, home_id FROM devices WHERE kind = 'camera' ORDER BY id LIMIT 1),
made AS (
    INSERT INTO events (home_id, device_id, location, mode, motion_score, status, digest,
                        image_key, snapshot_key, frame_width, frame_height, created_at)
    SELECT cam.home_id, cam.id, 'front_door', 'security', 0.8, 'analyzed', 'alert',
           encode(sha256(('frame ' || %(tag)s || g)::bytea), 'hex'),
           encode(sha256(('snapshot ' || %(tag)s || g)::bytea), 'hex'), 640, 424,
           now() - make_interval(days => %(age_days)s) - g * interval '1 second'
    FROM cam, generate_series(1, %(n)s) AS g
    RETURNING id, created_at, home_id
), found AS (
    INSERT INTO detections (event_id, event_created_at, label, score, x1, y1, x2, y2, model)
    SELECT id, created_at, label, 0.9, 1, 2, 30, 40, 'nanodet-416'
    FROM made, (VALUES ('person'), ('car')) AS l(label)
)
INSERT INTO notifications (event_id, event_created_at, home_id, kind, title, body)
SELECT id, created_at, home_id, 'alert', 'Person', 'At the front door' FROM made
RETURNING event_id
"""


def partition_drop(env: dict[str, str], n: int) -> dict[str, Any]:
    """The same old history deleted twice: by retention's batches (the baseline: the same
    path ``retention`` measures, blob collection included), and as a month dropped whole
    (``store.partitions``; its blob keys queued, and collected after as well)."""
    from store.partitions import DROP_GRACE, ddl_connection, drop_expired_partitions
    from store.purge import collect_garbage

    settings = Settings.from_environ(env)
    url = env["DATABASE_URL"]
    keep_days = max(tier_days(settings).values())
    # In the oldest partition, which every plan has let go of.
    age = {"tag": "", "age_days": keep_days + DROP_GRACE.days + 120, "n": n}
    pool = create_pool(url, min_size=1, max_size=2)
    try:
        with pool.connection() as conn:
            conn.execute(_OLD_HISTORY, {**age, "tag": "rows "})
        report, rows_s = timed_retention(pool, settings)
        if report.events_deleted != n:
            raise RuntimeError(f"retention deleted {report.events_deleted} of {n} events")
        with pool.connection() as conn:
            conn.execute(_OLD_HISTORY, {**age, "tag": "month "})
        with ddl_connection(url) as conn:
            start = time.perf_counter()
            dropped = drop_expired_partitions(conn, keep_days)
            drop_only_s = time.perf_counter() - start
            while collect_garbage(pool, blob_store(settings)):
                pass
            drop_s = time.perf_counter() - start
    finally:
        pool.close()
    if dropped.events != n:
        raise RuntimeError(f"the dropped months held {dropped.events} events, not {n}")
    return {
        "partition_drop_events": dropped.events,
        "partition_drop_months": len(dropped.months),
        "partition_drop_events_per_s": round(dropped.events / drop_s, 1),
        # Rows gone and keys queued, before the collector deletes the blobs.
        "partition_drop_only_events_per_s": round(dropped.events / drop_only_s, 1),
        "partition_drop_max_lock_ms": round(dropped.max_lock_ms, 1),
        "baseline_row_delete_events_per_s": round(n / rows_s, 1),
        "baseline_row_delete_max_lock_ms": round(report.max_batch_ms, 1),
        "partition_drop_speedup": round(rows_s / drop_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument(
        "--old-events",
        type=int,
        help="events of the expired month deleted each way (default: --events)",
    )
    args = parser.parse_args()
    photos = [(PHOTOS / f"{name}.jpg").read_bytes() for name in NAMES]
    # The deep worker's snapshots of each photo, with its boxes drawn (as it stores them).
    drawn = [snapshot_jpeg(decode_image(data), DETECTIONS) for data in photos]
    frames = [unique(photos[i % len(photos)], i) for i in range(args.events)]
    snapshots = [unique(drawn[i % len(drawn)], i) for i in range(args.events)]

    servers = fresh_servers(BASE_DIR)
    try:
        urls = servers.start()
        blob_root = BASE_DIR / "blobs"
        env = stack_env(
            urls,
            BLOB_BACKEND="filesystem",
            BLOB_ROOT=str(blob_root),
            INGEST_DEVICE_BURST=NEVER_REACHED,
            INGEST_DEVICE_RATE_PER_MIN=NEVER_REACHED,
            INGEST_HOME_BURST=NEVER_REACHED,
            INGEST_HOME_RATE_PER_MIN=NEVER_REACHED,
        )
        log(f"{args.events} uploads through POST /events, analysed as the deep worker writes")
        ids, ingest_s = with_blobs(env, frames, snapshots)
        sizes = relation_bytes(urls["DATABASE_URL"])

        log("the same events with their pictures in bytea columns, in a second database")
        name = f"baseline_{secrets.token_hex(4)}"
        admin = on_database(urls["DATABASE_URL"], "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        old_url = on_database(urls["DATABASE_URL"], name)
        migrate(old_url)
        empty = sum(relation_bytes(old_url).values())  # indexes of empty months included
        baseline(old_url, frames, snapshots)
        old_sizes = relation_bytes(old_url)

        store = FilesystemBlobs(blob_root)
        blob_files = [p for p in store.root.rglob("*") if p.is_file()]
        n = len(ids)
        result: dict[str, Any] = {
            "bench": "storage",
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "events": n,
            "blob_backend": "filesystem",
            "frame_bytes_mean": round(sum(map(len, frames)) / n),
            "snapshot_bytes_mean": round(sum(map(len, snapshots)) / n),
            "pg_bytes_per_event": round(sum(sizes.values()) / n),
            "baseline_pg_bytes_per_event": round(sum(old_sizes.values()) / n),
            "pg_bytes_ratio": round(sum(sizes.values()) / sum(old_sizes.values()), 4),
            "pg_empty_schema_bytes": empty,
            "pg_marginal_bytes_per_event": round((sum(sizes.values()) - empty) / n),
            "events_table_bytes_per_event": round(sizes["events"] / n),
            "baseline_events_table_bytes_per_event": round(old_sizes["events"] / n),
            "blob_bytes_per_event": round(sum(p.stat().st_size for p in blob_files) / n),
            "ingest_uploads_per_s": round(n / ingest_s, 1),
            "measured": "pg_total_relation_size of events, detections, notifications, "
            "event_requests, every partition (heap, TOAST, indexes) after VACUUM FULL, "
            "over the events",
        }
        log("retention over the blob-backed events")
        result.update(retention(env, ids))
        old = args.old_events or n
        log(f"{old} old events deleted in batches, and {old} more dropped as a month")
        result.update(partition_drop(env, old))
        print(json.dumps(result))
        return 0
    finally:
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
