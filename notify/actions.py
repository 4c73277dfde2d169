"""Actions a member takes on an alert straight from its push: snooze the camera for an hour,
mute the object it saw ("this is my car"), mark it seen, acknowledge it. The API's route is
``POST /notifications/<id>/actions`` (``webapp.actions``); this module holds the token and
what each action writes.

**The action token.** Each alert push carries a token for its delivery, hence for one
notification, one phone and the member who owns that phone:

    va_1.<delivery id>.<expires>.<signature>

``1`` is the format's version, ``expires`` a Unix time (when the push was built plus its
ttl, ``notify.payload.ttl_s``: an hour for an alert), and ``signature`` the HMAC-SHA256 of
``1:<delivery id>:<expires>``, base64url without padding. The key is derived from the
secret snapshot links are signed with (``SNAPSHOT_URL_SECRET``, else ``JWT_SECRET_KEY``)
for this purpose alone, so neither kind of signature can stand for the other. Nothing is
stored: the signature is the proof, compared in constant time. The ``va_`` prefix makes it
unmistakable for a JWT, a device key (``vk_``) or an invitation (``vi_``).

**Single use.** The first action taken with a token sets ``deliveries.action_taken`` and
``action_taken_at`` (``mark_taken``) in the transaction that does the action, so of two
uses at once one waits for the other and then finds the mark; an action refused (and
rolled back) leaves the token usable.

**Refusals** (the route's error codes):

* 403 ``action_token_invalid``: malformed, not signed with this server's key, or the token
  of another notification than the path's (a token is for its own push only);
* 410 ``action_token_expired``: signed by us, but past its expiry;
* 404 ``notification_not_found``: the notification is gone, or its camera is no longer on
  the member's camera list (what its read and ack routes answer them);
* 403 ``action_token_revoked``: the phone was removed since (leaving the home removes a
  member's phones);
* 409 ``actions_not_offered``: a summary (its pushes carry no actions);
* 409 ``action_token_used``: an action was already taken with this token;
* 403 ``role_forbidden``: ``mute_object`` by a member who is not an owner (an ignore zone
  changes the camera for the whole home; their pushes do not offer it);
* 409 ``camera_removed``: ``snooze_camera`` or ``mute_object`` of an alert whose camera
  was removed;
* 409 ``nothing_to_mute``: ``mute_object`` of an alert without a detection box of its
  labels, or whose frame size is unknown (a fail-safe alert);
* 422 ``too_many_zones``: ``mute_object`` on a camera with as many zones as the zones API
  allows (its ``POST /devices/<id>/zones`` answers the same).

The effects, each as the phone's member: ``snooze_camera`` adds that member's snooze of
the alert's camera until an hour from now (``notify.snoozes``); ``mute_object`` adds an
ignore zone to the camera for the presence group of the alert's best detection, over that
detection's box (normalised to the frame, padded by a tenth of its size on each side and
clamped to the frame) (``notify.zones``); ``mark_seen`` and ``acknowledge`` do what
``POST /notifications/<id>/read`` and ``/ack`` do, stopping an escalation.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row

from inference.labels import PRESENCE_GROUPS
from notify.snoozes import add_snooze
from notify.zones import Point, insert_zone, validate_polygon
from vigil.vocabulary import NotificationKind, PresenceGroup, PushAction, Role, ZoneKind

TOKEN_PREFIX = "va_"
TOKEN_VERSION = "1"
# va_1.<delivery id: a bigint>.<expires: Unix seconds>.<43 base64url characters: 32 bytes>
_TOKEN = re.compile(
    rf"{TOKEN_PREFIX}{TOKEN_VERSION}"
    r"\.([1-9][0-9]{0,18})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})"
)
_MAX_ID = 2**63 - 1  # bigint
SNOOZE_S = 3600  # snooze_camera: an hour
MUTE_PADDING = 0.10  # of the box's width (height) added on each side
# Who may add an ignore zone from a push: a zone is the whole home's, an owner's change.
MUTERS = frozenset({Role.OWNER})
MUTED_ZONE_NAME = "muted {group} {n}"
_NAME_TRIES = 5
_NUMBER = re.compile(r"[0-9]{1,9}")

# Each detector label's presence group; a group's own name (lite results) is itself.
LABEL_GROUPS: dict[str, str] = {
    **{label: group for group, labels in PRESENCE_GROUPS.items() for label in labels},
    **{group: group for group in PRESENCE_GROUPS},
}
# SQL: whether event ``{event}`` has a detection whose group is among ``{groups}``; binds
# ``LABEL_PARAMS``.
HAS_BOX = (
    "EXISTS (SELECT 1 FROM detections det"
    " JOIN unnest(%(mute_labels)s::text[], %(mute_groups)s::text[]) AS lg(label, grp)"
    " ON lg.label = det.label WHERE det.event_id = {event} AND lg.grp = ANY({groups}))"
)
LABEL_PARAMS: dict[str, list[str]] = {
    "mute_labels": list(LABEL_GROUPS),
    "mute_groups": list(LABEL_GROUPS.values()),
}


class InvalidActionToken(ValueError):
    """Malformed, or not signed with this server's key."""


