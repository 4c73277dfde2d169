"""Worker half end to end: a real Celery worker process, the real broker and databases.

An event row and its candidate go in; the tick dispatches it to a deep worker, which runs
the real detector on a real photo, stores detections, clears the lease and chains the digest,
which records the alert.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from tasks.app import app as celery_app
from tasks.context import WorkerContext
from tasks.scheduling import tick
from tests.api_helpers import celery_worker, wait_for, worker_env
from tests.factories import make_home
from tests.photos import photo

ALL_QUEUES = (
    "deep_processing_enterprise,deep_processing_premium,deep_processing_standard,"
    "lite,digest,scheduler"
)


@pytest.fixture(scope="module")
def worker(redis_url, database_url):
    env = dict(worker_env(redis_url, database_url), VIGIL_WORKER_ROLE="deep", VIGIL_DEVICE="cpu")
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]  # this process sends the batches
    with celery_worker(env, ALL_QUEUES, "e2e"):
        yield env


def add_event(db, redis_client, home, camera, image: bytes, location="front_door") -> int:
    with db.connection() as conn:
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, image,"
            " priority) VALUES (%s, %s, %s, 'security', 0.9, %s, 0.9) RETURNING id",
            (home, camera, location, image),
        ).fetchone()["id"]
    CandidateStore(redis_client).add(home, event, "premium", 0.9)
    return event


def test_a_dispatched_photo_is_analysed_and_the_person_alerted(worker, db, redis_client):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    event = add_event(db, redis_client, home, camera, photo("person").read_bytes())
    ctx = WorkerContext(worker)
    report = tick(ctx, SchedulerConfig())
    assert report.dispatched.get("premium") == 1

    def settled():
        with db.connection() as conn:
            row = conn.execute(
                "SELECT status, digest FROM events WHERE id = %s", (event,)
            ).fetchone()
        return row if row["digest"] else None

    row = wait_for(settled, timeout=90)
    assert row["status"] == "analyzed" and row["digest"] == "alert"
    with db.connection() as conn:
        labels = {
            r["label"]
            for r in conn.execute(
                "SELECT label FROM detections WHERE event_id = %s", (event,)
            ).fetchall()
        }
        alert = conn.execute(
            "SELECT kind, title FROM notifications WHERE event_id = %s", (event,)
        ).fetchone()
    assert {"person", "dog"} <= labels
    assert alert["kind"] == "alert" and alert["title"].startswith("Person")
    assert redis_client.zcard("inflight") == 0  # the lease was cleared
    with db.connection() as conn:
        snapshot = conn.execute("SELECT snapshot FROM events WHERE id = %s", (event,)).fetchone()[
            "snapshot"
        ]
    with Image.open(io.BytesIO(snapshot)) as drawn:  # the annotated frame
        assert drawn.format == "JPEG" and drawn.size == (640, 424)


def test_a_refused_image_fails_visibly_and_the_rest_of_the_batch_is_analysed(
    worker, db, redis_client
):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="home")
    good = add_event(db, redis_client, home, camera, photo("dog").read_bytes(), "backyard")
    bad = add_event(db, redis_client, home, camera, b"\xff\xd8\xff\xe0 truncated", "backyard")
    tick(WorkerContext(worker), SchedulerConfig())

    def statuses():
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT id, status, error FROM events WHERE id = ANY(%s)", ([good, bad],)
            ).fetchall()
        by_id = {r["id"]: r for r in rows}
        return by_id if all(r["status"] in ("analyzed", "failed") for r in rows) else None

    by_id = wait_for(statuses, timeout=90)
    assert by_id[good]["status"] == "analyzed"
    assert by_id[bad]["status"] == "failed" and by_id[bad]["error"].startswith("image_corrupt")
