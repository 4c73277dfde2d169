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
)
from pydantic_core import PydanticCustomError

from inference.urls import ImageUrl, parse_image_url
from vigil.vocabulary import (
    ArmMode,
    DecisionKind,
    DeliveryStatus,
    DeviceKind,
    EventMode,
    EventStatus,
    NotificationKind,
    Platform,
    PresenceGroup,
    Reason,
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

    email: Annotated[str, Field(min_length=3, max_length=320), AfterValidator(check_email)]
    password: Annotated[str, Field(min_length=10, max_length=1024)]
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