class ExpiredActionToken(ValueError):
    """Signed with this server's key, but past its expiry."""


@dataclass(frozen=True)
class ActionToken:
    delivery_id: int
    expires: int  # Unix time


def _key(secret: str) -> bytes:
    # Its own key, derived from the shared secret: an action signature can never be
    # replayed as a snapshot link's, nor the other way round.
    return hmac.new(secret.encode(), b"vigil push action token v1", hashlib.sha256).digest()


def _signature(secret: str, delivery_id: int, expires: int) -> str:
    message = f"{TOKEN_VERSION}:{delivery_id}:{expires}".encode()
    digest = hmac.new(_key(secret), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign(secret: str, delivery_id: int, expires: int) -> str:
    """The action token of a delivery, valid until ``expires`` (Unix time)."""
    if not 0 < delivery_id <= _MAX_ID or not 0 < expires < 10**12:
        raise ValueError(f"no action token for delivery {delivery_id} until {expires}")
    signature = _signature(secret, delivery_id, expires)
    return f"{TOKEN_PREFIX}{TOKEN_VERSION}.{delivery_id}.{expires}.{signature}"


def verify(secret: str, token: str, now: float | None = None) -> ActionToken:
    """The delivery ``token`` speaks for: ``InvalidActionToken`` unless it is well formed
    and signed with this server's key, then ``ExpiredActionToken`` once it is past due (an
    expiry is told only to a holder of a genuine token)."""
    match = _TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise InvalidActionToken("not an action token")
    delivery_id, expires = int(match.group(1)), int(match.group(2))
    if delivery_id > _MAX_ID:
        raise InvalidActionToken("not an action token")
    expected = _signature(secret, delivery_id, expires)
    if not hmac.compare_digest(expected.encode("ascii"), match.group(3).encode("ascii")):
        raise InvalidActionToken("not signed by this server")
    if expires <= (time.time() if now is None else now):
        raise ExpiredActionToken(f"expired at {expires}")
    return ActionToken(delivery_id, expires)


def offered(
    kind: str, role: str | None, has_box: bool, life_safety: bool = False
) -> tuple[PushAction, ...]:
    """The actions one push offers its member, in the order its buttons show: an alert's
    snooze, mute (owners, for an alert with a detection box), seen and acknowledge, with
    acknowledge first for a life-safety alert (it stops an escalation); a summary's none."""
    if kind != NotificationKind.ALERT or role is None:
        return ()
    actions = [PushAction.SNOOZE_CAMERA]
    if has_box and role in MUTERS:
        actions.append(PushAction.MUTE_OBJECT)
    actions.append(PushAction.MARK_SEEN)
    if life_safety:
        return (PushAction.ACKNOWLEDGE, *actions)
    return (*actions, PushAction.ACKNOWLEDGE)


@dataclass(frozen=True)
class ActionTarget:
    """A token's delivery with what an action needs: its notification, the phone's member
    (their role now), and the alert's camera and frame."""

    delivery_id: int
    notification_id: int
    home_id: int
    kind: NotificationKind
    event_id: int | None  # None for a summary
    labels: list[str]  # the alert's presence groups
    phone_id: int | None  # None once the phone was removed
    user_id: int | None  # the phone's member
    role: Role | None  # None: no phone, or no longer a member
    sees: bool  # the member may see the notification's camera
    camera_id: int | None  # None once the camera was removed
    frame_width: int | None
    frame_height: int | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NotificationKind(self.kind))
        if self.role is not None:
            object.__setattr__(self, "role", Role(self.role))


_TARGET = """
SELECT d.id AS delivery_id, d.notification_id, n.home_id, n.kind, n.event_id, n.labels,
       d.device_id AS phone_id, dev.user_id, m.role,
       coalesce(m.cameras IS NULL OR e.device_id = ANY(m.cameras), false) AS sees,
       e.device_id AS camera_id, e.frame_width, e.frame_height
FROM deliveries d
JOIN notifications n ON n.id = d.notification_id
LEFT JOIN devices dev ON dev.id = d.device_id
LEFT JOIN home_members m ON m.home_id = dev.home_id AND m.user_id = dev.user_id
LEFT JOIN events e ON e.id = n.event_id
WHERE d.id = %s
"""


def load_target(conn: psycopg.Connection[Any], delivery_id: int) -> ActionTarget | None:
    """The delivery a token names, or None when it is gone (with its notification)."""
    return (
        conn.cursor(row_factory=class_row(ActionTarget)).execute(_TARGET, (delivery_id,)).fetchone()
    )


def mark_taken(
    conn: psycopg.Connection[Any], delivery_id: int, action: PushAction
) -> dt.datetime | None:
    """Record the delivery's first action (its row stays locked until the transaction
    ends); when it was taken, or None when an action was taken with it already."""
    taken: dt.datetime | None = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            """
            UPDATE deliveries SET action_taken = %s, action_taken_at = now()
            WHERE id = %s AND action_taken IS NULL
            RETURNING action_taken_at
            """,
            (action, delivery_id),
        )
        .fetchone()
    )
    return taken


