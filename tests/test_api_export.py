"""``GET /homes/<id>/export``: the home's events, notifications and pictures as one zip, for
its owners, streamed in bounded memory whatever the home's size."""

from __future__ import annotations

import io
import json
import secrets
import tracemalloc
import zipfile
from typing import Any

import pytest

from tests.api_helpers import Owner, error_code, make_owner
from tests.photos import photo
from webapp.clients import clients

pytestmark = pytest.mark.integration


def _event(app, owner: Owner, minutes: int, **pictures: Any) -> int:
    """An analysed event ``minutes`` old with a detection and its alert; ``pictures``: blob
    keys (``image_key``, ``snapshot_key``) or bytes in the row (``image``, ``snapshot``)."""
    columns = ", ".join(pictures)
    marks = ", ".join(["%s"] * len(pictures))
    with clients(app).pool.connection() as conn:
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
            f" digest, digest_reason, analyzed_at, created_at{', ' if pictures else ''}{columns})"
            " VALUES (%s, %s, 'front_door', 'security', 0.8, 'analyzed', 'alert', 'armed',"
            f" now(), now() - make_interval(mins => %s){', ' if pictures else ''}{marks})"
            " RETURNING id",
            (owner.home_id, owner.device_id, minutes, *pictures.values()),
        ).fetchone()["id"]
        conn.execute(
            "INSERT INTO detections (event_id, event_created_at, label, score, x1, y1, x2, y2,"
            " model) SELECT id, created_at, 'person', 0.9, 1, 2, 30, 40, 'nanodet-416'"
            " FROM events WHERE id = %s",
            (event,),
        )
        conn.execute(
            "INSERT INTO notifications (event_id, home_id, kind, title, body, location, labels,"
            " reason) VALUES (%s, %s, 'alert', 'Person', 'At the front door', 'front_door',"
            " '{person}', 'armed')",
            (event, owner.home_id),
        )
    return event


def _zip(response: Any) -> zipfile.ZipFile:
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return zipfile.ZipFile(io.BytesIO(response.get_data()))


def test_the_export_holds_every_event_notification_and_picture_as_stored(app, client, owner):
    blobs = clients(app).blobs
    frame, snapshot = photo("person").read_bytes(), photo("dog").read_bytes()
    legacy = photo("horses").read_bytes()
    oldest = _event(app, owner, 30, image=legacy)  # written before the blob store
    with_blobs = _event(
        app, owner, 20, image_key=blobs.put(frame), snapshot_key=blobs.put(snapshot)
    )
    by_url = _event(app, owner, 10)
    other = make_owner(app, client, "bob@example.com")
    _event(app, other, 5, image_key=blobs.put(frame))  # another home's: not exported

    response = client.get(f"/homes/{owner.home_id}/export", headers=owner.headers)

    assert response.mimetype == "application/zip" and response.is_streamed
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="vigil-home-{owner.home_id}-')
    assert disposition.endswith('.zip"') and response.headers["Cache-Control"] == "no-store"
    archive = _zip(response)
    assert archive.testzip() is None
    assert sorted(archive.namelist()) == sorted(
        [
            "events.json",
            "notifications.json",
            f"images/{oldest}.jpg",
            f"images/{with_blobs}.jpg",
            f"snapshots/{with_blobs}.jpg",
        ]
    )
    assert archive.read(f"images/{oldest}.jpg") == legacy
    assert archive.read(f"images/{with_blobs}.jpg") == frame
    assert archive.read(f"snapshots/{with_blobs}.jpg") == snapshot

    events = json.loads(archive.read("events.json"))
    assert [e["id"] for e in events] == [by_url, with_blobs, oldest]  # newest first
    detail = client.get(f"/events/{with_blobs}", headers=owner.headers).get_json()
    assert events[1] == detail  # as GET /events/<id> shows it, detections and decision
    assert events[1]["detections"][0]["label"] == "person"
    assert events[1]["decision"]["kind"] == "alert"
    notifications = json.loads(archive.read("notifications.json"))
    assert [n["event_id"] for n in notifications] == [by_url, with_blobs, oldest]
    assert all(n["home_id"] == owner.home_id for n in notifications)


def test_an_empty_home_exports_empty_lists(client, owner):
    archive = _zip(client.get(f"/homes/{owner.home_id}/export", headers=owner.headers))
    assert sorted(archive.namelist()) == ["events.json", "notifications.json"]
    assert json.loads(archive.read("events.json")) == []
    assert json.loads(archive.read("notifications.json")) == []


def test_only_owners_export(app, client, owner):
    people = {role: make_owner(app, client, f"{role}@example.com") for role in ("member", "viewer")}
    with clients(app).pool.connection() as conn:
        for role, person in people.items():
            conn.execute(
                "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, %s)",
                (owner.home_id, person.user_id, role),
            )
    outsider = make_owner(app, client, "dan@example.com")
    url = f"/homes/{owner.home_id}/export"
    for person in people.values():
        refused = client.get(url, headers=person.headers)
        assert (refused.status_code, error_code(refused)) == (403, "role_forbidden")
    unknown = client.get(url, headers=outsider.headers)
    assert (unknown.status_code, error_code(unknown)) == (404, "home_not_found")
    assert client.get(url).status_code == 401


PICTURES = 40
PICTURE_BYTES = 256 * 1024  # random: a zip cannot make it smaller


def test_a_big_home_is_streamed_holding_about_one_picture_at_a_time(app, client, owner, tmp_path):
    """40 events with two pictures each (20 MiB, incompressible): the export's chunks are
    handed out as they are made, and the memory Python holds while reading all of them
    stays below what a few pictures and a page of JSON take, far from the whole zip."""
    blobs = clients(app).blobs
    for n in range(PICTURES):
        keys = {
            "image_key": blobs.put(secrets.token_bytes(PICTURE_BYTES)),
            "snapshot_key": blobs.put(secrets.token_bytes(PICTURE_BYTES)),
        }
        _event(app, owner, n + 1, **keys)
    total = 2 * PICTURES * PICTURE_BYTES

    response = client.get(f"/homes/{owner.home_id}/export", headers=owner.headers)
    assert response.status_code == 200 and response.is_streamed
    chunks = 0
    saved = tmp_path / "export.zip"
    tracemalloc.start()
    try:
        with saved.open("wb") as out:  # as a browser saves it: nothing kept in memory
            for chunk in response.response:
                chunks += 1
                out.write(chunk)
                del chunk
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        response.close()
    assert saved.stat().st_size > total  # every picture went out
    assert chunks >= 2 * PICTURES  # a chunk or more per picture, none holding them all
    assert peak < 4 * PICTURE_BYTES + 1024 * 1024, peak  # a buffered zip would hold 20 MiB
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        assert len(archive.namelist()) == 2 + 2 * PICTURES
        assert len(json.loads(archive.read("events.json"))) == PICTURES
