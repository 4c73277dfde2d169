"""The authorization matrix: every route of the API × {owner, member, viewer, outsider, removed
member}, with the status each must get.

The table below is keyed by the route table (``webapp.operations.OPERATIONS``): a route
missing from it fails ``test_every_route_is_in_the_matrix``, so a new route cannot ship
without saying who may call it. Each case runs against a fresh household:

* ana owns the home (the account holder) with two cameras, cam1 and cam2;
* bob is a member, with his phone; cleo a viewer of cam1 only, with her phone;
* dan is an outsider with a home of his own; eve was a member and was removed;
* fay is a member other members' changes are tried on.

An analysed event of cam1 (with its upload and snapshot), its alert, a pending invitation
and the owner's snooze of cam1 exist. Personas are tried refused ones first, so a route that
changes something (a removal, a new key) is tried by the one allowed persona last, on an
unchanged home.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from notify.snoozes import add_snooze
from notify.zones import insert_zone
from tests.api_helpers import add_device, bearer, make_owner
from tests.photos import photo
from vigil.vocabulary import ZoneKind
from webapp.clients import clients
from webapp.operations import OPERATIONS, Operation
from webapp.tokens import start_session

pytestmark = pytest.mark.integration

PERSONAS = ("outsider", "removed", "viewer", "member", "owner")  # refused ones first

# Routes no home scopes: who may call them is decided by their credentials alone, and
# their own tests cover it (auth, invitation tokens, the service routes).
NOT_SCOPED = {
    "POST /auth/login",
    "POST /auth/register",
    "POST /auth/refresh",
    "POST /auth/logout",
    "POST /auth/join",
    "POST /invitations/accept",
    "GET /health",
    "GET /metrics",
    "GET /openapi.json",
    # Authenticated by the push's action token in its body, never a user's JWT: who may act
    # is the phone's member (tests/test_actions.py, tests/test_api_actions.py).
    "POST /notifications/{notification_id}/actions",
    # The caller's own account, and a deletion's progress read with its status token or
    # by the user who asked (tests/test_api_deletion.py).
    "DELETE /users/me",
    "GET /deletions/{job_id}",
}

OK, FORBIDDEN, MISSING = "ok", 403, 404
EVERYONE = {"owner": OK, "member": OK, "viewer": OK, "outsider": MISSING, "removed": MISSING}
MEMBERS = {**EVERYONE, "viewer": FORBIDDEN}
OWNERS = {**MEMBERS, "member": FORBIDDEN}
# The viewer's camera list covers the cases' camera (cam1), but not the whole home.
WHOLE_HOME = {**EVERYONE, "viewer": FORBIDDEN}
# A member's own row (the world's snooze is the owner's): every other member finds none.
OWNERS_OWN = {**EVERYONE, "viewer": MISSING, "member": MISSING}


@dataclass(frozen=True)
class Case:
    """How to call a route, and who gets what."""

    expect: Mapping[str, Any]
    body: Callable[[World], Any] | None = None
    query: Callable[[World], Mapping[str, Any]] | None = None
    upload: bool = False


@dataclass
class World:
    home_id: int
    cam1: int
    cam2: int
    event_id: int
    notification_id: int
    invitation_id: int
    fay: int
    headers: dict[str, dict[str, str]]
    zone_id: int = 0  # an ignore zone of cam1
    snooze_id: int = 0  # the owner's snooze of cam1

    def path_value(self, name: str) -> int:
        return {
            "home_id": self.home_id,
            "event_id": self.event_id,
            "device_id": self.cam1,
            "notification_id": self.notification_id,
            "invitation_id": self.invitation_id,
            "user_id": self.fay,
            "zone_id": self.zone_id,
            "snooze_id": self.snooze_id,
        }[name]


def _event(world: World) -> dict[str, Any]:
    return {
        "image_url": "https://example.com/a.jpg",
        "device_id": world.cam1,
        "location": "front_door",
        "mode": "security",
        "motion_score": 0.5,
    }


MATRIX: dict[str, Case] = {
    "GET /homes/{home_id}": Case(EVERYONE),
    "PATCH /homes/{home_id}": Case(MEMBERS, body=lambda w: {"arm_mode": "night"}),
    "GET /homes/{home_id}/policy": Case(EVERYONE),
    "PUT /homes/{home_id}/policy": Case(OWNERS, body=lambda w: {"cooldown_s": 60}),
    "PATCH /homes/{home_id}/policy": Case(OWNERS, body=lambda w: {"hourly_budget": 3}),
    "GET /devices/{device_id}": Case(EVERYONE),
    "DELETE /devices/{device_id}": Case(OWNERS),
    "POST /devices/{device_id}/key": Case(OWNERS),
    "DELETE /devices/{device_id}/key": Case(OWNERS),  # the owner's try finds no key: 404
    "GET /devices/{device_id}/zones": Case(EVERYONE),
    "POST /devices/{device_id}/zones": Case(
        OWNERS,
        body=lambda w: {
            "name": f"zone-{secrets.token_hex(3)}",
            "kind": "alert",
            "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0]],
        },
    ),
    "GET /devices/{device_id}/zones/{zone_id}": Case(EVERYONE),
    "PUT /devices/{device_id}/zones/{zone_id}": Case(
        OWNERS,
        body=lambda w: {"name": "porch", "kind": "ignore", "polygon": [[0, 0], [1, 0], [1, 1]]},
    ),
    "DELETE /devices/{device_id}/zones/{zone_id}": Case(OWNERS),
    "GET /events/{event_id}": Case(EVERYONE),
    "GET /events/{event_id}/image": Case(EVERYONE),
    "GET /events/{event_id}/snapshot": Case(EVERYONE),
    "GET /notifications/{notification_id}": Case(EVERYONE),
    "POST /notifications/{notification_id}/read": Case(EVERYONE),
    "POST /notifications/{notification_id}/ack": Case(EVERYONE),
    "GET /homes": Case({persona: OK for persona in PERSONAS}),
    "GET /devices": Case(EVERYONE, query=lambda w: {"home_id": w.home_id}),
    "POST /devices": Case(
        OWNERS,  # a camera is the owners' to add
        body=lambda w: {
            "home_id": w.home_id,
            "kind": "camera",
            "platform": "camera",
            "name": f"cam-{secrets.token_hex(3)}",
        },
    ),
    "POST /events": Case(MEMBERS, body=_event),
    "GET /events": Case(EVERYONE, query=lambda w: {"home_id": w.home_id}),
    "GET /notifications": Case(EVERYONE, query=lambda w: {"home_id": w.home_id}),
    "GET /stream": Case(WHOLE_HOME, query=lambda w: {"home_id": w.home_id}),
    "GET /homes/{home_id}/members": Case(EVERYONE),
    "PATCH /homes/{home_id}/members/{user_id}": Case(OWNERS, body=lambda w: {"role": "viewer"}),
    "DELETE /homes/{home_id}/members/{user_id}": Case(OWNERS),
    "GET /homes/{home_id}/invitations": Case(OWNERS),
    "POST /homes/{home_id}/invitations": Case(
        OWNERS, body=lambda w: {"email": f"{secrets.token_hex(4)}@example.com"}
    ),
    "DELETE /homes/{home_id}/invitations/{invitation_id}": Case(OWNERS),
    "GET /homes/{home_id}/audit": Case(OWNERS),
    "GET /homes/{home_id}/export": Case(OWNERS),
    # The owner tries last: the home is deleted once every refusal was checked.
    "DELETE /homes/{home_id}": Case(OWNERS),
    "GET /homes/{home_id}/preferences": Case(EVERYONE),
    "PATCH /homes/{home_id}/preferences": Case(EVERYONE, body=lambda w: {"summaries": False}),
    "GET /homes/{home_id}/snoozes": Case(EVERYONE),
    "POST /homes/{home_id}/snoozes": Case(
        EVERYONE, body=lambda w: {"device_id": w.cam1, "for_s": 3600}
    ),
    "DELETE /homes/{home_id}/snoozes/{snooze_id}": Case(OWNERS_OWN),
    "GET /homes/{home_id}/escalation": Case(EVERYONE),
    "PUT /homes/{home_id}/escalation": Case(OWNERS, body=lambda w: {"members": [w.fay]}),
}
# Why a member is refused: their role, or (the live stream) their camera list.
FORBIDDEN_CODES = {"role_forbidden", "camera_list_stream"}
# Statuses an allowed caller may get besides 2xx: the owner's DELETE of a key finds none.
ALLOWED_MISSES = {"DELETE /devices/{device_id}/key": {"device_key_not_found"}}


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"STREAM_MAX_S": 0.2, "STREAM_KEEPALIVE_S": 0.1}


def _user(pool: ConnectionPool, email: str) -> int:
    with pool.connection() as conn:
        return conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, 'not a usable hash')"
            " RETURNING id",
            (email,),
        ).fetchone()["id"]


def _join(pool: ConnectionPool, home_id: int, user_id: int, role: str, cameras=None) -> None:
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s)",
            (home_id, user_id, role, cameras),
        )
        conn.execute(
            "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
            " VALUES (%s, %s, 'phone', 'android', %s, %s)",
            (home_id, user_id, f"phone-{user_id}", f"token-{user_id}-{secrets.token_hex(8)}"),
        )


def _headers(app: Flask, user_id: int) -> dict[str, str]:
    with app.test_request_context():
        pair = start_session(user_id)
    assert pair is not None
    return bearer(pair.access_token)


@pytest.fixture
def world(app: Flask, client: FlaskClient) -> World:
    ana = make_owner(app, client, "ana@example.com")
    dan = make_owner(app, client, "dan@example.com")
    pool = clients(app).pool
    home = ana.home_id
    cam2 = add_device(pool, home, "cam2")
    users = {name: _user(pool, f"{name}@example.com") for name in ("bob", "cleo", "eve", "fay")}
    _join(pool, home, users["bob"], "member")
    _join(pool, home, users["cleo"], "viewer", [ana.device_id])
    _join(pool, home, users["eve"], "member")
    _join(pool, home, users["fay"], "member")
    headers = {
        "owner": ana.headers,
        "outsider": dan.headers,
        "member": _headers(app, users["bob"]),
        "viewer": _headers(app, users["cleo"]),
        "removed": _headers(app, users["eve"]),
    }
    picture = clients(app).blobs.put(photo("person").read_bytes())  # upload and snapshot
    with pool.connection() as conn:
        conn.execute("DELETE FROM home_members WHERE user_id = %s", (users["eve"],))
        event_id = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, image_key,"
            " snapshot_key, status, analyzed_at, digest, digest_reason)"
            " VALUES (%s, %s, 'front_door', 'security', 0.9, %s, %s, 'analyzed', now(),"
            " 'alert', 'armed') RETURNING id",
            (home, ana.device_id, picture, picture),
        ).fetchone()["id"]
        notification_id = conn.execute(
            "INSERT INTO notifications (home_id, event_id, kind, title, body, location,"
            " labels, reason) VALUES (%s, %s, 'alert', 'Person', 'At the front door',"
            " 'front_door', '{person}', 'armed') RETURNING id",
            (home, event_id),
        ).fetchone()["id"]
        invitation_id = conn.execute(
            "INSERT INTO invitations (home_id, email, role, token_hash, invited_by, expires_at)"
            " VALUES (%s, 'gus@example.com', 'member', %s, %s, now() + interval '1 day')"
            " RETURNING id",
            (home, secrets.token_bytes(32), ana.user_id),
        ).fetchone()["id"]
        zone_id = insert_zone(
            conn, ana.device_id, home, "bins", ZoneKind.IGNORE, [(0, 0), (0.2, 0), (0.2, 0.2)]
        )
        until = conn.execute("SELECT now() + interval '1 hour' AS until").fetchone()["until"]
        snooze_id = add_snooze(conn, home, ana.user_id, until, device_id=ana.device_id)
    return World(
        home,
        ana.device_id,
        cam2,
        event_id,
        notification_id,
        invitation_id,
        users["fay"],
        headers,
        zone_id,
        snooze_id,
    )


def _path(operation: Operation, world: World) -> str:
    path = operation.path
    for name in operation.ids:
        path = path.replace("{" + name + "}", str(world.path_value(name)))
    return path


def _call(client: FlaskClient, operation: Operation, case: Case, world: World, persona: str):
    kwargs: dict[str, Any] = {"headers": world.headers[persona]}
    if case.body is not None:
        kwargs["json"] = case.body(world)
    if case.query is not None:
        kwargs["query_string"] = case.query(world)
    response = client.open(_path(operation, world), method=operation.method.upper(), **kwargs)
    if response.mimetype == "text/event-stream":
        response.get_data()  # the stream ends after STREAM_MAX_S
    return response


SCOPED = [op for op in OPERATIONS if op.route not in NOT_SCOPED]


def test_every_route_is_in_the_matrix():
    routes = {op.route for op in OPERATIONS}
    assert set(MATRIX) == routes - NOT_SCOPED, "every route must say who may call it"
    assert NOT_SCOPED <= routes, "a route listed as not scoped is gone"
    for op in SCOPED:
        assert op.auth != "public", f"{op.route} is public, so it scopes no home"


@pytest.mark.parametrize("operation", SCOPED, ids=[op.route for op in SCOPED])
def test_each_persona_gets_what_its_role_allows(client, world, operation):
    case = MATRIX[operation.route]
    got = {}
    for persona in PERSONAS:
        response = _call(client, operation, case, world, persona)
        body = response.get_json(silent=True)
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        status = response.status_code
        expected = case.expect[persona]
        if expected == OK and status == 404 and code in ALLOWED_MISSES.get(operation.route, ()):
            status = 200
        got[persona] = (
            OK if expected == OK and 200 <= status < 300 else status,
            code,
        )
        if expected == FORBIDDEN:
            assert code in FORBIDDEN_CODES, (persona, operation.route, body)
        if expected == MISSING:
            assert code is not None and code.endswith("_not_found"), (persona, body)
    assert {persona: got[persona][0] for persona in PERSONAS} == dict(case.expect), got
