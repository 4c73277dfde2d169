"""Alerts only for what is new, on the real PostgreSQL and Redis: a detection in an ignore
zone or outside the alert zones, an object that stayed put, and an alert everyone snoozed
are each held for the summary with their reason; life safety passes snoozes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notify.digest import digest_events
from notify.policy_store import save_policy
from notify.snoozes import add_snooze
from notify.stationary import StationaryMemory
from notify.zones import insert_zone
from tests.factories import analysed_event, make_home
from vigil.vocabulary import PresenceGroup, ZoneKind

pytestmark = pytest.mark.integration

FRAME = (1000, 500)
# A car parked on the street, in the top band of the frame; its bottom centre is (0.5, 0.3).
PARKED = (400.0, 50.0, 600.0, 150.0)
MOVED = (700.0, 250.0, 900.0, 400.0)  # across the drive: no overlap with PARKED
STREET = [(0.0, 0.0), (1.0, 0.0), (1.0, 0.4), (0.0, 0.4)]


@pytest.fixture
def memory(redis_client) -> StationaryMemory:
    return StationaryMemory(redis_client, iou=0.6, window_s=3600)


@pytest.fixture
def home(db):
    """An armed-away home whose policy has no cooldown: only zones, memory and snoozes
    can hold a vehicle back."""
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
        save_policy(conn, home, {"cooldown_s": 0})
    return home, camera


def seen(db, home, camera, boxes, label="car", location="driveway") -> int:
    """An event of ``camera`` analysed as the deep worker stores it: ``boxes`` of ``label``
    in a FRAME-sized picture."""
    detections = [(label, 0.9, box) for box in boxes]
    return analysed_event(db, home, camera, location, detections, frame=FRAME)


def decision(db, event_id) -> tuple[str, str]:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT digest, digest_reason FROM events WHERE id = %s", (event_id,)
        ).fetchone()
    return row["digest"], row["digest_reason"]


def test_a_car_in_an_ignore_zone_is_held_with_the_reason_zone(db, home, memory):
    home_id, camera = home
    with db.connection() as conn:
        insert_zone(conn, camera, home_id, "street", ZoneKind.IGNORE, STREET)
    street = seen(db, home_id, camera, [PARKED])
    drive = seen(db, home_id, camera, [MOVED])
    person = seen(db, home_id, camera, [PARKED], label="person")
    digest_events(db, [street, drive, person], memory)
    assert decision(db, street) == ("summary", "zone")
    assert decision(db, drive) == ("alert", "armed")
    assert decision(db, person) == ("summary", "zone")  # a zone says where nothing matters
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT e.id, e.zones, d.zones AS hit, d.counts FROM events e"
            " JOIN detections d ON d.event_id = e.id WHERE e.id = ANY(%s) ORDER BY e.id",
            ([street, drive],),
        ).fetchall()
    assert [(r["zones"], r["hit"], r["counts"]) for r in rows] == [
        (["street"], ["street"], False),
        ([], [], True),
    ]


def test_an_ignore_zone_for_vehicles_lets_a_person_there_alert(db, home, memory):
    home_id, camera = home
    with db.connection() as conn:
        insert_zone(
            conn, camera, home_id, "street", ZoneKind.IGNORE, STREET, [PresenceGroup.VEHICLE]
        )
    car = seen(db, home_id, camera, [PARKED])
    person = seen(db, home_id, camera, [PARKED], label="person")
    digest_events(db, [car, person], memory)
    assert decision(db, car) == ("summary", "zone")
    assert decision(db, person) == ("alert", "life_safety")


def test_outside_every_alert_zone_is_held_inside_one_alerts(db, home, memory):
    home_id, camera = home
    drive = [(0.6, 0.5), (1.0, 0.5), (1.0, 1.0), (0.6, 1.0)]
    with db.connection() as conn:
        insert_zone(conn, camera, home_id, "drive", ZoneKind.ALERT, drive)
    outside = seen(db, home_id, camera, [PARKED])
    inside = seen(db, home_id, camera, [MOVED])
    digest_events(db, [outside, inside], memory)
    assert decision(db, outside) == ("summary", "zone")
    assert decision(db, inside) == ("alert", "armed")


def test_a_parked_car_alerts_once_and_again_when_it_moves(db, home, memory):
    home_id, camera = home
    jitter = (402.0, 48.0, 603.0, 151.0)  # the detector's box wobbles a few pixels
    events = [
        seen(db, home_id, camera, [PARKED]),
        seen(db, home_id, camera, [jitter]),
        seen(db, home_id, camera, [PARKED]),
        seen(db, home_id, camera, [MOVED]),
    ]
    for event in events:  # one at a time, as the events arrive
        digest_events(db, [event], memory)
    assert [decision(db, e) for e in events] == [
        ("alert", "armed"),
        ("summary", "stationary"),
        ("summary", "stationary"),
        ("alert", "armed"),
    ]
    with db.connection() as conn:
        flags = conn.execute(
            "SELECT stationary FROM detections WHERE event_id = ANY(%s) ORDER BY event_id",
            (events,),
        ).fetchall()
    assert [f["stationary"] for f in flags] == [False, True, True, False]


def test_the_memory_survives_a_redis_wipe(db, home, memory, redis_client):
    home_id, camera = home
    first = seen(db, home_id, camera, [PARKED])
    digest_events(db, [first], memory)
    redis_client.flushdb()  # Redis restarted empty: the memory is rebuilt from the rows
    second = seen(db, home_id, camera, [PARKED])
    digest_events(db, [second], memory)
    assert decision(db, second) == ("summary", "stationary")


def test_without_the_memory_nothing_is_stationary(db, home):
    home_id, camera = home
    events = [seen(db, home_id, camera, [PARKED]) for _ in range(2)]
    for event in events:
        digest_events(db, [event])
    assert [decision(db, e) for e in events] == [("alert", "armed")] * 2


def test_an_alert_everyone_snoozed_is_held_but_life_safety_passes(db, home, memory):
    home_id, camera = home
    with db.connection() as conn:
        owner = conn.execute("SELECT owner_id FROM homes WHERE id = %s", (home_id,)).fetchone()
        until = conn.execute("SELECT now() + interval '1 hour' AS t").fetchone()["t"]
        add_snooze(conn, home_id, owner["owner_id"], until, device_id=camera)
    car = seen(db, home_id, camera, [MOVED])
    person = seen(db, home_id, camera, [PARKED], label="person", location="front_door")
    digest_events(db, [car, person], memory)
    assert decision(db, car) == ("summary", "snoozed")
    assert decision(db, person) == ("alert", "life_safety")


def test_a_snooze_of_one_member_leaves_the_alert_to_the_others(db, home, memory):
    home_id, camera = home
    with db.connection() as conn:
        owner = conn.execute("SELECT owner_id FROM homes WHERE id = %s", (home_id,)).fetchone()
        other = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES ('kim@e.x', 'x') RETURNING id"
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, 'member')",
            (home_id, other),
        )
        until = conn.execute("SELECT now() + %s AS t", (timedelta(hours=1),)).fetchone()["t"]
        add_snooze(conn, home_id, owner["owner_id"], until, device_id=camera)
    car = seen(db, home_id, camera, [MOVED])
    digest_events(db, [car], memory)
    assert decision(db, car) == ("alert", "armed")
    with db.connection() as conn:
        phones = conn.execute(
            "SELECT count(*) AS n FROM deliveries d JOIN notifications n"
            " ON n.id = d.notification_id WHERE n.event_id = %s",
            (car,),
        ).fetchone()
    assert phones["n"] == 0  # the owner's phone is snoozed; the other member has none


def test_a_snooze_is_the_reason_given_before_the_cooldown(db, memory):
    with db.connection() as conn:
        home_id, camera = make_home(conn, arm_mode="away")  # the default 5 min cooldown
    first = seen(db, home_id, camera, [MOVED])
    digest_events(db, [first], memory)
    with db.connection() as conn:
        owner = conn.execute("SELECT owner_id FROM homes WHERE id = %s", (home_id,)).fetchone()
        until = conn.execute("SELECT now() + interval '1 hour' AS t").fetchone()["t"]
        add_snooze(conn, home_id, owner["owner_id"], until, device_id=camera)
    moved = seen(db, home_id, camera, [PARKED])  # a new place: not stationary
    digest_events(db, [moved], memory)
    assert decision(db, first) == ("alert", "armed")
    assert decision(db, moved) == ("summary", "snoozed")
