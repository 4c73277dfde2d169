"""Response bodies, as pydantic models: the routes build their JSON with them, and
``GET /openapi.json`` publishes their schemas, so the document cannot drift from what the
server answers.

A route builds its model from its rows and answers ``respond(model)``. Keys a model leaves
unset are left out of the JSON (a delivery's ``next_attempt_at`` once it is settled, the
parts of a decision that do not apply): the schemas list such keys as not required.
Each model carries an example, which the document shows and a test checks against it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vigil.vocabulary import (
    ArmMode,
    AuditAction,
    DecisionKind,
    DeletionKind,
    DeliveryStatus,
    DeviceKind,
    EscalationStop,
    EventStatus,
    InvitationStatus,
    JobState,
    NotificationKind,
    Platform,
    PresenceGroup,
    PushAction,
    Role,
    Tier,
    ZoneKind,
)

_AT = "2025-06-01T12:00:00+00:00"
_LATER = "2025-06-01T12:00:02.400000+00:00"


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class ApiModel(BaseModel):
    """Base of every response body."""

    def as_json(self) -> dict[str, Any]:
        """The JSON object (dates stay dates: the app's JSON provider writes ISO 8601)."""
        return self.model_dump(exclude_unset=True)


def respond(model: ApiModel, status: int = 200) -> Response:
    response = jsonify(model.as_json())
    response.status_code = status
    return response


# --- errors ---------------------------------------------------------------------------


class FieldProblem(ApiModel):
    """One problem with one field of a request."""

    field: str
    message: str
    type: str | None = None


class ErrorBody(ApiModel):
    code: Annotated[str, Field(description="Stable: clients branch on it")]
    message: Annotated[str, Field(description="For people; may change")]
    details: Annotated[
        list[FieldProblem] | dict[str, Any] | None,
        Field(
            description="One entry per field problem (validation_failed), or an object "
            "describing one refusal (e.g. which limit a 429 hit)"
        ),
    ] = None


class ErrorResponse(ApiModel):
    """Every failure, whoever refuses the request (docs/api-errors.md)."""

    model_config = _example({"error": {"code": "device_not_found", "message": "No such device."}})

    error: ErrorBody


# --- auth -------------------------------------------------------------------------------


class Tokens(ApiModel):
    """A session's access token (15 min) and refresh token (30 days)."""

    model_config = _example(
        {
            "access_token": "eyJhbGciOiJIUzI1NiJ9...",
            "refresh_token": "eyJhbGciOiJIUzI1NiJ9...",
            "token_type": "Bearer",
        }
    )

    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"]


class LogoutResult(ApiModel):
    model_config = _example({"revoked": "access", "session": "ended"})

    revoked: Literal["access", "refresh"]
    session: Literal["ended"]


# --- homes ------------------------------------------------------------------------------

HoursMinutes = Annotated[str, Field(pattern=r"^[0-2][0-9]:[0-5][0-9]$", examples=["22:30"])]


_HOME = {
    "id": 1,
    "name": "Home",
    "tier": "premium",
    "arm_mode": "away",
    "timezone": "Europe/Paris",
    "quiet_hours_start": "23:00",
    "quiet_hours_end": "07:00",
    "created_at": _AT,
    "role": "owner",
    "retention_days": 30,
    "retention_days_chosen": False,
    "retention_days_max": 30,
}


class Home(ApiModel):
    model_config = _example(_HOME)

    id: int
    name: str
    tier: Tier
    arm_mode: ArmMode
    timezone: str
    quiet_hours_start: HoursMinutes | None
    quiet_hours_end: HoursMinutes | None
    created_at: dt.datetime
    role: Role  # the caller's role in this home
    retention_days: Annotated[
        int, Field(description="days of history kept: the owners' choice, else the tier's")
    ]
    retention_days_chosen: Annotated[
        bool, Field(description="whether an owner chose the days (false: the tier's)")
    ]
    retention_days_max: Annotated[int, Field(description="the most days the tier keeps")]


class HomeList(ApiModel):
    model_config = _example({"homes": [_HOME]})

    homes: list[Home]


class Policy(ApiModel):
    """A home's notification policy (docs/notifications.md); the example is the policy a
    new home starts with."""

    model_config = _example(
        {
            "cooldown_s": 300,
            "hourly_budget": 10,
            "alert_labels": ["person", "vehicle"],
            "min_score": 0.45,
            "summary_window_s": 90,
            "summary_idle_s": 30,
            "summary_interval_s": 0,
        }
    )

    cooldown_s: int
    hourly_budget: int
    alert_labels: list[PresenceGroup]
    min_score: float
    summary_window_s: int
    summary_idle_s: int
    summary_interval_s: int


class Preferences(ApiModel):
    """The caller's own notification preferences in one home; a member who never changed
    them has the defaults (everything on, ``updated_at`` null). Life-safety alerts reach
    them whatever these say (``notify.recipients``)."""

    model_config = _example(
        {
            "home_id": 1,
            "user_id": 5,
            "muted_until": "2025-06-01T13:00:00+00:00",
            "muted": True,
            "quiet_hours_start": "23:00",
            "quiet_hours_end": "07:00",
            "alert_cameras": [3],
            "alert_labels": ["person"],
            "summaries": False,
            "updated_at": _AT,
        }
    )

    home_id: int
    user_id: int
    muted_until: Annotated[
        dt.datetime | None, Field(description="nothing but life safety until then")
    ]
    muted: Annotated[bool, Field(description="muted_until is still ahead")]
    quiet_hours_start: Annotated[
        HoursMinutes | None, Field(description="on the home's clock; start > end spans midnight")
    ]
    quiet_hours_end: HoursMinutes | None
    alert_cameras: Annotated[
        list[int] | None, Field(description="alerts of these cameras only; null: every one")
    ]
    alert_labels: Annotated[
        list[PresenceGroup] | None,
        Field(description="alerts naming one of these only; null: all the home alerts on"),
    ]
    summaries: bool
    updated_at: Annotated[dt.datetime | None, Field(description="null: never changed")]


_SNOOZE = {
    "id": 12,
    "device_id": 3,
    "label": "vehicle",
    "until": "2025-06-01T13:00:00+00:00",
    "created_at": _AT,
}


class Snooze(ApiModel):
    """One of the caller's snoozes: no alert of the whole home (``device_id`` null), of one
    camera, or of one camera's presence group (``label``) until ``until``; life-safety
    alerts still reach them."""

    model_config = _example(_SNOOZE)

    id: int
    device_id: Annotated[int | None, Field(description="null: the whole home")]
    label: Annotated[PresenceGroup | None, Field(description="null: every presence group")]
    until: dt.datetime
    created_at: dt.datetime


class SnoozeList(ApiModel):
    model_config = _example({"snoozes": [_SNOOZE]})

    snoozes: list[Snooze]


# --- devices ----------------------------------------------------------------------------


class DeviceKeyInfo(ApiModel):
    """The device's live key, without its secret (shown once, when issued)."""

    key_id: str
    created_at: dt.datetime


_DEVICE = {
    "id": 3,
    "home_id": 1,
    "kind": "camera",
    "platform": "camera",
    "name": "test_device_001",
    "has_push_token": False,
    "created_at": _AT,
    "key": {"key_id": "9f86d081884c7d65", "created_at": _AT},
}


class Device(ApiModel):
    model_config = _example(_DEVICE)

    id: int
    home_id: int
    kind: DeviceKind
    platform: Platform
    name: str
    has_push_token: bool
    created_at: dt.datetime
    key: DeviceKeyInfo | None
    user_id: int | None = None  # a phone's member (its pushes follow their preferences)


class DeviceList(ApiModel):
    model_config = _example({"devices": [_DEVICE]})

    devices: list[Device]


class IssuedDeviceKey(ApiModel):
    """A new device key. ``key`` is shown here once and never again: store it on the
    device, which sends it as ``Authorization: Bearer <key>``."""

    model_config = _example(
        {
            "key_id": "9f86d081884c7d65",
            "key": "vk_9f86d081884c7d65_mZ3cT1rXoG4uW0pQeL8sK2vYb6nHa9dJf5iE7xC3gRw",
            "device_id": 3,
            "created_at": _AT,
            "replaced_key_id": None,
        }
    )

    key_id: str
    key: str
    device_id: int
    created_at: dt.datetime
    replaced_key_id: Annotated[
        str | None, Field(description="The key this one replaced, which stopped working")
    ]


_ZONE = {
    "id": 7,
    "device_id": 3,
    "name": "driveway",
    "kind": "alert",
    "groups": ["person", "vehicle"],
    "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]],
    "created_at": _AT,
    "updated_at": _AT,
}


class Zone(ApiModel):
    """An activity zone of a camera: a detection whose box's bottom centre lies in it may
    alert (alert) or never does (ignore); a camera without alert zones alerts everywhere."""

    model_config = _example(_ZONE)

    id: int
    device_id: int
    name: str
    kind: ZoneKind
    groups: Annotated[list[PresenceGroup] | None, Field(description="null: every group")]
    polygon: Annotated[
        list[tuple[float, float]],
        Field(description="[x, y] points, normalised to the frame (0..1, from the top left)"),
    ]
    created_at: dt.datetime
    updated_at: dt.datetime


class ZoneList(ApiModel):
    model_config = _example({"zones": [_ZONE]})

    zones: list[Zone]


# --- events -----------------------------------------------------------------------------


class EventAccepted(ApiModel):
    model_config = _example({"event_id": 42, "status": "queued", "priority": 0.86})

    event_id: int
    status: EventStatus
    priority: float


class Decision(ApiModel):
    """What the digest decided and why (docs/notifications.md); keys that do not apply
    to the decision are left out."""

    kind: DecisionKind
    reason: Annotated[str | None, Field(description="life_safety, armed, cooldown, ...")]
    notification_ids: list[int] = []  # alert and failsafe
    summary_id: int | None = None  # summary: null while it waits for its summary
    analysis_error: str | None = None  # failsafe (and a summary of a failed event)


_EVENT = {
    "id": 42,
    "home_id": 1,
    "device_id": 3,
    "location": "front_door",
    "mode": "security",
    "motion_score": 0.8,
    "image_url": "https://example.com/test.jpg",
    "has_image": False,
    "lite_results": {"person": 0.91},
    "lite_source": "device",
    "priority": 0.86,
    "status": "analyzed",
    "attempts": 1,
    "created_at": _AT,
    "updated_at": _LATER,
    "analyzed_at": _LATER,
    "error": None,
    "error_code": None,
    "decision": {"kind": "alert", "reason": "life_safety", "notification_ids": [7]},
}


LiteSource = Literal["device", "server_lite"]
# The key under which the stored lite results say the server's lite scorer made them.
LITE_SOURCE_KEY = "source"


class EventFields(ApiModel):
    """An event's own columns, as its owner reads them. ``Event`` adds the digest's
    ``decision``; the store reads its rows into ``webapp.event_store.EventRow``, which adds
    the columns that decision is made of, so a row and the body share one list of fields."""

    id: int
    home_id: int
    device_id: Annotated[int | None, Field(description="null once the device is removed")]
    location: str
    mode: str  # as the client sent it
    motion_score: float
    image_url: str | None
    has_image: bool
    lite_results: Annotated[
        dict[str, float] | None, Field(description="presence scores, by group; null until scored")
    ]
    lite_source: Annotated[
        LiteSource | None,
        Field(description="who scored them: the phone or camera, or the server's lite scorer"),
    ] = None
    priority: float
    status: EventStatus
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime
    analyzed_at: dt.datetime | None
    error: str | None
    error_code: str | None

    @model_validator(mode="before")
    @classmethod
    def _split_lite_source(cls, data: Any) -> Any:
        """The stored results carry who made them under ``source``: a field of its own here,
        so ``lite_results`` holds only scores."""
        if isinstance(data, dict) and isinstance(data.get("lite_results"), dict):
            scores = dict(data["lite_results"])
            source = scores.pop(LITE_SOURCE_KEY, None)
            known = data.get("lite_source")
            data = {**data, "lite_results": scores, "lite_source": source or known or "device"}
        return data


class Event(EventFields):
    model_config = _example(_EVENT)

    decision: Annotated[Decision | None, Field(description="null until the digest decided")]


class Alternative(ApiModel):
    label: str
    score: float


class Detection(ApiModel):
    """One object in the analysed frame; the box in the source image's pixels."""

    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    model: str
    alternatives: list[Alternative]


class EventDetail(Event):
    model_config = _example(
        {
            **_EVENT,
            "detections": [
                {
                    "label": "person",
                    "score": 0.87,
                    "x1": 210.5,
                    "y1": 80.0,
                    "x2": 402.25,
                    "y2": 570.0,
                    "model": "nanodet-416",
                    "alternatives": [],
                }
            ],
        }
    )

    detections: list[Detection]


class EventList(ApiModel):
    model_config = _example({"events": [_EVENT], "next_cursor": None})

    events: list[Event]
    next_cursor: Annotated[str | None, Field(description="Pass as cursor for the next page")]


# --- notifications ----------------------------------------------------------------------


class Delivery(ApiModel):
    """Where one notification's push to one phone stands."""

    id: int
    device_id: Annotated[int | None, Field(description="null once the phone is removed")]
    device_name: str | None
    platform: Platform | None
    provider: Annotated[str | None, Field(description="fcm, apns or embedded; null until tried")]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: Annotated[
        dt.datetime | None, Field(description="Only while pending or sending")
    ] = None
    sent_at: dt.datetime | None
    last_status: int | None
    last_error: str | None


_NOTIFICATION = {
    "id": 7,
    "kind": "alert",
    "title": "Person at the front door",
    "body": "A person was seen at the front door.",
    "event_id": 42,
    "home_id": 1,
    "location": "front_door",
    "labels": ["person"],
    "reason": "life_safety",
    "life_safety": True,
    "created_at": _LATER,
    "read_at": None,
    "read_by": None,
    "acked_at": None,
    "acked_by": None,
    "escalation": {
        "step": 0,
        "chain": [1, 5],
        "stopped_reason": None,
        "stopped_at": None,
        "next_at": "2025-06-01T12:01:02.400000+00:00",
    },
    "deliveries": [
        {
            "id": 9,
            "device_id": 4,
            "device_name": "ana-phone",
            "platform": "android",
            "provider": "fcm",
            "status": "sent",
            "attempts": 1,
            "sent_at": _LATER,
            "last_status": 200,
            "last_error": None,
        }
    ],
}


class Escalation(ApiModel):
    """Where a life-safety alert's escalation stands: the chain it climbs (user ids, as
    it stood when the alert was raised), the step reached (0: the chain's first member;
    the chain's length: every member), and when the next step is due."""

    step: int
    chain: list[int]
    stopped_reason: Annotated[
        EscalationStop | None, Field(description="null while it still escalates")
    ]
    stopped_at: dt.datetime | None
    next_at: Annotated[dt.datetime | None, Field(description="null once stopped")]


class Notification(ApiModel):
    """One alert or summary, with the delivery state of its push to each phone."""

    model_config = _example(_NOTIFICATION)

    id: int
    kind: NotificationKind
    title: str
    body: str
    event_id: Annotated[int | None, Field(description="null for a summary")]
    home_id: int
    location: str | None
    labels: list[str]
    reason: str | None
    life_safety: bool
    created_at: dt.datetime
    read_at: dt.datetime | None
    read_by: Annotated[int | None, Field(description="who read it first")]
    acked_at: dt.datetime | None
    acked_by: Annotated[int | None, Field(description="who acknowledged it first")]
    escalation: Annotated[
        Escalation | None,
        Field(description="null: it does not escalate (no chain, or not life safety)"),
    ]
    deliveries: list[Delivery]


class NotificationList(ApiModel):
    model_config = _example({"notifications": [_NOTIFICATION], "next_cursor": None})

    notifications: list[Notification]
    next_cursor: str | None


class ActionSnooze(ApiModel):
    """The snooze ``snooze_camera`` added: no alert of this camera to the member until."""

    id: int
    device_id: int
    until: dt.datetime


class ActionZone(ApiModel):
    """The ignore zone ``mute_object`` added to the alert's camera."""

    id: int
    device_id: int
    name: str
    groups: list[PresenceGroup]
    polygon: Annotated[
        list[tuple[float, float]], Field(description="[x, y] points in 0..1 of the frame")
    ]


class PushActionTaken(ApiModel):
    """What an action taken from a push did, as the phone's member (``user_id``):
    ``snooze`` for snooze_camera, ``zone`` for mute_object; mark_seen and acknowledge
    changed the notification as its read and ack routes do."""

    model_config = _example(
        {
            "action": "snooze_camera",
            "notification_id": 7,
            "user_id": 5,
            "taken_at": _LATER,
            "snooze": {"id": 3, "device_id": 2, "until": "2025-06-01T13:00:02.400000+00:00"},
        }
    )

    action: PushAction
    notification_id: int
    user_id: int
    taken_at: dt.datetime
    snooze: ActionSnooze | None = None
    zone: ActionZone | None = None


class EscalationChain(ApiModel):
    """Who hears of a life-safety alert nobody acknowledged, in turn, and how long each
    has before the next; once the chain is through, every member. No members: everyone at
    once."""

    model_config = _example({"members": [1, 5], "delay_s": 60})

    members: Annotated[list[int], Field(description="user ids, first to hear first")]
    delay_s: int


# --- households -------------------------------------------------------------------------

_MEMBER = {
    "user_id": 5,
    "email": "bob@example.com",
    "role": "viewer",
    "cameras": [3],
    "account_holder": False,
    "joined_at": _AT,
}


class Member(ApiModel):
    """One member of a home: their role, and the cameras they may see."""

    model_config = _example(_MEMBER)

    user_id: int
    email: str
    role: Role
    cameras: Annotated[list[int] | None, Field(description="null: every camera of the home")]
    account_holder: Annotated[
        bool, Field(description="the subscription's owner: always an owner, never removed")
    ]
    joined_at: dt.datetime


class MemberList(ApiModel):
    model_config = _example({"members": [_MEMBER]})

    members: list[Member]


_INVITATION = {
    "id": 2,
    "home_id": 1,
    "email": "bob@example.com",
    "role": "member",
    "cameras": None,
    "created_at": _AT,
    "expires_at": "2025-06-08T12:00:00+00:00",
    "status": "pending",
}


class Invitation(ApiModel):
    """An invitation to a home, without its token (shown once, when it is made)."""

    model_config = _example(_INVITATION)

    id: int
    home_id: int
    email: str
    role: Role
    cameras: Annotated[list[int] | None, Field(description="null: every camera of the home")]
    created_at: dt.datetime
    expires_at: dt.datetime
    status: InvitationStatus


class IssuedInvitation(Invitation):
    """A new invitation. ``token`` is shown here once and never again: send it to the
    invitee, who accepts it logged in (``POST /invitations/accept``) or signs up with it
    (``POST /auth/join``)."""

    model_config = _example(
        {**_INVITATION, "token": "vi_mZ3cT1rXoG4uW0pQeL8sK2vYb6nHa9dJf5iE7xC3gRw"}
    )

    token: str


class InvitationList(ApiModel):
    model_config = _example({"invitations": [_INVITATION]})

    invitations: list[Invitation]


_AUDIT_ENTRY = {
    "id": 11,
    "action": "arm_mode_changed",
    "user_id": 5,
    "email": "bob@example.com",
    "details": {"from": "disarmed", "to": "away"},
    "created_at": _AT,
}


class AuditEntry(ApiModel):
    """Who did what to the home, and when."""

    model_config = _example(_AUDIT_ENTRY)

    id: int
    action: AuditAction
    user_id: Annotated[int | None, Field(description="null: no user (a signed link), or deleted")]
    email: Annotated[str | None, Field(description="the acting user's, while they exist")]
    details: dict[str, Any]
    created_at: dt.datetime


class AuditList(ApiModel):
    model_config = _example({"entries": [_AUDIT_ENTRY], "next_cursor": None})

    entries: list[AuditEntry]
    next_cursor: Annotated[str | None, Field(description="Pass as cursor for the next page")]


# --- deletion ---------------------------------------------------------------------------

_DELETION = {
    "id": 4,
    "kind": "home",
    "state": "running",
    "events_deleted": 1500,
    "blobs_deleted": 0,
    "created_at": _AT,
    "started_at": _LATER,
    "finished_at": None,
    "error": None,
}


class DeletionStatus(ApiModel):
    """Where the deletion of a home or an account stands. Done: every row is gone and the
    blob store has dropped the pictures; ``leftovers`` then counts what still names the
    deleted home or account, by kind (all zero)."""

    model_config = _example(_DELETION)

    id: int
    kind: DeletionKind
    state: JobState
    events_deleted: int
    blobs_deleted: Annotated[
        int, Field(description="pictures dropped from the blob store (counted once done)")
    ]
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: Annotated[
        str | None, Field(description="the last attempt's error, while retried or once failed")
    ]
    leftovers: Annotated[
        dict[str, int] | None, Field(description="only once done: rows left, by kind (all 0)")
    ] = None


class DeletionRequested(ApiModel):
    """A deletion under way. ``status_token`` is shown here once: send it as the
    ``Deletion-Token`` header to ``status_url`` (it works after the account is gone)."""

    model_config = _example(
        {
            "job": {**_DELETION, "state": "pending", "events_deleted": 0, "started_at": None},
            "status_token": "vd_Q2hlY2sgdGhlIGpvYiB3aXRoIHRoaXMgdG9rZW4gb25seQ",
            "status_url": "/deletions/4",
        }
    )

    job: DeletionStatus
    status_token: str
    status_url: str


# --- service ----------------------------------------------------------------------------


class Health(ApiModel):
    """``GET /health``: up (ok or degraded, 200) or down (503, without workers and
    reasons)."""

    model_config = _example(
        {
            "status": "ok",
            "checks": {"redis": "ok", "postgres": "ok", "workers": "ok", "storage": "ok"},
            "workers": {"live": ["cpu@host"], "queues": {}},
            "reasons": [],
        }
    )

    status: Literal["ok", "degraded", "down"]
    checks: dict[str, str]
    workers: dict[str, Any] | None = None
    reasons: list[str] = []
