"""POST /events: the source's body as written, uploads, lite results, idempotent retries."""

from __future__ import annotations

import hashlib
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api_helpers import (
    SOURCE_EVENT,
    api_app,
    candidates,
    count,
    photo_upload,
    post_event,
)
from tests.photos import photo

pytestmark = pytest.mark.integration


def _event_row(db, event_id):
    with db.connection() as conn:
        return conn.execute("SELECT * FROM events WHERE id = %s", (event_id,)).fetchone()


def test_the_source_body_exactly_as_written_is_accepted(client, owner, db, redis_client):
    response = client.post("/events", json=SOURCE_EVENT, headers=owner.headers)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert set(body) == {"event_id", "status", "priority"}
    assert body["status"] == "queued" and body["priority"] > 0
    assert response.headers["Location"] == f"/events/{body['event_id']}"
    row = _event_row(db, body["event_id"])
    assert (row["home_id"], row["device_id"]) == (owner.home_id, owner.device_id)
    assert (row["location"], row["mode"], row["image_url"]) == (
        "front_door",
        "security",
        "https://example.com/test.jpg",
    )
    assert row["motion_score"] == pytest.approx(0.8) and row["image"] is None
    assert row["image_key"] is None
    assert count(db, "events") == 1
    assert candidates(redis_client, owner.home_id) == {
        str(body["event_id"]): pytest.approx(body["priority"])
    }
    fields = redis_client.hgetall(f"ev:{{{owner.home_id}}}:{body['event_id']}")
    assert fields["tier"] == "premium" and fields["location"] == "front_door"


def test_device_can_be_named_by_numeric_id_too(client, owner, db):
    response = post_event(client, owner, device_id=owner.device_id)
    assert response.status_code == 202
    assert _event_row(db, response.get_json()["event_id"])["device_id"] == owner.device_id


def test_a_real_photo_upload_is_stored_and_served_back(client, owner, db, redis_client, blobs):
    response = client.post("/events", data=photo_upload("person"), headers=owner.headers)
    assert response.status_code == 202, response.get_json()
    event_id = response.get_json()["event_id"]
    row = _event_row(db, event_id)
    # In the blob store, named by its SHA-256; never in the row.
    assert row["image_key"] == hashlib.sha256(photo("person").read_bytes()).hexdigest()
    assert blobs.get(row["image_key"]) == photo("person").read_bytes()
    assert row["image"] is None and row["image_url"] is None
    assert str(event_id) in candidates(redis_client, owner.home_id)
    image = client.get(f"/events/{event_id}/image", headers=owner.headers)
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data == photo("person").read_bytes()


def test_lite_results_are_accepted_and_raise_the_priority(client, owner, db, redis_client):
    plain = post_event(client, owner, motion_score=0.3).get_json()
    lite = {"person": 0.9, "vehicle": 0.0, "animal": 0.1}
    seen = post_event(client, owner, motion_score=0.3, lite_results=lite)
    assert seen.status_code == 202, seen.get_json()
    person = seen.get_json()
    assert person["priority"] > plain["priority"]
    assert _event_row(db, person["event_id"])["lite_results"] == lite
    scores = candidates(redis_client, owner.home_id)
    assert scores[str(person["event_id"])] > scores[str(plain["event_id"])]
    upload = client.post(
        "/events",
        data=photo_upload("person", lite_results='{"person": 0.8}'),
        headers=owner.headers,
    )
    assert upload.status_code == 202, upload.get_json()


