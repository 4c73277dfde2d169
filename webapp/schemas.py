"""Request bodies and query strings, validated with pydantic (also the OpenAPI schemas).

Every request model derives from ``Strict``: unknown fields are refused, and no string
anywhere in a request (a field, an item of a list, a key or value of an object) may carry a
control character (U+0000-U+001F, U+007F) or a lone surrogate: they are never meaningful
in these fields and PostgreSQL refuses NUL outright.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from inference.urls import ImageUrl, parse_image_url
from vigil.settings import MAX_RETENTION_DAYS
from vigil.vocabulary import (
    ArmMode,
    AuditAction,
    DecisionKind,
    DeliveryStatus,
    DeviceKind,
    EventMode,
    EventStatus,
    NotificationKind,
    Platform,
    PresenceGroup,
    PushAction,
    Reason,
    Role,
    ZoneKind,
)

# C0 controls, DEL and lone surrogates (which cannot be encoded as UTF-8).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# The same rule as a JSON Schema pattern, for the published document.
TEXT_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
# Deeper than any request model: a bound for walking client data.
_MAX_WALK_DEPTH = 64


def _has_control_characters(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return CONTROL_CHARACTERS.search(value) is not None
    if depth > _MAX_WALK_DEPTH:
        return False  # the field's own validation refuses such a value
    if isinstance(value, dict):
        return any(
            _has_control_characters(k, depth + 1) or _has_control_characters(v, depth + 1)
            for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return any(_has_control_characters(item, depth + 1) for item in value)
    return False


def _image_url(value: str) -> ImageUrl:
    # InvalidUrlError and UrlSchemeError are ValueErrors: pydantic reports their message.
    return parse_image_url(value)


def check_timezone(value: str) -> str:
    """``value`` if it names an IANA time zone; ValueError otherwise."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/Paris')") from None
    return value


def _not_bool(value: object) -> object:
    # JSON true/false are not numbers here, though Python treats them as 1 and 0.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


# http(s) URLs exactly as the image fetcher parses them (inference.urls).
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_image_url)]
# Scores are stored as PostgreSQL ``real``, which refuses a non-zero value too small to
# represent ("underflow", e.g. 1e-300): six decimals are plenty for a probability.
SCORE_DECIMALS = 6


def _score_precision(value: float) -> float:
    return round(value, SCORE_DECIMALS)


Score = Annotated[
    float,
    Field(ge=0.0, le=1.0),
    BeforeValidator(_not_bool),
    AfterValidator(_finite),
    AfterValidator(_score_precision),
]
Id = Annotated[int, Field(ge=1), BeforeValidator(_not_bool)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]


def _values(words: type[StrEnum]) -> WithJsonSchema:
    """A field of the domain's words (vigil.vocabulary) is published with its values in
    place: the document needs no schema of its own per enum, and query parameters stay
    plain."""
    return WithJsonSchema({"enum": [word.value for word in words], "type": "string"})


# The labels the priority score knows; an unknown label is refused, not silently ignored.
Label = Annotated[PresenceGroup, _values(PresenceGroup)]


class Strict(BaseModel):
    """Base of every request model: unknown fields refused, no control characters."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        # Before any coercion or stripping, so what is checked is what the client sent.
        if _has_control_characters(value):
            raise PydanticCustomError(
                "control_character",
                "must not contain control characters (U+0000-U+001F, U+007F) or lone surrogates",
            )
        return value


class LoginRequest(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ana@example.com", "password": "correct-horse"}]}
    )

    email: Annotated[str, Field(min_length=3, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


def check_email(value: str) -> str:
    """``value`` if it looks like an address (one @, a dot in the domain, no spaces)."""
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or any(c.isspace() for c in value):
        raise ValueError("must be an email address, e.g. ana@example.com")
    return value


# An address as a new account or an invitation takes it, and a new account's password.
Email = Annotated[str, Field(min_length=3, max_length=320), AfterValidator(check_email)]
NewPassword = Annotated[str, Field(min_length=10, max_length=1024)]


class RegisterRequest(Strict):
    """A new account and its first home (standard tier; the tier comes from billing)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ana@example.com",
                    "password": "correct-horse-battery",
                    "home_name": "Maple Street",
                    "timezone": "Europe/Paris",
                }
            ]
        }
    )

    email: Email
    password: NewPassword
    home_name: Annotated[str, Field(min_length=1, max_length=100)] = "Home"
    timezone: TimeZone = "UTC"


