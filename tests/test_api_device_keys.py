"""Device keys: a camera's own key posts its own events (JSON body or upload) and nothing
else; rotation, revocation and deleting the device end it at once; it is shown once and
stored hashed."""

from __future__ import annotations

import hashlib
import re

import pytest

from tests.api_helpers import (
    SOURCE_EVENT,
    add_device,
    bearer,
    count,
    error_code,
    issue_device_key,
    photo_upload,
)
from webapp import device_keys
from webapp.clients import clients
from webapp.operations import OPERATIONS

pytestmark = pytest.mark.integration


def _post(client, key, **changes):
    return client.post("/events", json={**SOURCE_EVENT, **changes}, headers=bearer(key))


def _secret(key: str) -> str:
    """The part after ``vk_<16 hex digits>_`` (it may itself contain ``_``)."""
    return key[len("vk_") + 16 + 1 :]


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert error_code(response) == code
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_device_key_posts_its_own_devices_events_as_json_and_upload(client, owner, db):
    key = issue_device_key(client, owner)
    by_name = _post(client, key)  # the source's body as written: device_id is the name
    assert by_name.status_code == 202, by_name.get_json()
    by_id = _post(client, key, device_id=owner.device_id)
    assert by_id.status_code == 202
    upload = client.post("/events", data=photo_upload(), headers=bearer(key))
    assert upload.status_code == 202, upload.get_json()
    with db.connection() as conn:
        rows = conn.execute("SELECT home_id, device_id FROM events ORDER BY id").fetchall()
    assert [(r["home_id"], r["device_id"]) for r in rows] == [(owner.home_id, owner.device_id)] * 3
    # The owner reads them with their own token, as any event.
    event = client.get(f"/events/{upload.get_json()['event_id']}", headers=owner.headers)
    assert event.status_code == 200 and event.get_json()["has_image"]


def test_a_device_key_is_refused_for_another_devices_events(app, client, owner, bob, db):
    other = add_device(clients(app).pool, owner.home_id, "garage_cam")
    key = issue_device_key(client, owner)
    for device in (other, "garage_cam", str(other), bob.device_id):
        _refused(_post(client, key, device_id=device), 403, "device_key_wrong_device")
    # Another user's device with the same name is not this key's device either.
    bob_key = issue_device_key(client, bob)
    _refused(_post(client, bob_key, device_id=owner.device_id), 403, "device_key_wrong_device")
    assert count(db, "events") == 0


def _concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", "1", path)


OTHER_ROUTES = [op for op in OPERATIONS if op.operation_id != "create_event"]


@pytest.mark.parametrize("op", OTHER_ROUTES, ids=[op.route for op in OTHER_ROUTES])
def test_every_other_route_refuses_a_device_key_with_a_json_403(client, owner, op, db):
    key = issue_device_key(client, owner)
    response = client.open(
        _concrete(op.path), method=op.method.upper(), headers=bearer(key), json={}
    )
    _refused(response, 403, "device_key_not_allowed")
    assert "POST /events" in response.get_json()["error"]["message"]


def test_the_interactive_docs_refuse_a_device_key_too(client, owner):
    key = issue_device_key(client, owner)
    _refused(client.get("/docs/", headers=bearer(key)), 403, "device_key_not_allowed")


def test_rotation_kills_the_old_key_at_once(client, owner):
    old = issue_device_key(client, owner)
    assert _post(client, old).status_code == 202
    rotated = client.post(f"/devices/{owner.device_id}/key", headers=owner.headers)
    assert rotated.status_code == 201
    new = rotated.get_json()
    assert new["replaced_key_id"] == device_keys.parse_key_id(old)
    _refused(_post(client, old), 401, "device_key_revoked")
    assert _post(client, new["key"]).status_code == 202


def test_revocation_kills_the_key_at_once(client, owner, db):
    key = issue_device_key(client, owner)
    assert _post(client, key).status_code == 202
    revoked = client.delete(f"/devices/{owner.device_id}/key", headers=owner.headers)
    assert revoked.status_code == 204
    _refused(_post(client, key), 401, "device_key_revoked")
    again = client.delete(f"/devices/{owner.device_id}/key", headers=owner.headers)
    _refused(again, 404, "device_key_not_found")
    assert count(db, "events") == 1
    # The owner's own token still posts for the device.
    assert client.post("/events", json=SOURCE_EVENT, headers=owner.headers).status_code == 202


