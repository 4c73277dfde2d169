"""Escalation on the real stack: a real Celery digest worker and a real beat (whose
``tasks.digest.escalate_due`` sweep climbs the chain every 2 s), the local FCM and APNs
servers, and a 5 s escalation delay.

* An unacknowledged life-safety alert reaches the chain's first member, then the second
  after the delay as an iOS critical alert, then everyone (an FCM high-priority push); an
  alert acknowledged through the API reaches nobody else.
* A worker SIGKILLed while the escalation step's push is in flight: the step was committed
  with its delivery rows, so another worker only resends that push (same push id: the
  phone replaces it) and the chain goes on; no phone gets a second delivery.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from devservers.apns_server import ApnsServer
from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from notify.escalation import save_chain
from store.db import transaction
from tasks.app import app as celery_app
from tasks.queues import DIGEST_QUEUE
from tests.api_helpers import ROOT, bearer, kill_group, start_killable_worker, wait_for
from tests.api_helpers import worker_env as base_worker_env
from tests.factories import analysed_event, make_home
from webapp.tokens import start_session

pytestmark = pytest.mark.e2e

DELAY_S = 5
LEASE_S = 2


def _user(conn: Any, home: int, email: str) -> int:
    user = conn.execute(
        "INSERT INTO users (email, password_hash) VALUES (%s, 'x') RETURNING id", (email,)
    ).fetchone()["id"]
    conn.execute(
        "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, 'member')",
        (home, user),
    )
    return user


def _phone(conn: Any, home: int, user: int, platform: str) -> str:
    """A phone of ``user``; its push token."""
    token = secrets.token_hex(32) if platform == "ios" else f"fcm-{secrets.token_hex(12)}"
    conn.execute(
        "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
        " VALUES (%s, %s, 'phone', %s, %s, %s)",
        (home, user, platform, f"phone-{user}", token),
    )
    return token


def household(db: ConnectionPool, platforms: dict[str, str]) -> dict[str, Any]:
    """A home armed away with a camera and members a (the owner), b and c, each with one
    phone of ``platforms[name]``; the chain is [a, b] with a 5 s delay."""
    with transaction(db) as conn:
        home, camera = make_home(conn, phones=0)
        users = {"a": conn.execute("SELECT owner_id FROM homes").fetchone()["owner_id"]}
        users |= {name: _user(conn, home, f"{name}@example.com") for name in ("b", "c")}
        tokens = {name: _phone(conn, home, users[name], platforms[name]) for name in users}
        save_chain(conn, home, [users["a"], users["b"]], DELAY_S)
    return {"home": home, "camera": camera, "users": users, "tokens": tokens}


def worker_env(redis_url: str, database_url: str, **servers: Any) -> dict[str, str]:
    env = dict(
        base_worker_env(redis_url, database_url),
        **push_env(servers.get("fcm"), servers.get("apns")),
        PUSH_LEASE_S=str(LEASE_S),
        PUSH_TIMEOUT_S="60",
        APNS_CRITICAL_ALERTS="1",
    )
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]  # this process sends the digest
    return env


def start_beat(env: dict[str, str], tmp_path: Path) -> subprocess.Popen:
    """The Procfile's beat, with its schedule file in ``tmp_path``."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks.app", "beat", "--loglevel=WARNING"]
        + ["-s", str(tmp_path / "beat-schedule")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def fcm() -> Iterator[FcmServer]:
    with FcmServer() as server:
        yield server


@pytest.fixture
def apns() -> Iterator[ApnsServer]:
    with ApnsServer() as server:
        yield server


def fcm_pushes(fcm: FcmServer) -> list[tuple[str, str, str, dict]]:
    """(token, notification id, push id, message) of each push FCM accepted."""
    found = []
    for accepted in fcm.accepted:
        message = accepted["message"]
        data = message["data"]
        found.append((message["token"], data["notification_id"], data["push_id"], message))
    return found


def apns_pushes(apns: ApnsServer) -> list[tuple[str, str, str, dict]]:
    """(token, notification id, push id, aps) of each push APNs accepted."""
    return [
        (a["token"], a["payload"]["notification_id"], a["payload"]["push_id"], a["payload"]["aps"])
        for a in apns.accepted
    ]


def rows(db: ConnectionPool, sql: str, *args: Any) -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute(sql, args).fetchall()


def notification_of(db: ConnectionPool, event: int) -> int | None:
    found = rows(db, "SELECT id FROM notifications WHERE event_id = %s", event)
    return found[0]["id"] if found else None


def escalation(db: ConnectionPool, notification: int) -> dict[str, Any]:
    return rows(db, "SELECT * FROM escalations WHERE notification_id = %s", notification)[0]


def one_delivery_per_phone(db: ConnectionPool) -> None:
    per_phone = rows(
        db,
        "SELECT notification_id, device_id, count(*) AS n FROM deliveries"
        " GROUP BY notification_id, device_id",
    )
    assert per_phone and all(row["n"] == 1 for row in per_phone)


def test_an_unacknowledged_alert_climbs_the_chain_and_an_acked_one_stops(
    db, redis_url, database_url, fcm, apns, client, tmp_path, app
):
    house = household(db, {"a": "ios", "b": "ios", "c": "android"})
    users, tokens = house["users"], house["tokens"]
    front, back = (
        analysed_event(db, house["home"], house["camera"], place, [("person", 0.9)])
        for place in ("front_door", "back_door")
    )
    env = worker_env(redis_url, database_url, fcm=fcm, apns=apns)
    worker = start_killable_worker(env, (DIGEST_QUEUE,), "escalation")
    beat = start_beat(env, tmp_path)
    try:
        celery_app.send_task("tasks.digest.digest", args=[[front, back]])
        wait_for(lambda: len(apns.accepted) >= 2, timeout=30)  # a hears of both
        unacked, acked = notification_of(db, front), notification_of(db, back)
        assert unacked is not None and acked is not None
        with app.test_request_context():
            session = start_session(users["a"])
        assert session is not None
        answer = client.post(f"/notifications/{acked}/ack", headers=bearer(session.access_token))
        assert answer.status_code == 200
        assert answer.get_json()["escalation"]["stopped_reason"] == "acknowledged"

        # b after the delay, then everyone (c) after another one.
        wait_for(lambda: escalation(db, unacked)["stopped_reason"] == "everyone", timeout=30)
        wait_for(lambda: len(fcm.accepted) >= 1, timeout=15)
    finally:
        kill_group(beat, signal.SIGTERM)
        kill_group(worker, signal.SIGTERM)

    ios = apns_pushes(apns)
    assert sorted((token, note) for token, note, _, _ in ios) == sorted(
        [(tokens["a"], str(unacked)), (tokens["a"], str(acked)), (tokens["b"], str(unacked))]
    )
    by_token = {(token, note): aps for token, note, _, aps in ios}
    first = by_token[(tokens["a"], str(unacked))]
    assert (first["interruption-level"], first["sound"]) == ("time-sensitive", "default")
    escalated = by_token[(tokens["b"], str(unacked))]  # APNS_CRITICAL_ALERTS is on
    assert escalated["interruption-level"] == "critical"
    assert escalated["sound"] == {"critical": 1, "name": "default", "volume": 1.0}
    ((token, note, _, message),) = fcm_pushes(fcm)
    assert (token, note) == (tokens["c"], str(unacked))
    assert message["android"]["priority"] == "high"

    climbed = escalation(db, unacked)
    assert (climbed["step"], climbed["chain"]) == (2, [users["a"], users["b"]])
    stopped = escalation(db, acked)
    assert (stopped["step"], stopped["stopped_reason"]) == (0, "acknowledged")
    assert stopped["stopped_by"] == users["a"]
    steps = rows(
        db,
        "SELECT escalation_step, critical, status FROM deliveries WHERE notification_id = %s"
        " ORDER BY id",
        unacked,
    )
    assert [(r["escalation_step"], r["critical"], r["status"]) for r in steps] == [
        (None, False, "sent"),
        (1, True, "sent"),
        (2, True, "sent"),
    ]
    one_delivery_per_phone(db)


def test_a_worker_killed_mid_step_sends_nothing_twice(db, redis_url, database_url, fcm, tmp_path):
    house = household(db, {"a": "android", "b": "android", "c": "android"})
    tokens = house["tokens"]
    event = analysed_event(db, house["home"], house["camera"], "front_door", [("person", 0.9)])
    env = worker_env(redis_url, database_url, fcm=fcm)
    doomed = start_killable_worker(env, (DIGEST_QUEUE,), "doomed")
    beat = start_beat(env, tmp_path)
    rescuer = None
    try:
        celery_app.send_task("tasks.digest.digest", args=[[event]])
        wait_for(lambda: len(fcm.accepted) == 1, timeout=30)  # a has it
        note = notification_of(db, event)
        assert note is not None
        fcm.latency_s = 30.0  # FCM takes the next push at once and answers late
        try:
            wait_for(lambda: len(fcm.accepted) == 2, timeout=20)  # b's push is in flight
        finally:
            kill_group(doomed, signal.SIGKILL)
        fcm.latency_s = 0.0
        (in_flight,) = rows(db, "SELECT * FROM deliveries WHERE escalation_step = 1")
        assert (in_flight["status"], in_flight["attempts"]) == ("sending", 1)
        assert escalation(db, note)["step"] == 1  # the step itself was committed

        rescuer = start_killable_worker(env, (DIGEST_QUEUE,), "rescuer")
        wait_for(lambda: escalation(db, note)["stopped_reason"] == "everyone", timeout=30)
        wait_for(
            lambda: all(r["status"] == "sent" for r in rows(db, "SELECT status FROM deliveries")),
            timeout=20,
        )
    finally:
        kill_group(beat, signal.SIGTERM)
        if rescuer is not None:
            kill_group(rescuer, signal.SIGTERM)

    pushes = fcm_pushes(fcm)
    # Each phone got one push id for the alert; b's was resent once with the same id (the
    # phone replaces the first copy), never a second push of its own.
    push_ids = {
        token: {push_id for t, _, push_id, _ in pushes if t == token} for token in tokens.values()
    }
    assert all(len(ids) == 1 for ids in push_ids.values())
    sent = Counter(token for token, _, _, _ in pushes)
    assert sent == {tokens["a"]: 1, tokens["b"]: 2, tokens["c"]: 1}
    resent = [message for token, _, _, message in pushes if token == tokens["b"]]
    assert resent[0]["android"]["collapse_key"] == resent[1]["android"]["collapse_key"]
    assert all(message["android"]["priority"] == "high" for message in resent)
    (b_row,) = rows(db, "SELECT * FROM deliveries WHERE escalation_step = 1")
    assert (b_row["status"], b_row["attempts"], b_row["critical"]) == ("sent", 2, True)
    assert str(b_row["push_id"]) == push_ids[tokens["b"]].pop()
    one_delivery_per_phone(db)
