"""Reading events: one with its detections, pages by cursor, filters, the uploaded image.

Pictures are served from the blob store; a row not yet migrated, from its bytea column."""

from __future__ import annotations

import datetime as dt

import pytest

from store.analysis import save_lite_results
from tests.api_helpers import error_code, post_event
from tests.photos import photo

pytestmark = pytest.mark.integration


def _insert_tied_events(db, owner, n, created_at, status="queued"):
    """Rows sharing one created_at, so the cursor must break ties by id."""
    with db.connection() as conn:
        for _ in range(n):
            conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score,"
                " image_url, status, created_at)"
                " VALUES (%s, %s, 'yard', 'security', 0.5, 'https://e.x/i.jpg', %s, %s)",
                (owner.home_id, owner.device_id, status, created_at),
            )


def _all_pages(client, owner, query=""):
    ids, cursor, pages = [], None, 0
    while True:
        url = f"/events?limit=4{query}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=owner.headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        ids += [event["id"] for event in body["events"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


def test_get_event_shows_its_fields_and_detections(client, owner, db):
    event_id = post_event(client, owner).get_json()["event_id"]
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO detections (event_id, event_created_at, label, score, x1, y1, x2, y2,"
            " model) SELECT id, created_at, 'person', 0.9, 1, 2, 30, 40, 'nanodet-416'"
            " FROM events WHERE id = %s",
            (event_id,),
        )
    event = client.get(f"/events/{event_id}", headers=owner.headers).get_json()
    assert event["id"] == event_id and event["status"] == "queued"
    assert event["has_image"] is False and event["image_url"] == "https://example.com/test.jpg"
    assert dt.datetime.fromisoformat(event["created_at"]).tzinfo is not None
    assert [d["label"] for d in event["detections"]] == ["person"]


def test_lite_results_read_back_as_scores_with_who_made_them(client, owner, db):
    # The server's lite scorer stores its marker with the scores; the phone sends scores only.
    by_server = post_event(client, owner).get_json()["event_id"]
    save_lite_results(db, by_server, {"person": 0.93, "vehicle": 0.0}, 0.9)
    by_phone = post_event(client, owner, lite_results={"person": 0.4}).get_json()["event_id"]
    event = client.get(f"/events/{by_server}", headers=owner.headers)
    assert event.status_code == 200
    body = event.get_json()
    assert (body["lite_results"], body["lite_source"]) == (
        {"person": 0.93, "vehicle": 0.0},
        "server_lite",
    )
    listed = client.get("/events", headers=owner.headers).get_json()["events"]
    sources = {e["id"]: (e["lite_results"], e["lite_source"]) for e in listed}
    assert sources == {
        by_server: ({"person": 0.93, "vehicle": 0.0}, "server_lite"),
        by_phone: ({"person": 0.4}, "device"),
    }


def test_pages_return_every_event_exactly_once_newest_first(client, owner, db):
    posted = [post_event(client, owner).get_json()["event_id"] for _ in range(5)]
    _insert_tied_events(db, owner, 10, dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC))
    ids, pages = _all_pages(client, owner)
    assert len(ids) == len(set(ids)) == 15 and pages == 4
    assert ids[:5] == posted[::-1]  # newest first
    with db.connection() as conn:
        every = {row["id"] for row in conn.execute("SELECT id FROM events").fetchall()}
    assert set(ids) == every


def test_list_filters_by_status_and_time(client, owner, db):
    old = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    _insert_tied_events(db, owner, 3, old, status="analyzed")
    post_event(client, owner)
    analyzed, _ = _all_pages(client, owner, "&status=analyzed")
    assert len(analyzed) == 3
    recent, _ = _all_pages(client, owner, "&since=2024-06-01T00:00:00Z")
    assert len(recent) == 1
    before, _ = _all_pages(client, owner, "&until=2024-01-01T00:00:01%2B00:00")
    assert len(before) == 3
    home, _ = _all_pages(client, owner, f"&home_id={owner.home_id}")
    assert len(home) == 4


