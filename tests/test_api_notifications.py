"""GET /notifications, GET /notifications/<id>, POST .../read: your homes' only, with the
per-phone delivery state of each push."""

from __future__ import annotations

import datetime as dt

import pytest

from notify.outbox import record_notification
from tests.api_helpers import add_device, error_code

pytestmark = pytest.mark.integration

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _event(conn, owner) -> int:
    return conn.execute(
        "INSERT INTO events (home_id, device_id, location, mode, motion_score, status)"
        " VALUES (%s, %s, 'front_door', 'security', 0.9, 'analyzed') RETURNING id",
        (owner.home_id, owner.device_id),
    ).fetchone()["id"]


def _notification(conn, owner, kind="alert", minutes=0, event_id=None) -> int:
    return conn.execute(
        "INSERT INTO notifications (event_id, home_id, kind, title, body, created_at)"
        " VALUES (%s, %s, %s, %s, 'body', %s) RETURNING id",
        (event_id, owner.home_id, kind, f"{kind} +{minutes}", T0 + dt.timedelta(minutes=minutes)),
    ).fetchone()["id"]


def _list(client, owner, **params):
    response = client.get("/notifications", query_string=params, headers=owner.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_alerts_and_summaries_of_your_homes_newest_first(client, ana, bob, db):
    phone = add_device(db, ana.home_id, "ana-phone", kind="phone")
    with db.connection() as conn:
        event = _event(conn, ana)
        title = "Person at the front door"
        why = {"location": "front_door", "labels": ["person"], "reason": "life_safety"}
        alert = record_notification(
            conn, ana.home_id, "alert", title, "b", event_id=event, life_safety=True, **why
        )
        record_notification(conn, ana.home_id, "summary", "2 people", "14:00", summary_key="s1")
        _notification(conn, bob, minutes=5)
        conn.execute(
            "UPDATE deliveries SET status = 'sent', provider = 'fcm', attempts = 2,"
            " last_status = 200, sent_at = now() WHERE notification_id = %s",
            (alert.notification_id,),
        )
    body = _list(client, ana)
    assert body["next_cursor"] is None
    summary, alert_json = body["notifications"]
    assert set(alert_json) == {
        *("id", "kind", "title", "body", "event_id", "home_id", "location", "labels", "reason"),
        *("life_safety", "created_at", "read_at", "deliveries"),
        *("read_by", "acked_at", "acked_by", "escalation"),
    }
    assert (alert_json["kind"], alert_json["event_id"]) == ("alert", event)
    assert alert_json["labels"] == ["person"] and alert_json["life_safety"] is True
    (delivery,) = alert_json["deliveries"]
    assert delivery["device_id"] == phone and delivery["device_name"] == "ana-phone"
    assert (delivery["provider"], delivery["status"], delivery["attempts"]) == ("fcm", "sent", 2)
    assert dt.datetime.fromisoformat(delivery["sent_at"]).tzinfo is not None
    assert "next_attempt_at" not in delivery  # only while it is still to be sent
    assert (summary["kind"], summary["event_id"], summary["title"]) == ("summary", None, "2 people")
    assert summary["deliveries"][0]["status"] == "pending"
    one = client.get(f"/notifications/{alert_json['id']}", headers=ana.headers)
    assert one.status_code == 200 and one.get_json() == alert_json
    theirs = client.get(f"/notifications/{alert_json['id']}", headers=bob.headers)
    assert theirs.status_code == 404 and error_code(theirs) == "notification_not_found"


def test_filters_by_unread_event_and_delivery_state(client, ana, db):
    add_device(db, ana.home_id, "ana-phone", kind="phone")
    with db.connection() as conn:
        event = _event(conn, ana)
        failed = record_notification(conn, ana.home_id, "alert", "a", "b", event_id=event)
        ok = record_notification(conn, ana.home_id, "summary", "s", "b", summary_key="k")
        conn.execute(
            "UPDATE deliveries SET status = 'failed' WHERE notification_id = %s",
            (failed.notification_id,),
        )
        conn.execute(
            "UPDATE notifications SET read_at = now() WHERE id = %s", (ok.notification_id,)
        )

    def ids(**params):
        return [n["id"] for n in _list(client, ana, **params)["notifications"]]

    assert ids(delivery="failed") == [failed.notification_id]
    assert ids(delivery="pending") == [ok.notification_id]
    assert ids(event_id=event) == [failed.notification_id]
    assert ids(unread="true") == [failed.notification_id]
    assert ids(unread="false") == [ok.notification_id]
    assert error_code(client.get("/notifications?delivery=lost", headers=ana.headers)) == (
        "validation_failed"
    )


def test_filters_by_home_kind_and_since(client, ana, db):
    second_home = _second_home(db, ana)
    with db.connection() as conn:
        _notification(conn, ana, "alert", 0)
        _notification(conn, ana, "summary", 10)
        _notification(conn, ana, "alert", 20)
        conn.execute(
            "INSERT INTO notifications (home_id, kind, title, body)"
            " VALUES (%s, 'alert', 'other home', 'b')",
            (second_home,),
        )
    assert len(_list(client, ana)["notifications"]) == 4
    only_first = _list(client, ana, home_id=ana.home_id)["notifications"]
    assert [n["title"] for n in only_first] == ["alert +20", "summary +10", "alert +0"]
    assert [n["title"] for n in _list(client, ana, kind="summary")["notifications"]] == [
        "summary +10"
    ]
    since = (T0 + dt.timedelta(minutes=10)).isoformat()
    recent = _list(client, ana, home_id=ana.home_id, since=since)["notifications"]
    assert [n["title"] for n in recent] == ["alert +20", "summary +10"]


def _second_home(db, owner) -> int:
    with db.connection() as conn:
        return conn.execute(
            "INSERT INTO homes (owner_id, name) VALUES (%s, 'Cabin') RETURNING id",
            (owner.user_id,),
        ).fetchone()["id"]


def test_cursor_pages_cover_every_notification_once(client, ana, db):
    with db.connection() as conn:
        made = [_notification(conn, ana, minutes=m % 3) for m in range(7)]  # tied times too
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = _list(client, ana, **params)
        seen += [n["id"] for n in page["notifications"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))


def test_bad_queries_are_clear_4xx_errors(client, ana, bob):
    assert error_code(client.get("/notifications?kind=email", headers=ana.headers)) == (
        "validation_failed"
    )
    assert error_code(client.get("/notifications?cursor=zzz", headers=ana.headers)) == (
        "invalid_cursor"
    )
    other = client.get(f"/notifications?home_id={bob.home_id}", headers=ana.headers)
    assert other.status_code == 404 and error_code(other) == "home_not_found"
    assert client.get("/notifications").status_code == 401


def test_marking_read_keeps_the_first_read_time(client, ana, db):
    with db.connection() as conn:
        note = _notification(conn, ana)
    first = client.post(f"/notifications/{note}/read", headers=ana.headers)
    assert first.status_code == 200, first.get_json()
    read_at = first.get_json()["read_at"]
    assert read_at is not None and first.get_json()["id"] == note
    again = client.post(f"/notifications/{note}/read", headers=ana.headers)
    assert again.get_json()["read_at"] == read_at
    assert _list(client, ana)["notifications"][0]["read_at"] == read_at


def test_another_users_notification_is_404_like_a_missing_one(client, ana, bob, db):
    with db.connection() as conn:
        note = _notification(conn, ana)
    theirs = client.post(f"/notifications/{note}/read", headers=bob.headers)
    missing = client.post("/notifications/999999/read", headers=bob.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()
    assert error_code(theirs) == "notification_not_found"
    assert _list(client, bob)["notifications"] == []
    with db.connection() as conn:
        assert conn.execute("SELECT read_at FROM notifications").fetchone()["read_at"] is None
