"""Digest against the real PostgreSQL: decisions, the outbox rows, summaries by window."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from notify.digest import digest_events
from notify.policy_store import load_policy, save_policy
from notify.summaries import flush_summaries, summary_due, summary_text
from store.analysis import claim_for_analysis, save_detections
from tests.factories import analysed_event, make_home

pytestmark = pytest.mark.integration

LATER = datetime(2100, 1, 1, tzinfo=UTC)  # every summary window has closed by then


def rows(db, sql, *args):
    with db.connection() as conn:
        return conn.execute(sql, args).fetchall()


def test_an_alert_is_one_notification_with_one_pending_delivery_per_phone(db):
    with db.connection() as conn:
        home, camera = make_home(conn, phones=2)
    event = analysed_event(db, home, camera, "front_door", [("person", 0.8)])
    report = digest_events(db, [event])
    assert [a.event_id for a in report.alerts] == [event] and len(report.deliveries) == 2
    again = digest_events(db, [event])  # a redelivered digest
    assert again.alerts == [] and again.deliveries == []
    (n,) = rows(db, "SELECT id, kind, title, labels, reason, life_safety FROM notifications")
    assert (n["kind"], n["title"], n["labels"]) == ("alert", "Person at the front door", ["person"])
    assert (n["reason"], n["life_safety"]) == ("life_safety", True)
    deliveries = rows(db, "SELECT notification_id, status, attempts FROM deliveries")
    assert [(d["notification_id"], d["status"], d["attempts"]) for d in deliveries] == [
        (n["id"], "pending", 0)
    ] * 2


def test_the_second_person_at_the_same_door_is_folded_by_the_cooldown(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
    first = analysed_event(db, home, camera, "front_door", [("person", 0.8)])
    second = analysed_event(db, home, camera, "front_door", [("person", 0.9)])
    elsewhere = analysed_event(db, home, camera, "back_door", [("person", 0.9)])
    report = digest_events(db, [first, second, elsewhere])
    assert [a.event_id for a in report.alerts] == [first, elsewhere]
    assert report.held == [second]
    reasons = rows(db, "SELECT id, digest, digest_reason FROM events ORDER BY id")
    decided = [(r["digest"], r["digest_reason"]) for r in reasons]
    life_safety, cooldown = ("alert", "life_safety"), ("summary", "cooldown")
    assert decided == [life_safety, cooldown, life_safety]


def test_the_hourly_budget_folds_routine_alerts_and_is_set_per_home(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="home")
        save_policy(conn, home, {"hourly_budget": 2, "cooldown_s": 0})
    cars = [analysed_event(db, home, camera, "front_door", [("car", 0.9)]) for _ in range(4)]
    person = analysed_event(db, home, camera, "front_door", [("person", 0.9)])
    report = digest_events(db, [*cars, person])
    # two cars use the budget; the person at the door (life safety) bypasses it
    assert [a.event_id for a in report.alerts] == [cars[0], cars[1], person]
    assert report.held == cars[2:]
    held = rows(db, "SELECT digest_reason FROM events WHERE digest = 'summary'")
    assert {r["digest_reason"] for r in held} == {"budget"}


def test_policy_is_stored_per_home_with_defaults(db):
    with db.connection() as conn:
        home, _ = make_home(conn)
        assert load_policy(conn, home).cooldown_s == 300
        policy = save_policy(conn, home, {"cooldown_s": 60, "alert_labels": ["animal"]})
        assert policy.cooldown_s == 60 and policy.alert_labels == frozenset({"animal"})
        assert policy.hourly_budget == 10 and policy.timezone == "Europe/Paris"


def test_routine_events_are_held_then_folded_into_one_summary(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="home")
    events = [
        analysed_event(db, home, camera, "backyard", [("person", 0.7)]),
        analysed_event(db, home, camera, "backyard", [("person", 0.6), ("car", 0.9)]),
        analysed_event(db, home, camera, "garden", [("cat", 0.2)]),
    ]
    assert digest_events(db, events).held == events
    assert flush_summaries(db).summaries == []  # the window is still open
    report = flush_summaries(db, now=LATER)
    assert len(report.summaries) == 1 and len(report.deliveries) == 1
    assert flush_summaries(db, now=LATER).summaries == []  # nothing left to fold
    (row,) = rows(db, "SELECT kind, title, body, summary_key FROM notifications")
    assert row["kind"] == "summary" and row["title"] == "Summary: 3 events"
    # At most one person at once: the summary does not add frames up; places are kept apart.
    assert row["body"].startswith("A person and a car at the backyard; motion at the garden, ")
    assert rows(db, "SELECT id FROM events WHERE summary_id IS NULL") == []


def test_summaries_wait_for_the_window_the_idle_gap_or_the_period(db):
    with db.connection() as conn:
        home, _ = make_home(conn, tz="UTC")
        policy = load_policy(conn, home)
        periodic = save_policy(conn, home, {"summary_interval_s": 600})
    t = datetime(2026, 5, 1, 14, 3, tzinfo=UTC)
    assert not summary_due(policy, t, t + timedelta(seconds=20), t + timedelta(seconds=40))
    assert summary_due(policy, t, t + timedelta(seconds=5), t + timedelta(seconds=40))  # idle
    busy = [t + timedelta(seconds=s) for s in (0, 25, 50, 75)]
    assert summary_due(policy, busy[0], busy[-1], t + timedelta(seconds=90))  # window full
    # periodic: 14:03 belongs to 14:00–14:10, folded once 14:10 has come
    assert not summary_due(periodic, t, t, t.replace(minute=9, second=59))
    assert summary_due(periodic, t, t, t.replace(minute=10))


@pytest.mark.unit
def test_summary_text_reads_as_a_sentence():
    start, end = datetime(2026, 5, 1, 14, 0), datetime(2026, 5, 1, 14, 10)
    text = summary_text({"front_door": Counter({"person": 3, "car": 1})}, start, end)
    assert text == "3 people and a car at the front door, 14:00–14:10"
    seen = {"driveway": Counter({"bus": 2, "elephant": 1, "dog": 2}), "yard": Counter({"cat": 1})}
    text = summary_text(seen, start, end)
    assert text == "2 buses, 2 dogs and an elephant at the driveway; a cat at the yard, 14:00–14:10"
    many = {f"place_{i}": Counter({"cat": 1}) for i in range(5)}
    assert summary_text(many, start, end).endswith("; activity at 2 more places, 14:00–14:10")


def skipped_event(db, home, camera, location, lite) -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
            " error_code, lite_results)"
            " VALUES (%s, %s, %s, 'security', 0.8, 'skipped', 'expired', %s) RETURNING id",
            (home, camera, location, Jsonb(lite) if lite else None),
        ).fetchone()["id"]


def failed_event(db, home, camera, location, code="fetch_failed") -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
            " error_code, error) VALUES (%s, %s, %s, 'security', 0.8, 'failed', %s, 'x')"
            " RETURNING id",
            (home, camera, location, code),
        ).fetchone()["id"]


def decisions(db, *event_ids):
    found = rows(
        db, "SELECT id, digest, digest_reason FROM events WHERE id = ANY(%s)", list(event_ids)
    )
    by_id = {r["id"]: (r["digest"], r["digest_reason"]) for r in found}
    return [by_id[e] for e in event_ids]


def test_an_expired_event_with_an_alarming_lite_result_still_alerts_once(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    lite = {"person": 0.9, "vehicle": 0.0, "animal": 0.0, "source": "phone"}
    alarming = skipped_event(db, home, camera, "front_door", lite)
    report = digest_events(db, [alarming])
    assert [(a.event_id, a.kind) for a in report.alerts] == [(alarming, "failsafe")]
    assert digest_events(db, [alarming]).alerts == []  # once only
    (row,) = rows(db, "SELECT event_id, kind, title, body, data, reason FROM notifications")
    assert row["event_id"] == alarming and row["kind"] == "alert"
    assert row["title"] == "Possible person at the front door"
    assert row["body"].startswith("Not verified") and row["reason"] == "failsafe"
    assert row["data"] == {"verified": "false", "failsafe": "expired"}
    assert decisions(db, alarming) == [("failsafe", "life_safety")]


def test_an_armed_home_hears_of_motion_it_could_not_analyse(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    broken = failed_event(db, home, camera, "garden")
    calm_lite = skipped_event(db, home, camera, "backyard", {"person": 0.1})
    report = digest_events(db, [broken, calm_lite])
    assert [(a.event_id, a.kind) for a in report.alerts] == [
        (broken, "failsafe"),
        (calm_lite, "failsafe"),
    ]
    notes = rows(db, "SELECT event_id, title, body, labels, data FROM notifications ORDER BY id")
    assert notes[0]["title"] == "Motion at the garden — the picture could not be analysed"
    assert notes[0]["body"].startswith("The camera's picture could not be fetched. Seen at ")
    assert notes[0]["labels"] == ["motion"]
    assert notes[0]["data"] == {"verified": "false", "failsafe": "fetch_failed"}
    assert notes[1]["body"].startswith("There was no time to analyse the picture.")


def test_failsafe_alerts_respect_the_cooldown_per_place(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    person = analysed_event(db, home, camera, "front_door", [("person", 0.9)])
    first, second = (failed_event(db, home, camera, "driveway") for _ in range(2))
    at_door = failed_event(db, home, camera, "front_door")
    report = digest_events(db, [person, first, second, at_door])
    assert [a.event_id for a in report.alerts] == [person, first]
    assert report.held == [second, at_door]
    assert decisions(db, second, at_door) == [("summary", "cooldown")] * 2


def test_failsafe_alerts_wait_out_quiet_hours_and_the_budget(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="night", tz="UTC")
        save_policy(conn, home, {"hourly_budget": 0})
    budget = failed_event(db, home, camera, "garage")
    digest_events(db, [budget])
    with db.connection() as conn:
        conn.execute(
            "UPDATE homes SET quiet_hours_start = '00:00', quiet_hours_end = '00:00' WHERE id = %s",
            (home,),
        )  # quiet all day
    quiet = failed_event(db, home, camera, "porch")
    report = digest_events(db, [quiet])
    assert report.alerts == [] and report.held == [quiet]
    assert decisions(db, budget, quiet) == [("summary", "budget"), ("summary", "quiet_hours")]


def test_a_disarmed_home_finds_an_unanalysed_event_in_its_summary(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="disarmed")
        armed_home, armed_camera = make_home(conn, arm_mode="home", email="d@e.f")
    broken = failed_event(db, home, camera, "front_door")
    garden = failed_event(db, armed_home, armed_camera, "garden")
    door = failed_event(db, armed_home, armed_camera, "front_door")
    report = digest_events(db, [broken, garden, door])
    assert report.held == [broken, garden] and [a.event_id for a in report.alerts] == [door]
    assert decisions(db, broken, garden, door) == [
        ("summary", "not_armed"),
        ("summary", "routine"),
        ("failsafe", "armed"),
    ]
    report = flush_summaries(db, now=LATER)
    assert len(report.summaries) == 2
    bodies = rows(db, "SELECT body FROM notifications WHERE kind = 'summary' ORDER BY id")
    assert bodies[0]["body"].startswith("Motion at the front door, ")


def test_nothing_seen_is_suppressed_when_disarmed_and_summarised_when_armed(db):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="disarmed")
        armed_home, armed_camera = make_home(conn, arm_mode="away", email="d@e.f")
    quiet = analysed_event(db, home, camera, "garden", [("cat", 0.2), ("bench", 0.9)])
    armed = analysed_event(db, armed_home, armed_camera, "garden", [])
    report = digest_events(db, [quiet, armed])
    assert report.suppressed == [quiet] and report.held == [armed]
    assert decisions(db, quiet, armed) == [
        ("suppressed", "below_threshold"),
        ("summary", "below_threshold"),
    ]
    assert rows(db, "SELECT id FROM notifications") == []


def test_pending_events_are_not_decided_yet(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
        queued = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, 'porch', 'security', 0.5) RETURNING id",
            (home, camera),
        ).fetchone()["id"]
    report = digest_events(db, [queued])
    assert (report.alerts, report.held, report.suppressed) == ([], [], [])
    assert decisions(db, queued) == [(None, None)]


def test_a_summary_of_only_expired_events_is_folded_at_their_time(db):
    # Never analysed: no analyzed_at. The sweep must still fold them, not stop on them.
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="disarmed")
    calm = skipped_event(db, home, camera, "garden", {"person": 0.1})
    assert digest_events(db, [calm]).held == [calm]
    report = flush_summaries(db, now=LATER)
    assert [h for h, _ in report.summaries] == [home]
    (event,) = rows(db, "SELECT summary_id FROM events WHERE id = %s", calm)
    assert event["summary_id"] is not None


def test_the_eagle_is_one_bird_in_the_summary_not_a_bird_and_a_dog(db):
    from inference.nanodet import NanoDet  # torch only for this test
    from tests.photos import open_photo

    model = NanoDet()
    model.setup("cpu")
    (detections,) = model.detect([open_photo("eagle")])
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, 'garden', 'security', 0.8) RETURNING id",
            (home, camera),
        ).fetchone()["id"]
    claim_for_analysis(db, [event])
    save_detections(db, [(event, detections)], model.name)
    assert digest_events(db, [event]).held == [event]  # an animal: no alert by default
    flush_summaries(db, now=LATER)
    (row,) = rows(db, "SELECT body, labels FROM notifications WHERE kind = 'summary'")
    assert row["body"].startswith("A bird at the garden, ") and row["labels"] == ["bird"]
    (stored,) = rows(db, "SELECT label, alternatives FROM detections WHERE event_id = %s", event)
    assert stored["label"] == "bird" and [a["label"] for a in stored["alternatives"]] == ["dog"]


def test_settled_events_whose_digest_was_lost_are_found_by_the_sweep(db):
    from notify.digest import undigested

    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    lost = failed_event(db, home, camera, "garage")
    decided = failed_event(db, home, camera, "porch")
    digest_events(db, [decided])
    with db.connection() as conn:  # the lost one settled two minutes ago
        conn.execute("ALTER TABLE events DISABLE TRIGGER events_set_updated_at")
        conn.execute(
            "UPDATE events SET updated_at = now() - interval '2 minutes' WHERE id = %s", (lost,)
        )
        conn.execute("ALTER TABLE events ENABLE TRIGGER events_set_updated_at")
    assert undigested(db, 60, 100) == [lost]
    assert [a.event_id for a in digest_events(db, undigested(db, 60, 100)).alerts] == [lost]
    assert undigested(db, 60, 100) == []
