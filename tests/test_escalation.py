"""Escalation of life-safety alerts against the real PostgreSQL: the digest starts it for
the chain's first member, the sweep (``advance_due``) climbs the chain with critical pushes
and ends with everyone, an ack or a read stops it, and no step is ever queued twice. Time
moves by setting ``next_at`` in the past, never by sleeping out the delay."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg_pool import ConnectionPool

from notify import escalation
from notify.digest import digest_events
from notify.escalation import advance_due, save_chain
from notify.links import Links
from notify.payload import build_message
from notify.sender import SenderConfig, claim
from store.db import transaction
from tests.api_helpers import bearer, error_code
from tests.factories import analysed_event, make_home
from webapp.tokens import start_session

pytestmark = pytest.mark.integration

SWEEP = 100


@dataclass(frozen=True)
class Household:
    """A home (armed away) with a camera and three members, each with one phone: a owns it,
    b and c are members."""

    home: int
    camera: int
    a: int
    b: int
    c: int
    phones: dict[int, int]  # user → their phone

    def user(self, name: str) -> int:
        return {"a": self.a, "b": self.b, "c": self.c}[name]


def _phone(conn: psycopg.Connection[Any], home: int, user: int) -> int:
    return conn.execute(
        "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
        " VALUES (%s, %s, 'phone', 'android', %s, %s) RETURNING id",
        (home, user, f"phone-{user}", f"fcm-token-{user}-0123456789"),
    ).fetchone()["id"]


def _member(conn: psycopg.Connection[Any], home: int, email: str, role: str = "member") -> int:
    user = conn.execute(
        "INSERT INTO users (email, password_hash) VALUES (%s, 'x') RETURNING id", (email,)
    ).fetchone()["id"]
    conn.execute(
        "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, %s)",
        (home, user, role),
    )
    return user


def household(
    db: ConnectionPool,
    home: int,
    camera: int,
    chain: tuple[str, ...] = ("a", "b"),
    delay_s: int = 60,
    phoneless: tuple[str, ...] = (),
) -> Household:
    """Members b and c joined to ``home``, a phone for each member not ``phoneless``, and
    the chain of ``chain`` (names)."""
    with transaction(db) as conn:
        a = conn.execute("SELECT owner_id FROM homes WHERE id = %s", (home,)).fetchone()
        users = {"a": a["owner_id"]}
        users["b"] = _member(conn, home, f"b{home}@example.com")
        users["c"] = _member(conn, home, f"c{home}@example.com")
        phones = {
            user: _phone(conn, home, user) for name, user in users.items() if name not in phoneless
        }
        save_chain(conn, home, [users[name] for name in chain], delay_s)
    return Household(home, camera, users["a"], users["b"], users["c"], phones)


@pytest.fixture
def house(db: ConnectionPool) -> Household:
    with db.connection() as conn:
        home, camera = make_home(conn, phones=0)
    return household(db, home, camera)


def alert(db: ConnectionPool, house: Household, location: str = "front_door") -> int:
    """A person at a door of the armed home: a life-safety alert; its notification."""
    event = analysed_event(db, house.home, house.camera, location, [("person", 0.9)])
    (alerted,) = digest_events(db, [event]).alerts
    return alerted.notification_id


def deliveries(db: ConnectionPool, notification_id: int | None = None) -> list[tuple]:
    """(user, escalation_step, critical) per delivery, oldest first."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT dev.user_id, d.escalation_step, d.critical FROM deliveries d"
            " LEFT JOIN devices dev ON dev.id = d.device_id"
            " WHERE %(n)s::bigint IS NULL OR d.notification_id = %(n)s ORDER BY d.id",
            {"n": notification_id},
        ).fetchall()
    return [(r["user_id"], r["escalation_step"], r["critical"]) for r in rows]


def climb(db: ConnectionPool, notification_id: int) -> dict[str, Any]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT chain, step, delay_s, next_at > now() AS waiting, stopped_reason,"
            " stopped_by, next_at - created_at AS delay FROM escalations"
            " WHERE notification_id = %s",
            (notification_id,),
        ).fetchone()


def make_due(db: ConnectionPool) -> None:
    """The delay has passed for every running escalation."""
    with db.connection() as conn:
        conn.execute(
            "UPDATE escalations SET next_at = now() - interval '1 second' WHERE stopped_at IS NULL"
        )


def escalation_count(db: ConnectionPool) -> int:
    with db.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM escalations").fetchone()["n"]


