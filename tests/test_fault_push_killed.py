"""A digest worker SIGKILLed after FCM accepted an alert, before it could record the answer:
the lease runs out, the beat's outbox sweep on another worker sends it again with the same
push id, FCM tag and collapse key — so the phone replaces the first copy rather than
showing a second — and records it sent. A redelivered digest adds nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from inference.contract import Detection
from store.analysis import claim_for_analysis, save_detections
from tasks.app import app as celery_app
from tasks.heartbeat import HEARTBEAT_KEY
from tasks.queues import DIGEST_QUEUE
from tests.api_helpers import kill_group, start_killable_worker, wait_for, worker_env
from tests.factories import make_home

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

LEASE_S = 2


def start_worker(env: dict[str, str], name: str) -> subprocess.Popen:
    return start_killable_worker(env, (DIGEST_QUEUE,), name)


def tasks_done(redis_client, name: str) -> int:
    """Tasks the worker called ``name`` has finished, from its heartbeat record."""
    keys = redis_client.keys(HEARTBEAT_KEY.format(hostname=f"{name}@*"))
    return sum(json.loads(redis_client.get(key) or "{}").get("tasks_done", 0) for key in keys)


def delivery(db) -> dict:
    with db.connection() as conn:
        return conn.execute("SELECT * FROM deliveries").fetchone()


def test_an_alert_whose_worker_died_after_the_send_is_replaced_not_doubled(
    db, redis_client, redis_url, database_url
):
    fcm = FcmServer(latency_s=30).start()  # accepts at once, answers late: time to kill
    env = dict(
        worker_env(redis_url, database_url),
        **push_env(fcm, None),
        PUSH_LEASE_S=str(LEASE_S),
        PUSH_TIMEOUT_S="60",
    )
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]
    with db.connection() as conn:
        home, camera = make_home(conn)
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, 'front_door', 'security', 0.9) RETURNING id",
            (home, camera),
        ).fetchone()["id"]
    claim_for_analysis(db, [event])
    save_detections(db, [(event, [Detection("person", 0.9, (1, 2, 30, 40))])], "nanodet-416")

    doomed = start_worker(env, "doomed")
    try:
        celery_app.send_task("tasks.digest.digest", args=[[event]])
        wait_for(lambda: fcm.accepted, timeout=60)  # FCM has it; the answer is on its way
    finally:
        kill_group(doomed, signal.SIGKILL)
    row = delivery(db)
    assert (row["status"], row["attempts"]) == ("sending", 1)  # the answer was never recorded

    fcm.latency_s = 0.0
    rescuer = start_worker(env, "rescuer")
    try:
        time.sleep(LEASE_S + 0.5)  # the dead sender's lease runs out
        celery_app.send_task("tasks.digest.send_due")  # beat's sweep
        row = wait_for(lambda: (r := delivery(db))["status"] == "sent" and r, timeout=60)
        celery_app.send_task("tasks.digest.digest", args=[[event]])  # a redelivered digest
        celery_app.send_task("tasks.digest.send_due")
        wait_for(lambda: tasks_done(redis_client, "rescuer") >= 3, timeout=60)  # both ran
    finally:
        kill_group(rescuer, signal.SIGTERM)
        fcm.stop()

    assert row["attempts"] == 2
    first, second = fcm.accepted
    assert len(fcm.accepted) == 2  # nothing after the rescue
    for key in ("push_id", "event_id", "notification_id"):
        assert first["message"]["data"][key] == second["message"]["data"][key]
    assert first["message"]["data"]["push_id"] == str(row["push_id"])
    # Same collapse key and tag: Android replaces the shown notification instead of adding.
    android = [m["message"]["android"] for m in (first, second)]
    assert android[0]["collapse_key"] == android[1]["collapse_key"] == f"event-{event}"
    assert android[0]["notification"]["tag"] == android[1]["notification"]["tag"]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM notifications").fetchone()["n"] == 1
