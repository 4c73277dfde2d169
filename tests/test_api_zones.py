"""Activity zones: GET/POST /devices/<id>/zones and GET/PUT/DELETE
/devices/<id>/zones/<zone_id>. Whoever sees a camera reads its zones, its owners change
them; a bad polygon, a taken name or one zone too many is refused with nothing written, and
a phone has no zones."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from notify.zones import MAX_ZONES_PER_CAMERA, camera_zones
from tests.api_helpers import add_device, count, error_code
from vigil.vocabulary import PresenceGroup, ZoneKind
from webapp.clients import clients

pytestmark = pytest.mark.integration

TRIANGLE = [[0.1, 0.5], [0.9, 0.5], [0.5, 1.0]]
DRIVEWAY = {
    "name": "driveway",
    "kind": "alert",
    "groups": ["person", "vehicle"],
    "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]],
}


def at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def zones_path(device_id: int, zone_id: int | None = None) -> str:
    base = f"/devices/{device_id}/zones"
    return base if zone_id is None else f"{base}/{zone_id}"


def join(db, home_id: int, user_id: int, role: str, cameras: list[int] | None = None) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s)",
            (home_id, user_id, role, cameras),
        )


def create(client, owner, body: dict[str, Any] | None = None, device_id: int | None = None):
    device = owner.device_id if device_id is None else device_id
    return client.post(zones_path(device), json=body or DRIVEWAY, headers=owner.headers)


def created(client, owner, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = create(client, owner, body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_an_owner_creates_reads_replaces_and_deletes_a_zone(client, owner, db):
    zone = created(client, owner)
    assert zone["device_id"] == owner.device_id and zone["name"] == "driveway"
    assert zone["kind"] == "alert" and zone["groups"] == ["person", "vehicle"]
    assert zone["polygon"] == DRIVEWAY["polygon"]
    assert zone["created_at"] == zone["updated_at"]
    path = zones_path(owner.device_id, zone["id"])
    assert client.get(path, headers=owner.headers).get_json() == zone
    listed = client.get(zones_path(owner.device_id), headers=owner.headers)
    assert listed.status_code == 200 and listed.get_json() == {"zones": [zone]}
    # what the digest reads
    with db.connection() as conn:
        (stored,) = camera_zones(conn, owner.device_id)
    assert stored.kind is ZoneKind.ALERT and stored.name == "driveway"
    assert stored.groups == frozenset({PresenceGroup.PERSON, PresenceGroup.VEHICLE})
    assert stored.polygon == ((0.1, 0.5), (0.9, 0.5), (0.9, 1.0), (0.1, 1.0))

    replaced = client.put(
        path, json={"name": "bins", "kind": "ignore", "polygon": TRIANGLE}, headers=owner.headers
    )
    assert replaced.status_code == 200, replaced.get_json()
    body = replaced.get_json()
    assert body["id"] == zone["id"] and body["name"] == "bins" and body["kind"] == "ignore"
    assert body["groups"] is None  # left out of a replacement: every group
    assert body["polygon"] == TRIANGLE
    assert (
        at(body["updated_at"]) > at(zone["updated_at"]) and body["created_at"] == zone["created_at"]
    )
    assert client.get(path, headers=owner.headers).get_json() == body

    deleted = client.delete(path, headers=owner.headers)
    assert deleted.status_code == 204 and deleted.get_data() == b""
    assert error_code(client.get(path, headers=owner.headers)) == "zone_not_found"
    assert error_code(client.delete(path, headers=owner.headers)) == "zone_not_found"
    assert client.get(zones_path(owner.device_id), headers=owner.headers).get_json() == {
        "zones": []
    }
    assert count(db, "zones") == 0


def test_zones_are_listed_oldest_first(client, owner):
    names = ["a", "c", "b"]
    for name in names:
        created(client, owner, {**DRIVEWAY, "name": name})
    listed = client.get(zones_path(owner.device_id), headers=owner.headers).get_json()
    assert [z["name"] for z in listed["zones"]] == names


@pytest.mark.parametrize(
    ("polygon", "problem"),
    [
        ([[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]], "edges 0 and 2 cross or touch"),
        ([[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]], "encloses no area (its points are collinear)"),
        ([[0.1, 0.1], [0.9, 0.1]], "has 2 point(s); a zone needs at least 3"),
        ([[0.5, 0.5]] * 33, "has 33 points; a zone has at most 32"),
        ([[0.1, 0.1], [1.5, 0.1], [0.5, 0.9]], "point 1: x = 1.5 is outside 0..1"),
        ([[0.1, 0.1], [0.9, 0.1], [0.9, 0.1], [0.5, 0.9]], "point 2 repeats point 1"),
    ],
)
def test_a_bad_polygon_is_invalid_polygon_and_nothing_is_written(
    client, owner, db, polygon, problem
):
    response = create(client, owner, {**DRIVEWAY, "polygon": polygon})
    assert response.status_code == 422 and error_code(response) == "invalid_polygon"
    details = response.get_json()["error"]["details"]
    assert {"field": "polygon", "message": problem} in details
    assert count(db, "zones") == 0
    # a replacement is checked the same way and leaves the zone as it was
    zone = created(client, owner)
    path = zones_path(owner.device_id, zone["id"])
    refused = client.put(path, json={**DRIVEWAY, "polygon": polygon}, headers=owner.headers)
    assert error_code(refused) == "invalid_polygon"
    assert client.get(path, headers=owner.headers).get_json() == zone


def test_non_finite_coordinates_are_invalid_polygon(client, owner, db):
    # Python's JSON reads NaN and Infinity; a zone cannot use them.
    raw = '{"name": "x", "kind": "alert", "polygon": [[0.1, 0.1], [NaN, 0.5], [0.5, Infinity]]}'
    response = client.post(
        zones_path(owner.device_id),
        data=raw,
        content_type="application/json",
        headers=owner.headers,
    )
    assert error_code(response) == "invalid_polygon"
    assert [d["message"] for d in response.get_json()["error"]["details"]] == [
        "point 1: x is not a finite number",
        "point 2: y is not a finite number",
    ]
    assert count(db, "zones") == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "maybe"}, "kind"),
        ({"groups": ["person", "person"]}, "groups"),
        ({"groups": []}, "groups"),
        ({"groups": ["car"]}, "groups.0"),
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"polygon": [[0.1, 0.1], [0.9], [0.5, 0.9]]}, "polygon.1.1"),
        ({"polygon": [[0.1, 0.1], [True, 0.5], [0.5, 0.9]]}, "polygon.1.0"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_malformed_body_is_validation_failed_and_nothing_is_written(
    client, owner, db, change, field
):
    response = create(client, owner, {**DRIVEWAY, **change})
    assert response.status_code == 422 and error_code(response) == "validation_failed"
    assert field in [d["field"] for d in response.get_json()["error"]["details"]]
    assert count(db, "zones") == 0


def test_a_taken_name_is_409_on_create_and_on_replace(app, client, owner, db):
    first = created(client, owner)
    again = create(client, owner, {**DRIVEWAY, "polygon": TRIANGLE})
    assert again.status_code == 409 and error_code(again) == "zone_name_taken"
    second = created(client, owner, {**DRIVEWAY, "name": "porch"})
    path = zones_path(owner.device_id, second["id"])
    taken = client.put(path, json=DRIVEWAY, headers=owner.headers)
    assert taken.status_code == 409 and error_code(taken) == "zone_name_taken"
    assert client.get(path, headers=owner.headers).get_json() == second
    # names are per camera: another camera may use it
    cam2 = add_device(clients(app).pool, owner.home_id, "cam2")
    assert create(client, owner, device_id=cam2).status_code == 201
    # keeping its own name is no conflict
    kept = client.put(
        zones_path(owner.device_id, first["id"]), json=DRIVEWAY, headers=owner.headers
    )
    assert kept.status_code == 200
    assert count(db, "zones") == 3


def test_a_camera_has_at_most_sixteen_zones(client, owner, db):
    for i in range(MAX_ZONES_PER_CAMERA):
        created(client, owner, {**DRIVEWAY, "name": f"zone-{i}"})
    over = create(client, owner, {**DRIVEWAY, "name": "one-too-many"})
    assert over.status_code == 422 and error_code(over) == "too_many_zones"
    assert count(db, "zones") == MAX_ZONES_PER_CAMERA
    # replacing one is no new zone; deleting one makes room
    zones = client.get(zones_path(owner.device_id), headers=owner.headers).get_json()["zones"]
    first = zones_path(owner.device_id, zones[0]["id"])
    assert client.put(first, json=DRIVEWAY, headers=owner.headers).status_code == 200
    assert client.delete(first, headers=owner.headers).status_code == 204
    assert create(client, owner, {**DRIVEWAY, "name": "one-too-many"}).status_code == 201


def test_a_phone_has_no_zones(app, client, owner, db):
    phone = add_device(clients(app).pool, owner.home_id, "ana-phone", kind="phone")
    for response in (
        client.get(zones_path(phone), headers=owner.headers),
        create(client, owner, device_id=phone),
        client.get(zones_path(phone, 1), headers=owner.headers),
        client.put(zones_path(phone, 1), json=DRIVEWAY, headers=owner.headers),
        client.delete(zones_path(phone, 1), headers=owner.headers),
    ):
        assert response.status_code == 422 and error_code(response) == "not_a_camera"
    assert count(db, "zones") == 0


def test_members_and_viewers_read_zones_only_owners_change_them(client, owner, bob, db):
    zone = created(client, owner)
    path = zones_path(owner.device_id, zone["id"])
    join(db, owner.home_id, bob.user_id, "member")
    assert client.get(path, headers=bob.headers).get_json() == zone
    assert client.get(zones_path(owner.device_id), headers=bob.headers).status_code == 200
    refused = [
        create(client, bob, device_id=owner.device_id),
        client.put(path, json={**DRIVEWAY, "name": "x"}, headers=bob.headers),
        client.delete(path, headers=bob.headers),
    ]
    assert [(r.status_code, error_code(r)) for r in refused] == [(403, "role_forbidden")] * 3
    with db.connection() as conn:
        conn.execute(
            "UPDATE home_members SET role = 'owner' WHERE home_id = %s AND user_id = %s",
            (owner.home_id, bob.user_id),
        )
    assert client.delete(path, headers=bob.headers).status_code == 204  # any owner may


def test_a_viewer_sees_only_the_zones_of_cameras_on_their_list(app, client, owner, bob, db):
    cam2 = add_device(clients(app).pool, owner.home_id, "cam2")
    zone = created(client, owner)
    join(db, owner.home_id, bob.user_id, "viewer", [cam2])
    hidden = client.get(zones_path(owner.device_id, zone["id"]), headers=bob.headers)
    assert hidden.status_code == 404 and error_code(hidden) == "device_not_found"
    listed = client.get(zones_path(owner.device_id), headers=bob.headers)
    assert error_code(listed) == "device_not_found"
    assert client.get(zones_path(cam2), headers=bob.headers).get_json() == {"zones": []}
    write = client.post(zones_path(cam2), json=DRIVEWAY, headers=bob.headers)
    assert write.status_code == 403 and count(db, "zones") == 1


def test_another_homes_camera_and_zone_are_not_found(client, owner, bob, db):
    zone = created(client, owner)
    mine = zones_path(owner.device_id, zone["id"])
    for response in (
        client.get(zones_path(owner.device_id), headers=bob.headers),
        client.get(mine, headers=bob.headers),
        client.put(mine, json=DRIVEWAY, headers=bob.headers),
        client.delete(mine, headers=bob.headers),
        create(client, bob, device_id=owner.device_id),
    ):
        assert response.status_code == 404 and error_code(response) == "device_not_found"
    # a zone id of another camera, through a camera bob manages
    other = zones_path(bob.device_id, zone["id"])
    assert error_code(client.get(other, headers=bob.headers)) == "zone_not_found"
    assert error_code(client.delete(other, headers=bob.headers)) == "zone_not_found"
    assert error_code(client.put(other, json=DRIVEWAY, headers=bob.headers)) == "zone_not_found"
    assert count(db, "zones") == 1


def test_deleting_the_camera_deletes_its_zones(client, owner, db):
    created(client, owner)
    assert client.delete(f"/devices/{owner.device_id}", headers=owner.headers).status_code == 204
    assert count(db, "zones") == 0