@pytest.mark.parametrize(
    "query, code",
    [
        ("limit=101", "validation_failed"),
        ("limit=0", "validation_failed"),
        ("status=lost", "validation_failed"),
        ("since=yesterday", "validation_failed"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("limit=5&limit=6", "invalid_query"),
        ("colour=blue", "validation_failed"),
    ],
)
def test_bad_list_queries_are_4xx_json(client, owner, query, code):
    response = client.get(f"/events?{query}", headers=owner.headers)
    assert 400 <= response.status_code < 500
    assert error_code(response) == code


def test_ids_beyond_bigint_are_a_plain_404(client, owner):
    response = client.get("/events/99999999999999999999", headers=owner.headers)
    assert response.status_code == 404 and error_code(response) == "event_not_found"


def test_url_only_event_has_no_image(client, owner):
    event_id = post_event(client, owner).get_json()["event_id"]
    response = client.get(f"/events/{event_id}/image", headers=owner.headers)
    assert response.status_code == 404 and error_code(response) == "no_image"


def _store_snapshot(db, blobs, event_id, data):
    """The snapshot as the deep worker stores it: in the blob store, named by the row."""
    with db.connection() as conn:
        conn.execute(
            "UPDATE events SET snapshot_key = %s WHERE id = %s", (blobs.put(data), event_id)
        )


def test_snapshot_is_served_once_the_event_is_analysed(client, owner, db, blobs):
    event_id = post_event(client, owner).get_json()["event_id"]
    response = client.get(f"/events/{event_id}/snapshot", headers=owner.headers)
    assert response.status_code == 404 and error_code(response) == "no_snapshot"
    _store_snapshot(db, blobs, event_id, b"\xff\xd8jpeg")
    response = client.get(f"/events/{event_id}/snapshot", headers=owner.headers)
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.data == b"\xff\xd8jpeg"
    assert response.headers["Cache-Control"] == "private, max-age=3600"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_row_not_yet_migrated_is_served_from_its_columns(client, owner, db):
    event_id = post_event(client, owner).get_json()["event_id"]
    frame = photo("dog").read_bytes()
    with db.connection() as conn:
        conn.execute(
            "UPDATE events SET image = %s, image_url = NULL, snapshot = %s WHERE id = %s",
            (frame, b"\xff\xd8old", event_id),
        )
    image = client.get(f"/events/{event_id}/image", headers=owner.headers)
    assert image.status_code == 200 and image.data == frame and image.mimetype == "image/jpeg"
    snapshot = client.get(f"/events/{event_id}/snapshot", headers=owner.headers)
    assert snapshot.status_code == 200 and snapshot.data == b"\xff\xd8old"
    assert client.get(f"/events/{event_id}", headers=owner.headers).get_json()["has_image"]


def test_an_alerts_signed_snapshot_link_works_without_a_token_until_it_expires(
    app, client, owner, db, blobs
):
    from urllib.parse import urlsplit

    from notify.links import Links

    event_id = post_event(client, owner).get_json()["event_id"]
    _store_snapshot(db, blobs, event_id, b"\xff\xd8jpeg")
    links = Links(base_url="https://vigil.example", secret=app.config["JWT_SECRET_KEY"])
    url = links.snapshot_url(event_id)
    assert url.startswith(f"https://vigil.example/events/{event_id}/snapshot?expires=")
    path = urlsplit(url)
    signed = client.get(f"{path.path}?{path.query}")  # no Authorization header
    assert signed.status_code == 200 and signed.data == b"\xff\xd8jpeg"
    other = client.get(f"/events/{event_id + 1}/snapshot?{path.query}")  # not this event's
    assert other.status_code == 403 and error_code(other) == "invalid_signature"
    expired = urlsplit(links.snapshot_url(event_id, now=0))
    response = client.get(f"{expired.path}?{expired.query}")
    assert response.status_code == 403 and error_code(response) == "invalid_signature"
    wrong_key = urlsplit(Links(secret="another-secret").snapshot_url(event_id))
    assert client.get(f"{wrong_key.path}?{wrong_key.query}").status_code == 403
    assert client.get(f"/events/{event_id}/snapshot").status_code == 401