def test_a_life_safety_alert_climbs_the_chain_then_reaches_everyone(db, house):
    note = alert(db, house)
    assert deliveries(db) == [(house.a, None, False)]  # only the chain's first member
    start = climb(db, note)
    assert (start["chain"], start["step"], start["delay_s"]) == ([house.a, house.b], 0, 60)
    assert start["waiting"] and start["stopped_reason"] is None

    assert advance_due(db, SWEEP).steps == []  # not due yet: nothing happens
    assert len(deliveries(db)) == 1

    make_due(db)
    report = advance_due(db, SWEEP)
    (step,) = report.steps
    assert (step.notification_id, step.home_id, step.step) == (note, house.home, 1)
    assert step.members == [house.b] and step.stopped is None
    assert report.deliveries == step.deliveries and len(step.deliveries) == 1
    assert deliveries(db) == [(house.a, None, False), (house.b, 1, True)]  # critical
    second = climb(db, note)
    assert second["step"] == 1 and second["waiting"] and second["stopped_reason"] is None
    assert advance_due(db, SWEEP).steps == []  # the next delay runs from this step

    make_due(db)
    (last,) = advance_due(db, SWEEP).steps
    assert (last.step, last.members, last.stopped) == (2, None, "everyone")
    assert deliveries(db) == [(house.a, None, False), (house.b, 1, True), (house.c, 2, True)]
    stopped = climb(db, note)
    assert (stopped["step"], stopped["stopped_reason"], stopped["waiting"]) == (2, "everyone", None)

    make_due(db)  # a stopped escalation is never due again
    assert advance_due(db, SWEEP).steps == [] and len(deliveries(db)) == 3


def test_an_escalated_delivery_goes_out_as_a_critical_push(db, house):
    alert(db, house)
    make_due(db)
    advance_due(db, SWEEP)
    claimed = claim(db, SenderConfig())
    assert [(row.device_id, row.critical) for row in claimed] == [
        (house.phones[house.a], False),
        (house.phones[house.b], True),
    ]
    first, escalated = (build_message(row, Links()) for row in claimed)
    assert (first.critical, escalated.critical) == (False, True)
    assert escalated.time_sensitive and escalated.push_id == str(claimed[1].push_id)


@pytest.mark.parametrize("at_step", [0, 1])
def test_an_ack_stops_the_escalation_at_once(db, house, at_step):
    note = alert(db, house)
    for _ in range(at_step):
        make_due(db)
        advance_due(db, SWEEP)
    before = deliveries(db)
    with transaction(db) as conn:  # what POST /notifications/<id>/ack runs
        acked = escalation.acknowledge(conn, note, house.b)
    assert (acked.first, acked.step, acked.stopped) == (True, at_step, True)
    row = climb(db, note)
    assert (row["step"], row["stopped_reason"], row["stopped_by"]) == (
        at_step,
        "acknowledged",
        house.b,
    )
    make_due(db)
    assert advance_due(db, SWEEP).steps == [] and deliveries(db) == before
    with transaction(db) as conn:  # a second ack keeps the first
        again = escalation.acknowledge(conn, note, house.c)
        by = conn.execute("SELECT acked_by FROM notifications WHERE id = %s", (note,)).fetchone()
    assert (again.first, again.stopped, by["acked_by"]) == (False, False, house.b)


def test_an_ack_or_read_recorded_outside_the_api_stops_it_at_the_next_sweep(db, house):
    acked, read = alert(db, house, "front_door"), alert(db, house, "back_door")
    with db.connection() as conn:
        conn.execute(
            "UPDATE notifications SET acked_at = now(), acked_by = %s WHERE id = %s",
            (house.a, acked),
        )
        conn.execute(
            "UPDATE notifications SET read_at = now(), read_by = %s WHERE id = %s",
            (house.a, read),
        )
    make_due(db)
    stops = {(s.notification_id, s.stopped, s.stopped_by) for s in advance_due(db, SWEEP).steps}
    assert stops == {(acked, "acknowledged", house.a), (read, "read", house.a)}
    assert [user for user, _, _ in deliveries(db)] == [house.a, house.a]  # nobody else woken


