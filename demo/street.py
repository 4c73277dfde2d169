"""Only what is new, shown on one home after the main run, through the API as an app would:

* a street camera whose road is an ignore zone for vehicles: passing traffic stays quiet
  (reason ``zone``);
* a carport camera with a parked car: it alerts once, then the same car is ``stationary``;
* the owner taps "Snooze 1 h" on that alert's push (the action token it carried, posted to
  the action URL without logging in), and when the car moves the alert is held
  (``snoozed``).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from psycopg_pool import ConnectionPool

from demo import push
from demo.client import ApiClient
from demo.scenario import Home, photo_path

# The road fills the frame below the top sixth: vehicles there never alert.
ROAD = [[0.0, 0.15], [1.0, 0.15], [1.0, 1.0], [0.0, 1.0]]
STREET, CARPORT = "street", "carport"


@dataclass
class SceneReport:
    decided: list[tuple[str, str, str | None]] = field(default_factory=list)  # camera, kind, why
    snoozed_from_push: bool = False


def _mirrored(picture: bytes) -> bytes:
    """The scene seen with the car on the other side: it moved."""
    with Image.open(io.BytesIO(picture)) as image:
        out = io.BytesIO()
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "JPEG", quality=90)
    return out.getvalue()


def _camera(api: ApiClient, home: Home, location: str) -> int:
    body = {
        "home_id": home.home_id,
        "kind": "camera",
        "platform": "camera",
        "name": f"{location}_cam",
    }
    device: dict[str, Any] = api.call("POST", "/devices", body, expect=(201,))
    home.cameras[location] = device["id"]
    return int(device["id"])


def _decided(pool: ConnectionPool, event_id: int, timeout: float) -> tuple[str, str | None]:
    """Wait for the digest's decision on the event."""
    deadline = time.monotonic() + timeout
    while True:
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT digest, digest_reason FROM events WHERE id = %s", (event_id,)
            ).fetchone()
        if row and row["digest"]:
            return row["digest"], row["digest_reason"]
        if time.monotonic() > deadline:
            return "undecided", None
        time.sleep(0.25)


def _push_action(notification_id: int) -> tuple[str, str] | None:
    """The action URL and token the alert's push carried, from what the local FCM or APNs
    server accepted (the phone's copy)."""
    wanted = str(notification_id)
    for accepted in push.fcm.accepted if push.fcm else []:
        data = accepted["message"].get("data", {})
        if data.get("notification_id") == wanted and "action_token" in data:
            return data["action_url"], data["action_token"]
    for accepted in push.apns.accepted if push.apns else []:
        payload = accepted["payload"]
        if str(payload.get("notification_id")) == wanted and "action_token" in payload:
            return payload["action_url"], payload["action_token"]
    return None


def _wait_push(notification_id: int, timeout: float) -> tuple[str, str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _push_action(notification_id)
        if found:
            return found
        time.sleep(0.25)
    return None


def run_scene(base_url: str, home: Home, pool: ConnectionPool, timeout: float) -> SceneReport:
    report = SceneReport()
    owner = ApiClient(base_url, home.token)
    parked = photo_path("dog").read_bytes()  # a car on the road, a bicycle and a dog
    try:
        street = _camera(owner, home, STREET)
        zone = {"name": "road", "kind": "ignore", "groups": ["vehicle"], "polygon": ROAD}
        owner.call("POST", f"/devices/{street}/zones", zone, expect=(201,))
        _camera(owner, home, CARPORT)

        def seen(location: str, picture: bytes) -> tuple[int, str, str | None]:
            fields = {
                "device_id": f"{location}_cam",
                "location": location,
                "mode": "security",
                "motion_score": 0.8,
            }
            status, body = owner.post_event_upload(fields, picture)
            if status != 202:
                raise RuntimeError(f"POST /events -> {status}: {body}")
            kind, why = _decided(pool, body["event_id"], timeout)
            report.decided.append((location, kind, why))
            return body["event_id"], kind, why

        for _ in range(2):  # traffic on the road
            seen(STREET, parked)
        first, kind, _ = seen(CARPORT, parked)  # the car parks: news
        for _ in range(2):  # still there
            seen(CARPORT, parked)
        if kind == "alert":
            with pool.connection() as conn:
                note = conn.execute(
                    "SELECT id FROM notifications WHERE event_id = %s", (first,)
                ).fetchone()
            action = _wait_push(note["id"], timeout) if note else None
            if action is not None:
                url, token = action
                path = url[url.index("/notifications/") :]
                tapped = ApiClient(base_url)  # the phone, without logging in
                try:
                    tapped.call("POST", path, {"token": token, "action": "snooze_camera"})
                finally:
                    tapped.close()
                report.snoozed_from_push = True
        seen(CARPORT, _mirrored(parked))  # the car moves while the carport is snoozed
    finally:
        owner.close()
    return report


def scene_lines(home: Home, report: SceneReport) -> list[str]:
    lines = [f"only what is new, at {home.spec.home}:"]
    for location, kind, why in report.decided:
        lines.append(f"  {location:<8} {kind:<8} {why or ''}")
    if report.snoozed_from_push:
        lines.append("  (the owner snoozed the carport for an hour from the first alert's push)")
    return lines
