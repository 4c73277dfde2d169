"""Request bodies and query strings, validated with pydantic (also the OpenAPI schemas)."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from notify.policy import DecisionKind, Reason
from schedules.score import ARM_MODES, LABELS

# What `mode` a client may send with an event; the source sends "security".
EVENT_MODES = ("security", "monitoring", "test")
EVENT_STATUSES = ("queued", "processing", "analyzed", "skipped", "failed")
NOTIFICATION_KINDS = ("alert", "summary")
DECISION_KINDS = tuple(k.value for k in DecisionKind)
DECISION_REASONS = tuple(r.value for r in Reason)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


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


HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
Score = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_not_bool), AfterValidator(_finite)]
Id = Annotated[int, Field(ge=1), BeforeValidator(_not_bool)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]
# The labels the priority score knows; an unknown label is refused, not silently ignored.
Label = Literal[LABELS]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LoginRequest(Strict):
    email: Annotated[str, Field(min_length=3, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class EventCreate(Strict):
    """The source's body as written, plus optional on-device lite results.

    ``device_id`` is a device's numeric id, or its name (unique within a home), as the
    source's apps send e.g. "test_device_001".
    """

    device_id: Annotated[
        int | Annotated[str, Field(min_length=1, max_length=100)], BeforeValidator(_not_bool)
    ]
    location: Annotated[str, Field(min_length=1, max_length=64)]
    mode: Literal[EVENT_MODES]  # type: ignore[valid-type]
    motion_score: Score
    image_url: HttpUrl | None = None
    lite_results: dict[Label, Score] | None = None


class HomePatch(Strict):
    """Fields a home's owner may change. The tier comes from the subscription, never here."""

    arm_mode: Literal[ARM_MODES] | None = None  # type: ignore[valid-type]
    timezone: TimeZone | None = None
    quiet_hours_start: dt.time | None = None
    quiet_hours_end: dt.time | None = None


Count = Annotated[int, BeforeValidator(_not_bool)]  # JSON true is not 1 here


class PolicyUpdate(Strict):
    """A home's notification policy; fields left out keep their current value."""

    cooldown_s: Annotated[Count, Field(ge=0, le=86400)] | None = None
    hourly_budget: Annotated[Count, Field(ge=0, le=1000)] | None = None
    alert_labels: Annotated[list[Literal[LABELS]], Field(max_length=3)] | None = None  # type: ignore[valid-type]
    min_score: (
        Annotated[
            float, BeforeValidator(_not_bool), Field(ge=0.05, le=1.0), AfterValidator(_finite)
        ]
        | None
    ) = None
    summary_window_s: Annotated[Count, Field(ge=10, le=86400)] | None = None
    summary_idle_s: Annotated[Count, Field(ge=5, le=86400)] | None = None
    summary_interval_s: Annotated[Count, Field(ge=0, le=86400)] | None = None


class DeviceCreate(Strict):
    home_id: Id
    kind: Literal["camera", "phone"]
    platform: Literal["ios", "android", "web", "camera"]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    push_token: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


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
    status: Literal[EVENT_STATUSES] | None = None  # type: ignore[valid-type]
    # What the digest decided, and why (docs/notifications.md lists both).
    decision: Literal[DECISION_KINDS] | None = None  # type: ignore[valid-type]
    reason: Literal[DECISION_REASONS] | None = None  # type: ignore[valid-type]


DELIVERY_STATES = ("pending", "sending", "sent", "failed", "invalid_token")


class NotificationQuery(PageQuery):
    kind: Literal[NOTIFICATION_KINDS] | None = None  # type: ignore[valid-type]
    event_id: Id | None = None
    unread: bool | None = None  # true: only unread; false: only read
    # Notifications with at least one delivery in this state (e.g. failed pushes).
    delivery: Literal[DELIVERY_STATES] | None = None  # type: ignore[valid-type]