@dataclass(frozen=True)
class Snoozed:
    id: int
    device_id: int
    until: dt.datetime


def snooze_camera(
    conn: psycopg.Connection[Any], home_id: int, user_id: int, camera_id: int
) -> Snoozed:
    """The member's snooze of one camera (every group) for ``SNOOZE_S`` from now."""
    until: dt.datetime | None = (
        conn.cursor(row_factory=scalar_row)
        .execute("SELECT now() + make_interval(secs => %s)", (SNOOZE_S,))
        .fetchone()
    )
    assert until is not None  # a SELECT without FROM returns its row
    snooze_id = add_snooze(conn, home_id, user_id, until, device_id=camera_id)
    return Snoozed(snooze_id, camera_id, until)


@dataclass(frozen=True)
class SeenBox:
    """A detection box in the source's pixels, and the presence group it was seen as."""

    group: PresenceGroup
    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", PresenceGroup(self.group))


def best_box(conn: psycopg.Connection[Any], event_id: int, groups: list[str]) -> SeenBox | None:
    """The event's detection the alert is most likely about: of the alert's groups, one
    that counted for alerting (not already in an ignore zone) before one that did not,
    then the highest score."""
    return (
        conn.cursor(row_factory=class_row(SeenBox))
        .execute(
            """
            SELECT lg.grp AS "group", det.x1, det.y1, det.x2, det.y2
            FROM detections det
            JOIN unnest(%(mute_labels)s::text[], %(mute_groups)s::text[]) AS lg(label, grp)
                ON lg.label = det.label
            WHERE det.event_id = %(event_id)s AND lg.grp = ANY(%(groups)s)
            ORDER BY det.counts IS NOT FALSE DESC, det.score DESC, det.id
            LIMIT 1
            """,
            {**LABEL_PARAMS, "event_id": event_id, "groups": groups},
        )
        .fetchone()
    )


def _clamp(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def mute_polygon(box: SeenBox, frame_width: int, frame_height: int) -> list[Point] | None:
    """The box normalised to the frame, padded by ``MUTE_PADDING`` of its size on each
    side and clamped to the frame, as a rectangle; None when no zone can be made of it
    (nothing of it inside the frame)."""
    x1, x2 = box.x1 / frame_width, box.x2 / frame_width
    y1, y2 = box.y1 / frame_height, box.y2 / frame_height
    pad_x, pad_y = (x2 - x1) * MUTE_PADDING, (y2 - y1) * MUTE_PADDING
    left, right = _clamp(x1 - pad_x), _clamp(x2 + pad_x)
    top, bottom = _clamp(y1 - pad_y), _clamp(y2 + pad_y)
    polygon = [(left, top), (right, top), (right, bottom), (left, bottom)]
    return None if validate_polygon(polygon) else polygon


def mute_region(
    conn: psycopg.Connection[Any], target: ActionTarget
) -> tuple[PresenceGroup, list[Point]] | None:
    """The presence group and polygon ``mute_object`` would ignore for the target's alert:
    its best box, on a frame of known size; None when it has none."""
    width, height = target.frame_width, target.frame_height
    if target.event_id is None or not width or not height:
        return None
    box = best_box(conn, target.event_id, target.labels)
    polygon = None if box is None else mute_polygon(box, width, height)
    if box is None or polygon is None:
        return None
    return box.group, polygon


@dataclass(frozen=True)
class Muted:
    id: int
    device_id: int
    name: str
    groups: list[PresenceGroup]
    polygon: list[Point]


def _next_name(conn: psycopg.Connection[Any], camera_id: int, group: PresenceGroup) -> str:
    prefix = MUTED_ZONE_NAME.format(group=group, n="")
    names: list[str] = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "SELECT name FROM zones WHERE device_id = %s AND starts_with(name, %s)",
            (camera_id, prefix),
        )
        .fetchall()
    )
    taken = [int(n[len(prefix) :]) for n in names if _NUMBER.fullmatch(n[len(prefix) :])]
    return MUTED_ZONE_NAME.format(group=group, n=max(taken, default=0) + 1)


def mute_object(
    conn: psycopg.Connection[Any],
    home_id: int,
    camera_id: int,
    group: PresenceGroup,
    polygon: list[Point],
) -> Muted:
    """An ignore zone of the camera for one presence group, named ``muted <group> <n>``
    with the next free ``n``; ``TooManyZones`` when the camera has as many as the zones API
    allows (``MAX_ZONES_PER_CAMERA``)."""
    for _ in range(_NAME_TRIES):
        name = _next_name(conn, camera_id, group)
        try:
            with conn.transaction():  # a savepoint: a name taken meanwhile is tried again
                zone_id = insert_zone(
                    conn, camera_id, home_id, name, ZoneKind.IGNORE, polygon, [group]
                )
        except psycopg.errors.UniqueViolation:
            continue
        return Muted(zone_id, camera_id, name, [group], polygon)
    raise RuntimeError(f"no free zone name for camera {camera_id} after {_NAME_TRIES} tries")
