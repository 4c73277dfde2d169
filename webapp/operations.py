"""Every operation of the API, once: what it takes and what it answers, by status.

``webapp.openapi`` renders this table as the OpenAPI document; ``tests/test_api_service.py``
checks that it lists exactly the app's routes. The statuses of an operation follow from
what it takes (credentials, a body, a query, ids in its path) plus its own ``errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from webapp import responses
from webapp.deletions import MAX_TOKEN_LENGTH, TOKEN_HEADER
from webapp.event_input import IDEMPOTENCY_HEADER, IMAGE_TYPES, MAX_IDEMPOTENCY_KEY
from webapp.responses import ApiModel
from webapp.schemas import (
    AccountDeletion,
    AuditQuery,
    DeviceCreate,
    DeviceQuery,
    EscalationUpdate,
    EventCreate,
    EventQuery,
    HomePatch,
    InvitationAccept,
    InvitationCreate,
    JoinRequest,
    LoginRequest,
    MemberPatch,
    NotificationQuery,
    PolicyUpdate,
    PreferencesPatch,
    PushActionRequest,
    RegisterRequest,
    SnoozeCreate,
    ZoneWrite,
)
from webapp.stream import LAST_EVENT_ID_HEADER, StreamQuery

# Who may call: a user's JWT (access; refresh for /auth/refresh; either for /auth/logout),
# a user's or the device's own key (POST /events), a JWT or a signed link (snapshots), or
# anyone.
Auth = Literal["user", "refresh", "either_token", "user_or_device", "user_or_link", "public"]


@dataclass(frozen=True)
class Answer:
    """One success response: a model's JSON, other media (type → schema), or no body."""

    description: str
    model: type[ApiModel] | None = None
    media: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Operation:
    route: str  # "METHOD /path/{id}"
    name: str  # "tag.operation_id"
    summary: str
    answers: Mapping[int, Answer]
    auth: Auth = "user"
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    ids: tuple[str, ...] = ()
    errors: tuple[int, ...] = ()  # beyond those that follow from the rest
    parameters: tuple[Mapping[str, Any], ...] = ()
    stores: bool = True  # uses Redis or PostgreSQL: may answer 503

    @property
    def method(self) -> str:
        return self.route.split(" ", 1)[0].lower()

    @property
    def path(self) -> str:
        return self.route.split(" ", 1)[1]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def operation_id(self) -> str:
        return self.name.split(".", 1)[1]

    def error_statuses(self) -> list[int]:
        """Every error status the operation can answer (with the error shape)."""
        statuses = {403, *self.errors}  # 403: a device key on a route it does not open
        if self.auth != "public":
            statuses.add(401)
        if self.body is not None:
            statuses |= {400, 413, 415, 422}
        if self.query is not None:
            statuses |= {400, 422}
        if self.ids:
            statuses.add(404)
        if self.stores:
            statuses.add(503)
        return sorted(statuses - set(self.answers))


# The query of a signed snapshot link (notify.links); any other value is a 403.
SIGNED_LINK = (
    {
        "name": "expires",
        "in": "query",
        "required": False,
        "description": "Unix time the link expires at",
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    },
    {
        "name": "sig",
        "in": "query",
        "required": False,
        "description": "HMAC-SHA256 of the event id and expires, lowercase hex",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
)
IDEMPOTENCY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": "A retry with the same key (and the same request) gets the first answer",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY,
        "pattern": "^[\\u0020-\\u007e]*$",  # printable ASCII
    },
}
DELETION_TOKEN = {
    "name": TOKEN_HEADER,
    "in": "header",
    "required": False,
    "description": "The status token the deletion's request answered (instead of a JWT)",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TOKEN_LENGTH,
        "pattern": "^[\\u0021-\\u007e]*$",  # printable ASCII, no space
    },
}
LAST_EVENT_ID = {
    "name": LAST_EVENT_ID_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": r"^\d+-\d+$"},
}
# One server-sent event of GET /stream (OpenAPI 3.1: the schema of each event): its kind,
# its id in the home's live log, and a JSON payload.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "examples": ["event.analyzed", "alert", "gap"]},
        "id": {"type": "string", "pattern": r"^\d+-\d+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def _picture(kind: str) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": kind}