def test_a_step_whose_member_has_no_phone_does_not_wait(db):
    with db.connection() as conn:
        home, camera = make_home(conn, phones=0)
    house = household(db, home, camera, chain=("a", "b"), phoneless=("a",))
    note = alert(db, house)
    # a has no phone: b hears of it at once, as step 1 of the escalation (critical).
    assert deliveries(db) == [(house.b, 1, True)]
    row = climb(db, note)
    assert row["step"] == 1 and row["waiting"]
    make_due(db)
    (everyone,) = advance_due(db, SWEEP).steps
    assert everyone.stopped == "everyone" and deliveries(db)[1:] == [(house.c, 2, True)]


def test_a_chain_of_members_without_phones_reaches_everyone_at_once(db):
    with db.connection() as conn:
        home, camera = make_home(conn, phones=0)
    house = household(db, home, camera, chain=("b",), phoneless=("b",))
    note = alert(db, house)
    assert sorted(deliveries(db)) == [(house.a, 1, True), (house.c, 1, True)]
    assert climb(db, note)["stopped_reason"] == "everyone"


def test_a_member_who_left_is_out_of_the_chain_and_skipped_by_a_running_one(db):
    with db.connection() as conn:
        home, camera = make_home(conn, phones=0)
    house = household(db, home, camera, chain=("a", "b", "c"))
    note = alert(db, house)
    with db.connection() as conn:
        conn.execute(
            "DELETE FROM home_members WHERE home_id = %s AND user_id = %s", (home, house.b)
        )
        assert escalation.load_chain(conn, home).members == [house.a, house.c]
    # The running escalation keeps its chain; b has no phone left there, so c is next.
    make_due(db)
    steps = advance_due(db, SWEEP).steps
    assert [(s.step, s.members, s.deliveries == []) for s in steps] == [
        (1, [house.b], True),
        (2, [house.c], False),
    ]
    assert deliveries(db)[1:] == [(house.c, 2, True)]
    row = climb(db, note)
    assert row["step"] == 2 and row["waiting"]
    make_due(db)
    (everyone,) = advance_due(db, SWEEP).steps
    assert (everyone.step, everyone.stopped, everyone.deliveries) == (3, "everyone", [])


def test_an_alert_that_is_not_life_safety_never_escalates(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="home", phones=0)
    house = household(db, home, camera)
    event = analysed_event(db, home, camera, "front_door", [("car", 0.9)])
    (alerted,) = digest_events(db, [event]).alerts
    assert sorted(deliveries(db)) == sorted((u, None, False) for u in (house.a, house.b, house.c))
    assert escalation_count(db) == 0
    make_due(db)
    assert advance_due(db, SWEEP).steps == [] and len(deliveries(db, alerted.notification_id)) == 3


def test_a_home_without_a_chain_alerts_everyone_at_once(db):
    with db.connection() as conn:
        home, camera = make_home(conn, phones=0)
    house = household(db, home, camera, chain=())
    alert(db, house)
    assert sorted(deliveries(db)) == sorted((u, None, False) for u in (house.a, house.b, house.c))
    assert escalation_count(db) == 0


def test_a_failsafe_life_safety_alert_escalates_too(db, house):
    with db.connection() as conn:
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
            " error_code, lite_results) VALUES (%s, %s, 'front_door', 'security', 0.8,"
            " 'skipped', 'expired', '{\"person\": 0.9}') RETURNING id",
            (house.home, house.camera),
        ).fetchone()["id"]
    (alerted,) = digest_events(db, [event]).alerts
    assert alerted.kind == "failsafe"
    assert deliveries(db) == [(house.a, None, False)]
    assert climb(db, alerted.notification_id)["step"] == 0


def test_a_redelivered_digest_starts_nothing_twice(db, house):
    event = analysed_event(db, house.home, house.camera, "front_door", [("person", 0.9)])
    digest_events(db, [event])
    assert digest_events(db, [event]).alerts == []
    assert escalation_count(db) == 1 and len(deliveries(db)) == 1


def test_two_sweeps_at_once_take_each_step_once(db, house):
    notes = [alert(db, house, place) for place in ("front_door", "back_door", "garage", "porch")]
    make_due(db)
    barrier = threading.Barrier(2)
    reports: list[escalation.EscalationReport] = []

    def sweep() -> None:
        barrier.wait()
        reports.append(advance_due(db, SWEEP))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    stepped = sorted(s.notification_id for r in reports for s in r.steps)
    assert stepped == sorted(notes)  # each escalation stepped by one sweep only
    assert advance_due(db, SWEEP).steps == []  # and a sweep right after finds nothing due
    for note in notes:
        assert deliveries(db, note) == [(house.a, None, False), (house.b, 1, True)]
        assert climb(db, note)["step"] == 1