class EventCreate(Strict):
    """The source's body as written, plus optional on-device lite results.

    ``device_id`` is a device's numeric id, or its name (unique within a home), as the
    source's apps send e.g. "test_device_001".
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image_url": "https://example.com/test.jpg",
                    "device_id": "test_device_001",
                    "location": "front_door",
                    "mode": "security",
                    "motion_score": 0.8,
                }
            ]
        }
    )

    device_id: Annotated[
        int | Annotated[str, Field(min_length=1, max_length=100)], BeforeValidator(_not_bool)
    ]
    location: Annotated[str, Field(min_length=1, max_length=64)]
    mode: Annotated[EventMode, _values(EventMode)]  # the source sends "security"
    motion_score: Score
    image_url: HttpUrl | None = None
    lite_results: dict[Label, Score] | None = None

    @property
    def lite_scores(self) -> dict[str, float] | None:
        """``lite_results`` keyed by the labels' text, as the priority score takes them."""
        if self.lite_results is None:
            return None
        return {str(label): score for label, score in self.lite_results.items()}


class HomePatch(Strict):
    """Fields a home's owner may change. The tier comes from the subscription, never here."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"arm_mode": "away"}]})

    arm_mode: Annotated[ArmMode, _values(ArmMode)] | None = None
    timezone: TimeZone | None = None
    quiet_hours_start: dt.time | None = None
    quiet_hours_end: dt.time | None = None
    # Days of history the home keeps, at most its tier's; null: the tier's (owners only).
    retention_days: (
        Annotated[int, Field(ge=1, le=MAX_RETENTION_DAYS), BeforeValidator(_not_bool)] | None
    ) = None


# Constraints come before the BeforeValidator: after it, pydantic cannot attach them to the
# number's schema and would publish them as "ge"/"le", which JSON Schema does not know.
Seconds = Annotated[int, Field(ge=0, le=86400), BeforeValidator(_not_bool)]


class PolicyUpdate(Strict):
    """A home's notification policy; fields left out keep their current value."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"cooldown_s": 600, "alert_labels": ["person"]}]}
    )

    cooldown_s: Seconds | None = None
    hourly_budget: Annotated[int, Field(ge=0, le=1000), BeforeValidator(_not_bool)] | None = None
    alert_labels: Annotated[list[Label], Field(max_length=3)] | None = None
    min_score: (
        Annotated[
            float, Field(ge=0.05, le=1.0), BeforeValidator(_not_bool), AfterValidator(_finite)
        ]
        | None
    ) = None
    summary_window_s: Annotated[int, Field(ge=10, le=86400), BeforeValidator(_not_bool)] | None = (
        None
    )
    summary_idle_s: Annotated[int, Field(ge=5, le=86400), BeforeValidator(_not_bool)] | None = None
    summary_interval_s: Seconds | None = None


def _wall_clock(value: dt.time) -> dt.time:
    # Answered as "HH:MM" on the home's own clock: an offset or seconds would be lost.
    if value.tzinfo is not None or value.second or value.microsecond:
        raise ValueError('must be a local time "HH:MM", without seconds or offset')
    return value


# Far enough from the ends of a datetime that no time zone carries it out of range.
_MUTE_RANGE = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC))


