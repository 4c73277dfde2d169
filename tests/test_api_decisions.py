"""Every event says why it did or did not alert: GET /events/<id> and GET /events?decision=."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notify.digest import digest_events
from notify.summaries import flush_summaries
from tests.api_helpers import error_code
from tests.factories import analysed_event

pytestmark = pytest.mark.integration

LATER = datetime(2100, 1, 1, tzinfo=UTC)


def set_arm_mode(db, home_id: int, mode: str) -> None:
    with db.connection() as conn:
        conn.execute("UPDATE homes SET arm_mode = %s WHERE id = %s", (mode, home_id))


def failed_event(db, owner, location: str, code: str) -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score,"
            " image_url, status, error_code, error)"
            " VALUES (%s, %s, %s, 'security', 0.7, 'https://cam.example/x.jpg', 'failed',"
            " %s, %s) RETURNING id",
            (owner.home_id, owner.device_id, location, code, f"{code}: refused"),
        ).fetchone()["id"]


def decision(client, owner, event_id: int) -> dict:
    response = client.get(f"/events/{event_id}", headers=owner.headers)
    assert response.status_code == 200
    return response.get_json()["decision"]


def listed(client, owner, query: str) -> list[int]:
    response = client.get(f"/events?{query}", headers=owner.headers)
    assert response.status_code == 200, response.get_json()
    return [e["id"] for e in response.get_json()["events"]]


def test_each_event_says_whether_it_alerted_and_why(client, owner, db):
    set_arm_mode(db, owner.home_id, "away")
    home, camera = owner.home_id, owner.device_id
    alerted = analysed_event(db, home, camera, "front_door", [("person", 0.9)])
    cooled = analysed_event(db, home, camera, "front_door", [("person", 0.8)])
    broken = failed_event(db, owner, "garage", "fetch_timeout")
    digest_events(db, [alerted, cooled, broken])
    set_arm_mode(db, owner.home_id, "disarmed")
    empty = analysed_event(db, home, camera, "garden", [("bench", 0.9)])
    cat = analysed_event(db, home, camera, "garden", [("cat", 0.8)])
    pending = analysed_event(db, home, camera, "garden", [])  # not digested yet
    digest_events(db, [empty, cat])

    first = decision(client, owner, alerted)
    assert first["kind"] == "alert" and first["reason"] == "life_safety"
    assert len(first["notification_ids"]) == 1
    assert decision(client, owner, cooled) == {
        "kind": "summary",
        "reason": "cooldown",
        "summary_id": None,
    }
    failsafe = decision(client, owner, broken)
    assert (failsafe["kind"], failsafe["reason"]) == ("failsafe", "armed")
    assert failsafe["analysis_error"] == "fetch_timeout" and len(failsafe["notification_ids"]) == 1
    assert decision(client, owner, empty) == {"kind": "suppressed", "reason": "below_threshold"}
    assert decision(client, owner, cat)["reason"] == "not_armed"
    assert decision(client, owner, pending) is None

    flush_summaries(db, now=LATER)  # the held events are folded into one summary
    summary_id = decision(client, owner, cooled)["summary_id"]
    assert summary_id is not None and decision(client, owner, cat)["summary_id"] == summary_id
    notification = client.get(f"/notifications/{summary_id}", headers=owner.headers)
    assert notification.status_code == 200 and notification.get_json()["kind"] == "summary"


def test_events_can_be_listed_by_decision_and_reason(client, owner, db):
    set_arm_mode(db, owner.home_id, "away")
    home, camera = owner.home_id, owner.device_id
    alerted = analysed_event(db, home, camera, "front_door", [("person", 0.9)])
    cooled = analysed_event(db, home, camera, "front_door", [("person", 0.8)])
    broken = failed_event(db, owner, "garage", "url_address_blocked")
    digest_events(db, [alerted, cooled, broken])
    assert listed(client, owner, "decision=alert") == [alerted]
    assert listed(client, owner, "decision=failsafe") == [broken]
    assert listed(client, owner, "decision=summary&reason=cooldown") == [cooled]
    assert listed(client, owner, "reason=budget") == []
    rows = client.get("/events", headers=owner.headers).get_json()["events"]
    by_id = {e["id"]: e["decision"] for e in rows}
    assert by_id[broken]["kind"] == "failsafe" and by_id[alerted]["kind"] == "alert"
    for query in ("decision=maybe", "reason=because"):
        response = client.get(f"/events?{query}", headers=owner.headers)
        assert response.status_code == 422 and error_code(response) == "validation_failed"


def test_a_detection_lists_the_labels_it_was_not_given(client, owner, db):
    event = analysed_event(db, owner.home_id, owner.device_id, "garden", [("bird", 0.68)])
    with db.connection() as conn:
        conn.execute(
            'UPDATE detections SET alternatives = \'[{"label": "dog", "score": 0.42}]\''
            " WHERE event_id = %s",
            (event,),
        )
    (det,) = client.get(f"/events/{event}", headers=owner.headers).get_json()["detections"]
    assert det["label"] == "bird" and det["alternatives"] == [{"label": "dog", "score": 0.42}]