def test_a_sweep_killed_mid_step_leaves_nothing_and_the_next_one_steps_once(db, house):
    note = alert(db, house)
    make_due(db)
    failures: list[BaseException] = []

    def doomed_sweep() -> None:
        try:
            advance_due(db, SWEEP)
        except psycopg.OperationalError as error:  # its connection was cut
            failures.append(error)

    with db.connection() as holder, holder.transaction():
        # b's phone locked: the step blocks once it has locked the escalation and is
        # writing b's delivery, i.e. in the middle of the step.
        holder.execute("SELECT id FROM devices WHERE id = %s FOR UPDATE", (house.phones[house.b],))
        sweeper = threading.Thread(target=doomed_sweep)
        sweeper.start()
        pid = _blocked_on(db, "INSERT INTO deliveries")
        holder.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the worker dies
        sweeper.join(timeout=30)
    assert len(failures) == 1
    assert deliveries(db) == [(house.a, None, False)]  # nothing of the step was kept
    row = climb(db, note)
    assert row["step"] == 0 and not row["waiting"]  # still due
    (step,) = advance_due(db, SWEEP).steps
    assert step.step == 1 and deliveries(db) == [(house.a, None, False), (house.b, 1, True)]


def _blocked_on(db: ConnectionPool, statement: str, timeout_s: float = 10.0) -> int:
    """The backend pid of the session waiting on a lock in ``statement`` (asked afresh each
    time: a transaction keeps its first view of pg_stat_activity)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.connection() as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND position(%s in query) > 0",
                (statement,),
            ).fetchone()
        if row is not None:
            return row["pid"]
        time.sleep(0.05)
    raise AssertionError(f"nobody blocked in {statement!r} within {timeout_s} s")


# --- the API: the chain, the ack, the read -------------------------------------------


def headers(app: Flask, user: int) -> dict[str, str]:
    with app.test_request_context():
        pair = start_session(user)
    assert pair is not None
    return bearer(pair.access_token)


@pytest.fixture
def home(app, owner, db) -> Household:
    """The API owner's home (armed away) with b and c, chain [a, b]."""
    return household(db, owner.home_id, owner.device_id)


def audit(db: ConnectionPool, action: str) -> list[dict[str, Any]]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT user_id, details FROM audit WHERE action = %s ORDER BY id", (action,)
        ).fetchall()


def test_every_member_reads_the_chain_and_owners_set_it(client, app, owner, bob, home, db):
    member = headers(app, home.b)
    got = client.get(f"/homes/{home.home}/escalation", headers=member)
    assert got.status_code == 200 and got.get_json() == {"members": [home.a, home.b], "delay_s": 60}

    path = f"/homes/{home.home}/escalation"
    put = client.put(path, json={"members": [home.c, home.a], "delay_s": 30}, headers=owner.headers)
    assert put.status_code == 200 and put.get_json() == {"members": [home.c, home.a], "delay_s": 30}
    kept = client.put(path, json={"members": [home.b]}, headers=owner.headers)
    assert kept.get_json() == {"members": [home.b], "delay_s": 30}  # the delay kept
    assert client.get(path, headers=member).get_json() == {"members": [home.b], "delay_s": 30}
    assert [row["details"] for row in audit(db, "escalation_changed")] == [
        {"members": [home.c, home.a], "delay_s": 30},
        {"members": [home.b], "delay_s": 30},
    ]

    refused = client.put(path, json={"members": [home.b]}, headers=member)
    assert refused.status_code == 403 and error_code(refused) == "role_forbidden"
    for call in (client.get, client.put):
        outsider = call(path, json={"members": []}, headers=bob.headers)
        assert outsider.status_code == 404 and error_code(outsider) == "home_not_found"

    cleared = client.put(path, json={"members": []}, headers=owner.headers)
    assert cleared.get_json() == {"members": [], "delay_s": 30}
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM escalation_chain").fetchone()["n"] == 0