def _mute_until(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("must carry its UTC offset, e.g. 2025-06-01T23:00:00+02:00")
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not _MUTE_RANGE[0] <= utc < _MUTE_RANGE[1]:
        raise ValueError("must fall between 1970 and 9998")
    return utc


WallClock = Annotated[dt.time, AfterValidator(_wall_clock)]
MAX_MUTE_S = 7 * 86400


class PreferencesPatch(Strict):
    """The caller's own notification preferences in one home; fields left out keep their
    value, null resets one to its default (``mute_for_s`` and ``summaries`` take no null)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"mute_for_s": 3600},
                {
                    "quiet_hours_start": "23:00",
                    "quiet_hours_end": "07:00",
                    "alert_labels": ["person"],
                    "summaries": False,
                },
            ]
        }
    )

    muted_until: Annotated[dt.datetime, AfterValidator(_mute_until)] | None = None
    mute_for_s: Annotated[int, Field(ge=60, le=MAX_MUTE_S), BeforeValidator(_not_bool)] | None = (
        None
    )
    quiet_hours_start: WallClock | None = None
    quiet_hours_end: WallClock | None = None
    alert_cameras: Annotated[list[Id], Field(max_length=500)] | None = None
    alert_labels: Annotated[list[Label], Field(max_length=3)] | None = None
    summaries: bool | None = None


MAX_SNOOZE_S = 7 * 86400


class SnoozeCreate(Strict):
    """A snooze of the caller's own alerts: of the whole home, one camera (``device_id``),
    or one camera's presence group (``label``), for ``for_s`` seconds from the server's
    clock or until ``until`` (in the future, at most 7 days ahead): exactly one of the
    two. Life-safety alerts still reach the member."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"device_id": 3, "for_s": 3600},
                {"device_id": 3, "label": "vehicle", "until": "2025-06-01T18:00:00+02:00"},
                {"for_s": 1800},
            ]
        }
    )

    device_id: Id | None = None
    label: Label | None = None
    for_s: Annotated[int, Field(ge=60, le=MAX_SNOOZE_S), BeforeValidator(_not_bool)] | None = None
    until: Annotated[dt.datetime, AfterValidator(_mute_until)] | None = None

    @model_validator(mode="after")
    def _one_end_and_a_camera_for_a_label(self) -> SnoozeCreate:
        if (self.for_s is None) == (self.until is None):
            raise ValueError("send for_s or until, exactly one")
        if self.label is not None and self.device_id is None:
            raise ValueError("a label needs its camera: send device_id with it")
        return self


def _distinct(values: list[int]) -> list[int]:
    if len(set(values)) != len(values):
        raise ValueError("must not name a member twice")
    return values


class EscalationUpdate(Strict):
    """A home's escalation chain, replaced whole: members of the home in the order they
    hear of a life-safety alert nobody acknowledged ([]: everyone at once), and the delay
    between steps (left out: kept)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"members": [1, 5], "delay_s": 60}]})

    members: Annotated[list[Id], Field(max_length=10), AfterValidator(_distinct)]
    delay_s: Annotated[int, Field(ge=5, le=3600), BeforeValidator(_not_bool)] | None = None


class DeviceCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"home_id": 1, "kind": "camera", "platform": "camera", "name": "test_device_001"},
                {
                    "home_id": 1,
                    "kind": "phone",
                    "platform": "android",
                    "name": "ana-phone",
                    "push_token": "fcm-registration-token",
                },
            ]
        }
    )

    home_id: Id
    kind: Annotated[DeviceKind, _values(DeviceKind)]
    platform: Annotated[Platform, _values(Platform)]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    push_token: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class DeviceQuery(Strict):
    """``GET /devices``: all of the caller's devices, or one home's."""

    home_id: Id | None = None


# A zone's coordinate: its range, like the polygon's size and shape, is checked by the route
# (notify.zones.validate_polygon), which lists every problem as invalid_polygon.
Coordinate = Annotated[
    float,
    BeforeValidator(_not_bool),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1}),
]


def _distinct_groups(values: list[PresenceGroup]) -> list[PresenceGroup]:
    if len(set(values)) != len(values):
        raise ValueError("must not name a group twice")
    return values


class ZoneWrite(Strict):
    """An activity zone of a camera (created, or replaced whole): a polygon of 3 to 32
    [x, y] points in normalised frame coordinates (0..1, from the top left), simple and
    with an area. groups: the presence groups it applies to (left out or null: all)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "driveway",
                    "kind": "alert",
                    "groups": ["person", "vehicle"],
                    "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]],
                }
            ]
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=64)]
    kind: Annotated[ZoneKind, _values(ZoneKind)]
    groups: (
        Annotated[list[Label], Field(min_length=1, max_length=3), AfterValidator(_distinct_groups)]
        | None
    ) = None
    polygon: Annotated[
        list[tuple[Coordinate, Coordinate]],
        Field(json_schema_extra={"minItems": 3, "maxItems": 32}),
    ]


