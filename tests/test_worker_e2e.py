"""Worker half end to end: a real Celery worker process, the real broker and databases.

An event row and its candidate go in; the tick dispatches it to a deep worker, which runs
the real detector on a real photo, stores detections, clears the lease and chains the digest,
which records the alert.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from tasks.app import app as celery_app
from tasks.context import WorkerContext
from tasks.scheduling import tick
from tests.factories import make_home
from tests.photos import photo

ROOT = Path(__file__).resolve().parents[1]
ALL_QUEUES = (
    "deep_processing_enterprise,deep_processing_premium,deep_processing_standard,"
    "lite,digest,scheduler"
)


def broker_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/1"  # DB 1: test fixtures flush only DB 0


@pytest.fixture(scope="module")
def worker(redis_url, database_url):
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url(redis_url),
        VIGIL_WORKER_ROLE="deep",
        VIGIL_DEVICE="cpu",
        PYTHONUNBUFFERED="1",
    )
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]  # this process sends the batches
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tasks.app",
            "worker",
            "-Q",
            ALL_QUEUES,
            "-c",
            "1",
            "-n",
            "e2e@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # wait until it is consuming
        if "ready." in line or time.monotonic() > deadline:
            break
    yield env
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_for(fn, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


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

    row = wait_for(settled)
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

    by_id = wait_for(statuses)
    assert by_id[good]["status"] == "analyzed"
    assert by_id[bad]["status"] == "failed" and by_id[bad]["error"].startswith("image_corrupt")