# Bodies refused, given the home and an outsider's user id.
BAD_CHAINS: dict[str, tuple[Callable[[Household, int], dict[str, Any]], str]] = {
    "not_an_id": (lambda h, _: {"members": ["x"]}, "validation_failed"),
    "twice": (lambda h, _: {"members": [h.b, h.b]}, "validation_failed"),
    "eleven": (lambda h, _: {"members": list(range(1, 12))}, "validation_failed"),
    "delay_too_short": (lambda h, _: {"members": [], "delay_s": 4}, "validation_failed"),
    "delay_too_long": (lambda h, _: {"members": [], "delay_s": 3601}, "validation_failed"),
    "delay_boolean": (lambda h, _: {"members": [], "delay_s": True}, "validation_failed"),
    "no_members": (lambda h, _: {"delay_s": 30}, "validation_failed"),
    "unknown_field": (lambda h, _: {"members": [], "extra": 1}, "validation_failed"),
    "outsider": (lambda h, out: {"members": [h.a, out]}, "escalation_member_not_in_home"),
    "no_such_user": (lambda h, _: {"members": [2**63 - 1]}, "escalation_member_not_in_home"),
    "beyond_bigint": (lambda h, _: {"members": [10**30]}, "escalation_member_not_in_home"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHAINS))
def test_a_bad_chain_is_a_422_that_changes_nothing(client, owner, bob, home, db, case):
    make_body, code = BAD_CHAINS[case]
    body = make_body(home, bob.user_id)
    response = client.put(f"/homes/{home.home}/escalation", json=body, headers=owner.headers)
    assert response.status_code == 422 and error_code(response) == code
    with db.connection() as conn:
        chain = escalation.load_chain(conn, home.home)
    assert chain == escalation.Chain([home.a, home.b], 60)
    assert audit(db, "escalation_changed") == []


def test_an_ack_through_the_api_stops_the_escalation_and_is_audited(
    client, app, owner, bob, home, db
):
    note = alert(db, home)
    make_due(db)
    advance_due(db, SWEEP)  # b has it now
    b = headers(app, home.b)

    outsider = client.post(f"/notifications/{note}/ack", headers=bob.headers)
    assert outsider.status_code == 404 and error_code(outsider) == "notification_not_found"

    acked = client.post(f"/notifications/{note}/ack", headers=b)
    assert acked.status_code == 200
    body = acked.get_json()
    assert (body["acked_by"], body["read_at"], body["read_by"]) == (home.b, None, None)
    assert body["acked_at"] is not None
    climb_json = body["escalation"]
    assert (climb_json["step"], climb_json["chain"]) == (1, [home.a, home.b])
    assert (climb_json["stopped_reason"], climb_json["next_at"]) == ("acknowledged", None)
    assert climb_json["stopped_at"] is not None
    assert [(r["user_id"], r["details"]) for r in audit(db, "alert_acknowledged")] == [
        (home.b, {"notification_id": note, "step": 1})
    ]

    again = client.post(f"/notifications/{note}/ack", headers=owner.headers)  # idempotent
    assert again.status_code == 200 and again.get_json()["acked_by"] == home.b
    assert again.get_json()["acked_at"] == body["acked_at"]
    assert len(audit(db, "alert_acknowledged")) == 1
    make_due(db)
    assert advance_due(db, SWEEP).steps == [] and len(deliveries(db)) == 2

    listed = client.get("/notifications", headers=b).get_json()["notifications"]
    assert listed[0]["escalation"] == climb_json


def test_a_read_through_the_api_stops_the_escalation(client, app, owner, home, db):
    note = alert(db, home)
    pending = client.get(f"/notifications/{note}", headers=owner.headers).get_json()
    assert pending["escalation"]["stopped_reason"] is None
    assert pending["escalation"]["next_at"] is not None and pending["acked_at"] is None

    read = client.post(f"/notifications/{note}/read", headers=owner.headers)
    assert read.status_code == 200
    assert read.get_json()["read_by"] == home.a
    assert read.get_json()["escalation"]["stopped_reason"] == "read"
    assert climb(db, note)["stopped_by"] == home.a
    make_due(db)
    assert advance_due(db, SWEEP).steps == [] and deliveries(db) == [(home.a, None, False)]


def test_a_notification_that_never_escalated_has_no_escalation(client, owner, db):
    with db.connection() as conn:
        conn.execute("UPDATE homes SET arm_mode = 'home' WHERE id = %s", (owner.home_id,))
    event = analysed_event(db, owner.home_id, owner.device_id, "front_door", [("car", 0.9)])
    (alerted,) = digest_events(db, [event]).alerts
    response = client.post(f"/notifications/{alerted.notification_id}/ack", headers=owner.headers)
    body = response.get_json()
    assert response.status_code == 200 and body["escalation"] is None
    assert body["acked_by"] == owner.user_id
    assert [r["details"] for r in audit(db, "alert_acknowledged")] == [
        {"notification_id": alerted.notification_id, "step": None}
    ]