_OK = "Success"
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST /auth/login",
        "auth.login",
        "Log in: a new session's access and refresh tokens",
        {200: Answer(_OK, responses.Tokens)},
        auth="public",
        body=LoginRequest,
        errors=(401, 429),
    ),
    Operation(
        "POST /auth/register",
        "auth.register",
        "Sign up: a new user with a first home at the standard tier, and their session's"
        " tokens (only where the server has AUTH_REGISTRATION on; 404 otherwise)",
        {201: Answer("Created", responses.Tokens)},
        auth="public",
        body=RegisterRequest,
        errors=(404, 409, 429),
    ),
    Operation(
        "POST /auth/join",
        "auth.join",
        "Sign up with an invitation's token: a new user with the invitation's email, a member"
        " of its home, and their session's tokens (an existing user logs in and accepts)",
        {201: Answer("Created", responses.Tokens)},
        auth="public",
        body=JoinRequest,
        errors=(404, 409, 410, 429),
    ),
    Operation(
        "POST /auth/refresh",
        "auth.refresh_tokens",
        "New access and refresh tokens (send the refresh token; it stops working, and sending"
        " it again ends the session)",
        {200: Answer(_OK, responses.Tokens)},
        auth="refresh",
    ),
    Operation(
        "POST /auth/logout",
        "auth.logout",
        "End the session of the presented token (access or refresh)",
        {200: Answer(_OK, responses.LogoutResult)},
        auth="either_token",
    ),
    Operation(
        "GET /homes",
        "homes.list_homes",
        "Your homes",
        {200: Answer(_OK, responses.HomeList)},
    ),
    Operation(
        "GET /homes/{home_id}",
        "homes.get_home",
        "One of your homes",
        {200: Answer(_OK, responses.Home)},
        ids=("home_id",),
    ),
    Operation(
        "PATCH /homes/{home_id}",
        "homes.update_home",
        "Arm or disarm; change quiet hours, time zone or days of history kept (not the tier)",
        {200: Answer(_OK, responses.Home)},
        body=HomePatch,
        ids=("home_id",),
    ),
    Operation(
        "GET /homes/{home_id}/policy",
        "homes.get_policy",
        "The home's notification policy",
        {200: Answer(_OK, responses.Policy)},
        ids=("home_id",),
    ),
    Operation(
        "PUT /homes/{home_id}/policy",
        "homes.replace_policy",
        "Change cooldown, hourly budget, alert labels or summary timing",
        {200: Answer(_OK, responses.Policy)},
        body=PolicyUpdate,
        ids=("home_id",),
    ),
    Operation(
        "PATCH /homes/{home_id}/policy",
        "homes.update_policy",
        "Change cooldown, hourly budget, alert labels or summary timing",
        {200: Answer(_OK, responses.Policy)},
        body=PolicyUpdate,
        ids=("home_id",),
    ),
    Operation(
        "GET /homes/{home_id}/preferences",
        "homes.get_preferences",
        "Your own notification preferences in this home (any member)",
        {200: Answer(_OK, responses.Preferences)},
        ids=("home_id",),
    ),
    Operation(
        "PATCH /homes/{home_id}/preferences",
        "homes.update_preferences",
        "Mute, set your own quiet hours, choose the cameras and labels that alert you and"
        " whether summaries do (any member, for themselves; life safety always reaches you)",
        {200: Answer(_OK, responses.Preferences)},
        body=PreferencesPatch,
        ids=("home_id",),
    ),
    Operation(
        "GET /homes/{home_id}/snoozes",
        "homes.list_snoozes",
        "Your own active snoozes in this home (any member), ending soonest first",
        {200: Answer(_OK, responses.SnoozeList)},
        ids=("home_id",),
    ),
    Operation(
        "POST /homes/{home_id}/snoozes",
        "homes.create_snooze",
        "Snooze your own alerts of the whole home, one camera you may see, or one presence"
        " group of it, for for_s seconds or until a time at most 7 days ahead (any member;"
        " life safety always reaches you)",
        {201: Answer("Created", responses.Snooze)},
        body=SnoozeCreate,
        ids=("home_id",),
    ),
    Operation(
        "DELETE /homes/{home_id}/snoozes/{snooze_id}",
        "homes.delete_snooze",
        "End one of your own snoozes now",
        {204: Answer("Ended")},
        ids=("home_id", "snooze_id"),
    ),
    Operation(
        "GET /homes/{home_id}/members",
        "homes.list_members",
        "The home's members, their roles and cameras, in the order they joined",
        {200: Answer(_OK, responses.MemberList)},
        ids=("home_id",),
    ),
    Operation(
        "PATCH /homes/{home_id}/members/{user_id}",
        "homes.update_member",
        "Change a member's role or the cameras they may see (owners; not the account holder)",
        {200: Answer(_OK, responses.Member)},
        body=MemberPatch,
        ids=("home_id", "user_id"),
    ),
    Operation(
        "DELETE /homes/{home_id}/members/{user_id}",
        "homes.remove_member",
        "Remove a member (owners), or leave (your own user id); their phones in the home go"
        " too, and their tokens no longer reach it",
        {204: Answer("Removed")},
        ids=("home_id", "user_id"),
    ),
    Operation(
        "POST /homes/{home_id}/invitations",
        "homes.create_invitation",
        "Invite someone by email with a role and cameras; the token is in this answer only",
        {201: Answer("Created", responses.IssuedInvitation)},
        body=InvitationCreate,
        ids=("home_id",),
        errors=(409,),
    ),
    Operation(
        "GET /homes/{home_id}/invitations",
        "homes.list_invitations",
        "The home's invitations, newest first, with their status (never their tokens)",
        {200: Answer(_OK, responses.InvitationList)},
        ids=("home_id",),
    ),
    Operation(
        "DELETE /homes/{home_id}/invitations/{invitation_id}",
        "homes.revoke_invitation",
        "Revoke an invitation not yet accepted",
        {204: Answer("Revoked")},
        ids=("home_id", "invitation_id"),
        errors=(409,),
    ),
    Operation(
        "POST /invitations/accept",
        "homes.accept_invitation",
        "Join the home of an invitation sent to your account's email",
        {200: Answer(_OK, responses.Home)},
        body=InvitationAccept,
        errors=(404, 409, 410),
    ),
    Operation(
        "GET /homes/{home_id}/escalation",
        "homes.get_escalation",
        "Who hears of a life-safety alert nobody acknowledged, in turn, and the delay between them",
        {200: Answer(_OK, responses.EscalationChain)},
        ids=("home_id",),
    ),
    Operation(
        "PUT /homes/{home_id}/escalation",
        "homes.replace_escalation",
        "Set the escalation chain (members of the home, at most 10; [] alerts everyone at"
        " once) and its delay (owners)",
        {200: Answer(_OK, responses.EscalationChain)},
        body=EscalationUpdate,
        ids=("home_id",),
    ),
    Operation(
        "GET /homes/{home_id}/audit",
        "homes.list_audit",
        "Who armed, disarmed, changed the policy or the members, viewed snapshots: newest"
        " first, by cursor (owners)",
        {200: Answer(_OK, responses.AuditList)},
        query=AuditQuery,
        ids=("home_id",),
    ),
    Operation(
        "DELETE /homes/{home_id}",
        "homes.delete_home",
        "Delete the home with everything in it (owners): gone for its members at once, its"
        " rows and pictures deleted by a job whose status token is in this answer only",
        {202: Answer("Accepted: the deletion is under way", responses.DeletionRequested)},
        ids=("home_id",),
    ),
    Operation(
        "GET /homes/{home_id}/export",
        "homes.export_home",
        "Everything the home holds as a zip, streamed (owners): events.json, notifications.json,"
        " images/ and snapshots/",
        {200: Answer(_OK, media={"application/zip": _picture("application/zip")})},
        ids=("home_id",),
    ),
    Operation(
        "DELETE /users/me",
        "auth.delete_account",
        "Delete your account (password to confirm): the homes you hold, your place in the"
        " others, your phones and sessions; its status token is in this answer only",
        {202: Answer("Accepted: the deletion is under way", responses.DeletionRequested)},
        body=AccountDeletion,
        errors=(409, 429),
    ),
    Operation(
        "GET /deletions/{job_id}",
        "auth.get_deletion",
        "Where a deletion stands: with its status token (Deletion-Token), or the JWT of the"
        " user who asked while they exist; once done, what is left of the target (nothing)",
        {200: Answer(_OK, responses.DeletionStatus)},
        auth="user_or_link",
        ids=("job_id",),
        parameters=(DELETION_TOKEN,),
    ),
    Operation(
        "GET /devices",
        "devices.list_devices",
        "Your devices (of one home with home_id), oldest first",
        {200: Answer(_OK, responses.DeviceList)},
        query=DeviceQuery,
        errors=(404,),
    ),
    Operation(
        "POST /devices",
        "devices.create_device",
        "Register a camera or phone in one of your homes",
        {201: Answer("Registered", responses.Device)},
        body=DeviceCreate,
        errors=(404, 409),
    ),
    Operation(
        "GET /devices/{device_id}",
        "devices.get_device",
        "One of your devices, with its key's id (never the key)",
        {200: Answer(_OK, responses.Device)},
        ids=("device_id",),
    ),
    Operation(
        "DELETE /devices/{device_id}",
        "devices.delete_device",
        "Remove a device; its key stops working at once",
        {204: Answer("Removed")},
        ids=("device_id",),
    ),
    Operation(
        "POST /devices/{device_id}/key",
        "devices.issue_device_key",
        "A new key for the device, shown in this answer only; its previous key stops working"
        " now (rotation)",
        {201: Answer("Issued", responses.IssuedDeviceKey)},
        ids=("device_id",),
    ),
    Operation(
        "DELETE /devices/{device_id}/key",
        "devices.revoke_device_key",
        "Revoke the device's key: refused from the next request on",
        {204: Answer("Revoked")},
        ids=("device_id",),
    ),
    Operation(
        "GET /devices/{device_id}/zones",
        "devices.list_zones",
        "A camera's activity zones, oldest first (422 not_a_camera for a phone)",
        {200: Answer(_OK, responses.ZoneList)},
        ids=("device_id",),
        errors=(422,),
    ),
    Operation(
        "POST /devices/{device_id}/zones",
        "devices.create_zone",
        "Add an activity zone to a camera (owners): at most 16 a camera, each name once;"
        " a bad polygon is 422 invalid_polygon with every problem",
        {201: Answer("Created", responses.Zone)},
        body=ZoneWrite,
        ids=("device_id",),
        errors=(409,),
    ),
    Operation(
        "GET /devices/{device_id}/zones/{zone_id}",
        "devices.get_zone",
        "One activity zone of a camera",
        {200: Answer(_OK, responses.Zone)},
        ids=("device_id", "zone_id"),
        errors=(422,),
    ),
    Operation(
        "PUT /devices/{device_id}/zones/{zone_id}",
        "devices.replace_zone",
        "Replace an activity zone whole (owners)",
        {200: Answer(_OK, responses.Zone)},
        body=ZoneWrite,
        ids=("device_id", "zone_id"),
        errors=(409,),
    ),
    Operation(
        "DELETE /devices/{device_id}/zones/{zone_id}",
        "devices.delete_zone",
        "Delete an activity zone (owners)",
        {204: Answer("Deleted")},
        ids=("device_id", "zone_id"),
        errors=(422,),
    ),
    Operation(
        "POST /events",
        "events.create_event",
        "Report a motion event: the source's JSON body, or an upload (a user's access token,"
        " or the device's own key)",
        {
            202: Answer("Accepted: queued for triage", responses.EventAccepted),
            200: Answer(
                "Replayed: the event this Idempotency-Key already created",
                responses.EventAccepted,
            ),
        },
        auth="user_or_device",
        body=EventCreate,
        errors=(404, 409, 429),
        parameters=(IDEMPOTENCY,),
    ),
    Operation(
        "GET /events",
        "events.list_events",
        "Your events, newest first, by cursor",
        {200: Answer(_OK, responses.EventList)},
        query=EventQuery,
        errors=(404,),
    ),
    Operation(
        "GET /events/{event_id}",
        "events.get_event",
        "One event with its detections",
        {200: Answer(_OK, responses.EventDetail)},
        ids=("event_id",),
    ),
    Operation(
        "GET /events/{event_id}/image",
        "events.get_event_image",
        "The uploaded image bytes",
        {200: Answer(_OK, media={kind: _picture(kind) for kind in IMAGE_TYPES.values()})},
        ids=("event_id",),
    ),
    Operation(
        "GET /events/{event_id}/snapshot",
        "events.get_event_snapshot",
        "The analysed frame with boxes drawn (JPEG); a JWT, or the signed link an alert"
        " carries (expires, sig)",
        {200: Answer(_OK, media={"image/jpeg": _picture("image/jpeg")})},
        auth="user_or_link",
        ids=("event_id",),
        errors=(400,),  # a query parameter given twice
        parameters=SIGNED_LINK,
    ),
    Operation(
        "GET /notifications",
        "notifications.list_notifications",
        "Your notifications (alerts, summaries), newest first, by cursor",
        {200: Answer(_OK, responses.NotificationList)},
        query=NotificationQuery,
        errors=(404,),
    ),
    Operation(
        "GET /notifications/{notification_id}",
        "notifications.get_notification",
        "One notification with the delivery state of its push to each phone",
        {200: Answer(_OK, responses.Notification)},
        ids=("notification_id",),
    ),
    Operation(
        "POST /notifications/{notification_id}/read",
        "notifications.mark_notification_read",
        "Mark a notification read (an escalating alert stops escalating)",
        {200: Answer(_OK, responses.Notification)},
        ids=("notification_id",),
    ),
    Operation(
        "POST /notifications/{notification_id}/ack",
        "notifications.acknowledge_notification",
        "Acknowledge an alert: its escalation stops at once, nobody further down the chain"
        " is woken (idempotent: the first ack is kept)",
        {200: Answer(_OK, responses.Notification)},
        ids=("notification_id",),
    ),
    Operation(
        "POST /notifications/{notification_id}/actions",
        "notifications.take_push_action",
        "Act on an alert from its push (snooze its camera, mute its object, mark it seen,"
        " acknowledge it) with the push's single-use action token in the body: no JWT",
        {200: Answer(_OK, responses.PushActionTaken)},
        auth="public",  # the body's action token is the credential (notify.actions)
        body=PushActionRequest,
        ids=("notification_id",),
        errors=(409, 410),
    ),
    Operation(
        "GET /stream",
        "stream.stream_events",
        "Live events of one of your homes (server-sent events), resumable by Last-Event-ID",
        {200: Answer(_OK, media={"text/event-stream": SSE_EVENT})},
        query=StreamQuery,
        errors=(404, 429),
        parameters=(LAST_EVENT_ID,),
    ),
    Operation(
        "GET /health",
        "service.get_health",
        "Redis, Postgres and queue consumption: ok, degraded (200) or down (503), within 1 s",
        {
            200: Answer("Up: ok or degraded", responses.Health),
            503: Answer(
                "Down: Redis or Postgres failed or did not answer in time (Retry-After)",
                responses.Health,
            ),
        },
        auth="public",
    ),
    Operation(
        "GET /metrics",
        "service.get_metrics",
        "Prometheus text format (Bearer METRICS_TOKEN when the server sets one)",
        {200: Answer(_OK, media={"text/plain": {"type": "string"}})},
        auth="public",
        errors=(401,),
        stores=False,
    ),
    Operation(
        "GET /openapi.json",
        "service.get_openapi",
        "This document",
        {200: Answer(_OK, media={"application/json": {"type": "object"}})},
        auth="public",
        stores=False,
    ),
)
