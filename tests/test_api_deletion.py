"""Deleting a home (``DELETE /homes/<id>``) or one's account (``DELETE /users/me``) over the
API, and following it with ``GET /deletions/<id>``: gone for the household at once, ingest
refused, progress readable with the status token, done with nothing left."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from store.deletion import run_deletion_jobs
from tasks.deletion import QUEUE, sweep_deletions
from tests.api_helpers import (
    PASSWORD,
    Owner,
    bearer,
    error_code,
    make_owner,
    photo_upload,
    post_event,
    queued_tasks,
)
from webapp.clients import clients
from webapp.deletions import TOKEN_HEADER

pytestmark = pytest.mark.integration

LONG_AGO_S = 24 * 3600.0


@pytest.fixture
def app_config() -> dict[str, Any]:
    # Few password guesses before DELETE /users/me is limited, as a login would be.
    return {"LOGIN_LIMIT_ACCOUNT": "3/minute"}


def _join(app, home_id: int, member: Owner, role: str) -> None:
    with clients(app).pool.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role) VALUES (%s, %s, %s)",
            (home_id, member.user_id, role),
        )


@pytest.fixture
def household(app, client) -> dict[str, Owner]:
    """ana holds the home (the ``owner`` fixture's); bob is a member and cleo a viewer of it,
    each with a home of their own; dan is an outsider."""
    people = {
        name: make_owner(app, client, f"{name}@example.com")
        for name in ("ana", "bob", "cleo", "dan")
    }
    _join(app, people["ana"].home_id, people["bob"], "member")
    _join(app, people["ana"].home_id, people["cleo"], "viewer")
    return people


def _run_jobs(app, **kwargs: Any) -> Any:
    pool, blobs = clients(app).pool, clients(app).blobs
    return run_deletion_jobs(pool, blobs, kwargs.pop("batch", 500), 10, **kwargs)


def _age_pictures(app, home_id: int) -> None:
    """Make the home's uploads look old: past the collector's grace for fresh writes."""
    blobs = clients(app).blobs
    with clients(app).pool.connection() as conn:
        keys = [
            row["image_key"]
            for row in conn.execute(
                "SELECT image_key FROM events WHERE home_id = %s AND image_key IS NOT NULL",
                (home_id,),
            ).fetchall()
        ]
    old = time.time() - LONG_AGO_S
    for key in keys:
        os.utime(blobs.path(key), (old, old))
    assert keys


def _status(client, job_id: int, token: str) -> Any:
    return client.get(f"/deletions/{job_id}", headers={TOKEN_HEADER: token})


def test_an_owner_deletes_the_home_and_follows_the_job_to_done(app, client, household, broker):
    ana, bob, cleo, dan = (household[name] for name in ("ana", "bob", "cleo", "dan"))
    home = ana.home_id
    for _ in range(3):
        assert post_event(client, ana).status_code == 202
    upload = client.post("/events", data=photo_upload(), headers=ana.headers)
    assert upload.status_code == 202
    _age_pictures(app, home)

    # Refused to the household's other roles and unknown to others.
    for person, status, code in (
        (bob, 403, "role_forbidden"),
        (cleo, 403, "role_forbidden"),
        (dan, 404, "home_not_found"),
    ):
        refused = client.delete(f"/homes/{home}", headers=person.headers)
        assert (refused.status_code, error_code(refused)) == (status, code)

    answer = client.delete(f"/homes/{home}", headers=ana.headers)
    assert answer.status_code == 202, answer.get_json()
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.get_json()
    job, token = body["job"], body["status_token"]
    assert token.startswith("vd_") and body["status_url"] == f"/deletions/{job['id']}"
    assert answer.headers["Location"] == body["status_url"]
    assert job["kind"] == "home" and job["state"] == "pending"
    assert job["events_deleted"] == 0 and job["blobs_deleted"] == 0
    # The sweep is sent at once (no countdown), to the queue its definition names.
    assert queued_tasks(broker, QUEUE) == [(sweep_deletions.name, [])]

    # Gone for the household at once, and its ingest refuses events before accepting any.
    refused = post_event(client, ana)
    assert (refused.status_code, error_code(refused)) == (409, "home_being_deleted")
    for person in (ana, bob, cleo):
        gone = client.get(f"/homes/{home}", headers=person.headers)
        assert (gone.status_code, error_code(gone)) == (404, "home_not_found")
        listed = client.get("/homes", headers=person.headers).get_json()["homes"]
        assert home not in {h["id"] for h in listed}
    again = client.delete(f"/homes/{home}", headers=ana.headers)
    assert (again.status_code, error_code(again)) == (404, "home_not_found")

    # Progress, with the token or the requester's own login; nobody else reads it.
    pending = _status(client, job["id"], token)
    assert pending.status_code == 200 and pending.headers["Cache-Control"] == "no-store"
    assert pending.get_json()["state"] == "pending" and "leftovers" not in pending.get_json()
    assert client.get(f"/deletions/{job['id']}", headers=ana.headers).status_code == 200
    for headers in (bob.headers, {TOKEN_HEADER: "vd_wrong"}, {TOKEN_HEADER: token + "x"}):
        unknown = client.get(f"/deletions/{job['id']}", headers=headers)
        assert (unknown.status_code, error_code(unknown)) == (404, "deletion_not_found")
    other_job = _status(client, job["id"] + 1, token)
    assert (other_job.status_code, error_code(other_job)) == (404, "deletion_not_found")
    anonymous = client.get(f"/deletions/{job['id']}")
    assert (anonymous.status_code, error_code(anonymous)) == (401, "token_missing")

    first = _run_jobs(app, batch=1, budget_s=0.0)  # one batch, then handed back
    assert first.later == (job["id"],)
    running = _status(client, job["id"], token).get_json()
    assert running["state"] == "running" and running["events_deleted"] == 1
    assert running["started_at"] is not None and running["finished_at"] is None

    assert _run_jobs(app).done == (job["id"],)
    done = _status(client, job["id"], token).get_json()
    assert done["state"] == "done" and done["error"] is None
    assert done["events_deleted"] == 4 and done["blobs_deleted"] == 1
    assert done["finished_at"] is not None
    assert done["leftovers"] == {
        "homes": 0,
        "events": 0,
        "notifications": 0,
        "devices": 0,
        "members": 0,
        "blobs": 0,
    }
    # The household's members keep their own homes and logins.
    for person in (bob, cleo):
        mine = client.get(f"/homes/{person.home_id}", headers=person.headers)
        assert mine.status_code == 200


def test_deleting_my_account_needs_my_password_and_ends_my_sessions_at_once(app, client, household):
    ana, bob = household["ana"], household["bob"]
    url = "/users/me"
    no_body = client.delete(url, headers=bob.headers)
    assert (no_body.status_code, error_code(no_body)) == (415, "unsupported_media_type")
    empty = client.delete(url, json={}, headers=bob.headers)
    assert (empty.status_code, error_code(empty)) == (422, "validation_failed")
    wrong = client.delete(url, json={"password": "not it"}, headers=bob.headers)
    assert (wrong.status_code, error_code(wrong)) == (403, "password_incorrect")
    assert client.get("/homes", headers=bob.headers).status_code == 200  # nothing changed

    answer = client.delete(url, json={"password": PASSWORD}, headers=bob.headers)
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    job, token = body["job"], body["status_token"]
    assert job["kind"] == "account" and job["state"] == "pending"

    # Every session ends at once, and the account can no longer log in.
    ended = client.get("/homes", headers=bob.headers)
    assert (ended.status_code, error_code(ended)) == (401, "token_revoked")
    refresh = client.post("/auth/refresh", headers=bearer(bob.refresh))
    assert refresh.status_code == 401
    login = client.post("/auth/login", json={"email": bob.email, "password": PASSWORD})
    assert (login.status_code, error_code(login)) == (403, "account_disabled")
    # The home he holds is gone for its members at once.
    gone = client.get(f"/homes/{bob.home_id}", headers=bob.headers)
    assert gone.status_code == 401

    assert _status(client, job["id"], token).get_json()["state"] == "pending"
    assert _run_jobs(app).done == (job["id"],)
    done = _status(client, job["id"], token).get_json()  # the token outlives the account
    assert done["state"] == "done" and done["events_deleted"] == 0
    assert set(done["leftovers"]) == {
        "users",
        "sessions",
        "memberships",
        "devices",
        "homes",
        "events",
        "notifications",
        "blobs",
    }
    assert set(done["leftovers"].values()) == {0}
    login = client.post("/auth/login", json={"email": bob.email, "password": PASSWORD})
    assert (login.status_code, error_code(login)) == (401, "invalid_credentials")
    # Ana's home is intact, without him; its trail says he left.
    assert client.get(f"/homes/{ana.home_id}", headers=ana.headers).status_code == 200
    members = client.get(f"/homes/{ana.home_id}/members", headers=ana.headers).get_json()
    assert bob.user_id not in {m["user_id"] for m in members["members"]}
    trail = client.get(
        f"/homes/{ana.home_id}/audit",
        query_string={"action": "member_removed"},
        headers=ana.headers,
    ).get_json()["entries"]
    assert [entry["details"] for entry in trail] == [
        {"user_id": bob.user_id, "left": True, "account_deleted": True}
    ]


def test_password_guesses_count_with_failed_logins(app, client, household):
    cleo = household["cleo"]
    statuses = [
        client.delete("/users/me", json={"password": f"guess {n}"}, headers=cleo.headers)
        for n in range(4)
    ]
    assert [r.status_code for r in statuses] == [403, 403, 403, 429]
    assert error_code(statuses[-1]) == "rate_limited"
    # Locked like a login: the right password waits too, and nothing was deleted.
    locked = client.delete("/users/me", json={"password": PASSWORD}, headers=cleo.headers)
    assert locked.status_code == 429
    assert client.get("/homes", headers=cleo.headers).status_code == 200