def test_an_idempotency_key_replay_answers_the_same_event_without_a_second_row(
    client, owner, db, redis_client
):
    headers = {**owner.headers, "Idempotency-Key": "retry-7f3a"}
    first = client.post("/events", json=SOURCE_EVENT, headers=headers)
    again = client.post("/events", json=SOURCE_EVENT, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert count(db, "events") == 1
    assert len(candidates(redis_client, owner.home_id)) == 1
    other = client.post("/events", json=SOURCE_EVENT, headers={**headers, "Idempotency-Key": "b"})
    assert other.status_code == 202 and count(db, "events") == 2


def test_a_replay_after_the_month_turned_answers_the_first_event(client, owner, db):
    # Events are partitioned by month: the key's claim, not a unique key of events, makes
    # the retry idempotent whichever partition its first event is in.
    headers = {**owner.headers, "Idempotency-Key": "retry-over-midnight"}
    first = client.post("/events", json=SOURCE_EVENT, headers=headers)
    assert first.status_code == 202
    event_id = first.get_json()["event_id"]
    with db.connection() as conn:
        before = conn.execute(
            "SELECT tableoid::regclass::text AS part FROM events WHERE id = %s", (event_id,)
        ).fetchone()["part"]
        conn.execute(
            "UPDATE events SET created_at = created_at - interval '40 days' WHERE id = %s",
            (event_id,),
        )
        after = conn.execute(
            "SELECT tableoid::regclass::text AS part FROM events WHERE id = %s", (event_id,)
        ).fetchone()["part"]
    assert after != before  # now in another month's partition
    again = client.post("/events", json=SOURCE_EVENT, headers=headers)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["event_id"] == event_id
    assert count(db, "events") == 1


def test_only_a_request_with_an_idempotency_key_is_hashed(client, owner, db):
    # Without a key no replay can be compared with the request: its upload is not hashed.
    plain = client.post("/events", data=photo_upload("person"), headers=owner.headers)
    assert plain.status_code == 202, plain.get_json()
    assert _event_row(db, plain.get_json()["event_id"])["request_hash"] is None
    keyed = client.post(
        "/events",
        data=photo_upload("person"),
        headers={**owner.headers, "Idempotency-Key": "hash-me"},
    )
    assert keyed.status_code == 202, keyed.get_json()
    stored = _event_row(db, keyed.get_json()["event_id"])["request_hash"]
    assert stored is not None and re.fullmatch(r"[0-9a-f]{64}", stored)


def test_with_redis_down_an_event_is_still_accepted_and_reconcile_finds_it(database_url, db):
    # Nothing listens on port 1. Tokens are checked against PostgreSQL when the session
    # cache is down, and the ingest limits fail open: the event is stored (the source of
    # truth) and answered 202; reconcile adds its candidate once Redis is back.
    for app in api_app(database_url, "redis://127.0.0.1:1/0"):
        client = app.test_client()
        with app.app_context():
            from webapp.cli import create_user

            _, home_id = create_user("c@example.com", "pw", "Home", "standard", "UTC")
        with db.connection() as conn:
            conn.execute(
                "INSERT INTO devices (home_id, kind, platform, name)"
                " VALUES (%s, 'camera', 'camera', 'test_device_001')",
                (home_id,),
            )
        token = client.post("/auth/login", json={"email": "c@example.com", "password": "pw"})
        access = token.get_json()["access_token"]
        response = client.post(
            "/events", json=SOURCE_EVENT, headers={"Authorization": f"Bearer {access}"}
        )
        assert response.status_code == 202
        with db.connection() as conn:
            row = conn.execute("SELECT status FROM events").fetchone()
        assert count(db, "events") == 1 and row["status"] == "queued"


def test_concurrent_retries_with_one_idempotency_key_make_one_row(app, owner, db, redis_client):
    headers = {**owner.headers, "Idempotency-Key": "burst-1"}
    start = threading.Barrier(6)

    def send(_):
        client = app.test_client()
        start.wait()
        response = client.post("/events", json=SOURCE_EVENT, headers=headers)
        return response.status_code, response.get_json()["event_id"]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(send, range(6)))
    assert sorted(status for status, _ in results) == [200] * 5 + [202]
    assert len({event_id for _, event_id in results}) == 1
    assert count(db, "events") == 1
    assert len(candidates(redis_client, owner.home_id)) == 1