def _utc_if_naive(value: dt.datetime | None) -> dt.datetime | None:
    # A time without an offset is read as UTC rather than the server's local zone.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class PageQuery(Strict):
    """What every cursor-paged list takes: a home, a time range, a page size, a cursor."""

    home_id: Id | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50
    cursor: Annotated[str, Field(max_length=200)] | None = None

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _utc_if_naive(value)


class EventQuery(PageQuery):
    status: Annotated[EventStatus, _values(EventStatus)] | None = None
    # What the digest decided, and why (docs/notifications.md lists both).
    decision: Annotated[DecisionKind, _values(DecisionKind)] | None = None
    reason: Annotated[Reason, _values(Reason)] | None = None


class NotificationQuery(PageQuery):
    kind: Annotated[NotificationKind, _values(NotificationKind)] | None = None
    event_id: Id | None = None
    unread: bool | None = None  # true: only unread; false: only read
    # Notifications with at least one delivery in this state (e.g. failed pushes).
    delivery: Annotated[DeliveryStatus, _values(DeliveryStatus)] | None = None


# --- households -------------------------------------------------------------------------

MemberRole = Annotated[Role, _values(Role)]
# Cameras (device ids) of the home a member may see; null: every camera, []: none.
CameraList = Annotated[list[Id], Field(max_length=500)]
INVITATION_DEFAULT_S = 7 * 86400


class MemberPatch(Strict):
    """A member's role and the cameras they may see; fields left out keep their value."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"role": "viewer", "cameras": [3]}, {"cameras": None}]}
    )

    role: MemberRole | None = None
    cameras: CameraList | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> MemberPatch:
        if not self.model_fields_set:
            raise ValueError("send role, cameras or both")
        if "role" in self.model_fields_set and self.role is None:
            raise ValueError("role cannot be null")
        return self


class InvitationCreate(Strict):
    """Whom to invite, and the role and cameras they will have once they accept."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "bob@example.com", "role": "member", "cameras": None}]
        }
    )

    email: Email
    role: MemberRole = Role.MEMBER
    cameras: CameraList | None = None
    expires_in_s: Annotated[int, Field(ge=60, le=30 * 86400), BeforeValidator(_not_bool)] = (
        INVITATION_DEFAULT_S
    )


InvitationToken = Annotated[str, Field(min_length=1, max_length=200)]


class InvitationAccept(Strict):
    """An invitation's token, accepted by the user it was sent to, logged in."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"token": "vi_mZ3cT1rXoG4uW0pQ"}]})

    token: InvitationToken


class JoinRequest(Strict):
    """A new account for an invitation's email, joining its home."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"token": "vi_mZ3cT1rXoG4uW0pQ", "password": "correct-horse-battery"}]
        }
    )

    token: InvitationToken
    password: NewPassword


class PushActionRequest(Strict):
    """An action taken from an alert's push, with the action token the push carried."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "va_1.9.1748782800.2kJ0cYpTqzq3Hq6m4Zb8yWvXo1sR5tU7aB9dE0fG1hI",
                    "action": "snooze_camera",
                }
            ]
        }
    )

    token: Annotated[str, Field(min_length=1, max_length=200)]
    action: Annotated[PushAction, _values(PushAction)]


class AuditQuery(Strict):
    """``GET /homes/<id>/audit``: newest first, by cursor, optionally one action."""

    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=200)] | None = None
    action: Annotated[AuditAction, _values(AuditAction)] | None = None


class AccountDeletion(Strict):
    """``DELETE /users/me``: the account's password, to confirm."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"password": "correct-horse"}]})

    password: Annotated[str, Field(min_length=1, max_length=1024)]
