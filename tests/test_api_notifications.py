"""GET /notifications and POST /notifications/<id>/read: your homes' pushes only."""

from __future__ import annotations

import datetime as dt

from notify.outbox import record_alert, record_summary
from notify.policy import Decision
from tests.api_helpers import add_device, error_code

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def _event(conn, owner) -> int:
    return conn.execute(
        "INSERT INTO events (home_id, device_id, location, mode, motion_score, status)"
        " VALUES (%s, %s, 'front_door', 'security', 0.9, 'analyzed') RETURNING id",
        (owner.home_id, owner.device_id),
    ).fetchone()["id"]


def _notification(conn, owner, kind="alert", minutes=0, event_id=None) -> int:
    return conn.execute(
        "INSERT INTO notifications (event_id, home_id, kind, title, body, provider, status,"
        " created_at, sent_at) VALUES (%s, %s, %s, %s, 'body', 'embedded', 'sent', %s, %s)"
        " RETURNING id",
        (
            event_id,
            owner.home_id,
            kind,
            f"{kind} +{minutes}",
            T0 + dt.timedelta(minutes=minutes),
            T0 + dt.timedelta(minutes=minutes, seconds=1),
        ),
    ).fetchone()["id"]


def _list(client, owner, **params):
    response = client.get("/notifications", query_string=params, headers=owner.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_alerts_and_summaries_of_your_homes_newest_first(client, ana, bob, db):
    with db.connection() as conn:
        phone = add_device(db, ana.home_id, "ana-phone", kind="phone")
        event = _event(conn, ana)
        record_alert(conn, ana.home_id, event, Decision("alert", "Person at front door", "b"))
        record_summary(conn, ana.home_id, "sum-1", "2 people", "14:00-14:10")
        _notification(conn, bob, minutes=5)
    body = _list(client, ana)
    assert body["next_cursor"] is None
    summary, alert = body["notifications"]
    assert set(alert) == {
        "id",
        "kind",
        "title",
        "body",
        "event_id",
        "home_id",
        "device_id",
        "provider",
        "status",
        "created_at",
        "sent_at",
        "read_at",
    }
    assert (alert["kind"], alert["event_id"], alert["device_id"]) == ("alert", event, phone)
    assert alert["title"] == "Person at front door" and alert["read_at"] is None
    assert (summary["kind"], summary["event_id"], summary["title"]) == ("summary", None, "2 people")
    assert dt.datetime.fromisoformat(alert["sent_at"]).tzinfo is not None


def test_filters_by_home_kind_and_since(client, ana, db):
    second_home = _second_home(db, ana)
    with db.connection() as conn:
        _notification(conn, ana, "alert", 0)
        _notification(conn, ana, "summary", 10)
        _notification(conn, ana, "alert", 20)
        conn.execute(
            "INSERT INTO notifications (home_id, kind, title, body, provider)"
            " VALUES (%s, 'alert', 'other home', 'b', 'embedded')",
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
