"""Digest against the real PostgreSQL: alerts once, summaries folded by window."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from psycopg.types.json import Jsonb

from inference.contract import Detection
from notify.digest import digest_events, flush_summaries, provisional_alerts, summary_text
from notify.policy import decide
from store.analysis import claim_for_analysis, save_detections
from tests.factories import make_home


def analysed_event(db, home, camera, location, detections) -> int:
    with db.connection() as conn:
        event_id = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, %s, 'security', 0.8) RETURNING id",
            (home, camera, location),
        ).fetchone()["id"]
    claim_for_analysis(db, [event_id])
    dets = [Detection(label, score, (1.0, 2.0, 30.0, 40.0)) for label, score in detections]
    assert save_detections(db, [(event_id, dets)], "nanodet-416") == [event_id]
    return event_id


def test_a_person_while_armed_away_is_alerted_once_to_every_phone(db):
    with db.connection() as conn:
        home, camera = make_home(conn, phones=2)
    event = analysed_event(db, home, camera, "front_door", [("person", 0.8)])
    report = digest_events(db, [event])
    assert report.alerts == [event] and report.pushes == 2
    again = digest_events(db, [event])  # a redelivered digest
    assert again.alerts == [] and again.pushes == 0
    with db.connection() as conn:
        rows = conn.execute("SELECT kind, title, provider FROM notifications").fetchall()
    assert [(r["kind"], r["title"], r["provider"]) for r in rows] == [
        ("alert", "Person at the front door", "embedded")
    ] * 2


def test_routine_events_are_held_then_folded_into_one_summary(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="home")
    events = [
        analysed_event(db, home, camera, "backyard", [("person", 0.7)]),
        analysed_event(db, home, camera, "backyard", [("person", 0.6), ("car", 0.9)]),
        analysed_event(db, home, camera, "backyard", [("cat", 0.2)]),
    ]
    assert digest_events(db, events).held == events
    assert flush_summaries(db, window_s=3600, idle_s=3600) == 0  # window still open
    assert flush_summaries(db, window_s=0, idle_s=0) == 1
    assert flush_summaries(db, window_s=0, idle_s=0) == 0  # nothing left to fold
    with db.connection() as conn:
        (row,) = conn.execute("SELECT kind, title, body FROM notifications").fetchall()
        pending = conn.execute(
            "SELECT count(*) AS n FROM events WHERE summary_id IS NULL"
        ).fetchone()["n"]
    assert row["kind"] == "summary" and row["title"] == "Summary: 3 events"
    # At most one person at once: the summary does not add frames up.
    assert row["body"].startswith("A person and a car at the backyard, ")
    assert pending == 0


def test_unanalysed_events_are_not_digested(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, 'front_door', 'security', 0.5) RETURNING id",
            (home, camera),
        ).fetchone()["id"]
    assert digest_events(db, [event]).alerts == []


@pytest.mark.parametrize(
    "labels,arm,location,kind",
    [
        ([("person", 0.9)], "away", "backyard", "alert"),
        ([("person", 0.9)], "night", "living_room", "alert"),
        ([("person", 0.9)], "home", "front_door", "alert"),
        ([("car", 0.9)], "home", "front_door", "alert"),
        ([("person", 0.9)], "home", "backyard", "summary"),
        ([("person", 0.9)], "disarmed", "front_door", "summary"),
        ([("person", 0.3)], "away", "front_door", "summary"),
        ([("dog", 0.9)], "away", "front_door", "summary"),
    ],
)
def test_policy_alerts_only_when_it_matters(labels, arm, location, kind):
    assert decide(labels, arm, location).kind == kind


def test_summary_text_reads_as_a_sentence():
    start, end = datetime(2026, 5, 1, 14, 0), datetime(2026, 5, 1, 14, 10)
    text = summary_text(Counter({"person": 3, "car": 1}), "front door", start, end)
    assert text == "3 people and a car at the front door, 14:00–14:10"
    text = summary_text(Counter({"bus": 2, "elephant": 1, "dog": 2}), "driveway", start, end)
    assert text == "2 buses, 2 dogs and an elephant at the driveway, 14:00–14:10"


def skipped_event(db, home, camera, location, lite) -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
            " lite_results) VALUES (%s, %s, %s, 'security', 0.8, 'skipped', %s) RETURNING id",
            (home, camera, location, Jsonb(lite) if lite else None),
        ).fetchone()["id"]


def test_an_expired_event_with_an_alarming_lite_result_still_alerts_once(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    alarming = skipped_event(
        db,
        home,
        camera,
        "front_door",
        {"person": 0.9, "vehicle": 0.0, "animal": 0.0, "source": "phone"},
    )
    calm = skipped_event(db, home, camera, "front_door", {"person": 0.1})
    unknown = skipped_event(db, home, camera, "front_door", None)
    assert provisional_alerts(db, [alarming, calm, unknown]) == [alarming]
    assert provisional_alerts(db, [alarming]) == []  # once only
    with db.connection() as conn:
        (row,) = conn.execute("SELECT event_id, kind, title, body FROM notifications").fetchall()
    assert row["event_id"] == alarming and row["kind"] == "alert"
    assert row["title"] == "Possible person at the front door"
    assert row["body"].startswith("Not verified")