def test_deleting_the_device_kills_its_key(client, owner, db):
    key = issue_device_key(client, owner)
    assert client.delete(f"/devices/{owner.device_id}", headers=owner.headers).status_code == 204
    _refused(_post(client, key), 401, "device_key_invalid")
    assert count(db, "device_keys") == 0


def test_a_disabled_owners_device_keys_are_refused(app, client, owner):
    key = issue_device_key(client, owner)
    with clients(app).pool.connection() as conn:
        conn.execute("UPDATE users SET disabled_at = now() WHERE id = %s", (owner.user_id,))
    _refused(_post(client, key), 403, "account_disabled")


def test_malformed_unknown_and_forged_keys_are_401(client, owner):
    key = issue_device_key(client, owner)
    key_id = device_keys.parse_key_id(key)
    assert key_id is not None
    forged = f"vk_{key_id}_{'A' * 43}"  # the right id, another secret
    for bad in ("vk_", "vk_nothex_x", key + "x", forged, f"vk_{'0' * 16}_{'A' * 43}"):
        _refused(_post(client, bad), 401, "device_key_invalid")


def test_the_key_is_shown_once_never_by_a_read(client, owner):
    issued = client.post(f"/devices/{owner.device_id}/key", headers=owner.headers)
    assert issued.headers["Cache-Control"] == "no-store"
    key, key_id = issued.get_json()["key"], issued.get_json()["key_id"]
    assert re.fullmatch(r"vk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key) and key_id in key
    secret = _secret(key)[-20:]
    one = client.get(f"/devices/{owner.device_id}", headers=owner.headers)
    listed = client.get("/devices", headers=owner.headers)
    for response in (one, listed):
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert key_id in text and secret not in text and "vk_" not in text
    assert one.get_json()["key"]["key_id"] == key_id


def test_the_key_is_stored_as_its_sha256_only(client, owner, db):
    key = issue_device_key(client, owner)
    with db.connection() as conn:
        row = conn.execute("SELECT * FROM device_keys").fetchone()
        dumped = conn.execute("SELECT d::text AS t FROM device_keys d").fetchone()["t"]
    assert bytes(row["secret_hash"]) == hashlib.sha256(key.encode()).digest()
    assert row["id"] == device_keys.parse_key_id(key) and row["revoked_at"] is None
    secret = _secret(key)
    assert secret not in dumped and key not in dumped


def test_only_the_owner_issues_or_revokes_a_devices_key(client, owner, bob):
    for method in ("POST", "DELETE"):
        response = client.open(
            f"/devices/{owner.device_id}/key", method=method, headers=bob.headers
        )
        _refused(response, 404, "device_not_found")
    key = issue_device_key(client, owner)
    # A device key cannot mint or revoke keys, its own included.
    _refused(
        client.post(f"/devices/{owner.device_id}/key", headers=bearer(key)),
        403,
        "device_key_not_allowed",
    )


def test_devices_are_listed_per_home_with_their_keys_public_part(client, owner, bob):
    listed = client.get(f"/devices?home_id={owner.home_id}", headers=owner.headers).get_json()
    assert [d["id"] for d in listed["devices"]] == [owner.device_id]
    assert listed["devices"][0]["key"] is None
    issue_device_key(client, owner)
    (device,) = client.get("/devices", headers=owner.headers).get_json()["devices"]
    assert set(device["key"]) == {"key_id", "created_at"}
    theirs = client.get(f"/devices?home_id={bob.home_id}", headers=owner.headers)
    _refused(theirs, 404, "home_not_found")
    _refused(
        client.get(f"/devices/{bob.device_id}", headers=owner.headers), 404, "device_not_found"
    )


@pytest.mark.unit
def test_keys_are_256_random_bits_behind_a_public_id():
    key_id, key = device_keys.make_key()
    assert device_keys.parse_key_id(key) == key_id and key.startswith(f"vk_{key_id}_")
    assert len(_secret(key)) == 43  # 32 bytes, base64url
    assert device_keys.make_key()[1] != key
    assert device_keys.key_hash(key) == hashlib.sha256(key.encode()).digest()
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"
    assert not device_keys.looks_like_key(jwt_like) and device_keys.parse_key_id(jwt_like) is None
    for bad in (key + "=", key.replace("vk_", "VK_"), f"vk_ABCDEF0123456789_{'A' * 43}"):
        assert device_keys.parse_key_id(bad) is None
