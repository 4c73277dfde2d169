"""The push contract every provider (FCM, APNs, embedded) implements.

The outbox sender turns one delivery row into a ``PushMessage`` and hands it to the
provider of the device's platform; the provider sends the push once (no hidden retries,
no sleeping on ``Retry-After``; FCM alone may first fetch an OAuth token, or fetch a new
one and resend once when Google says the token expired) and classifies the answer as a
``SendResult``.
Retrying, backing off and pruning dead tokens belong to the sender, which records every
answer, so a provider must never retry on its own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vigil.vocabulary import NotificationKind, Platform, PushAction

# The notification categories the apps register, each with its set of action buttons
# (APNs ``aps.category``, FCM ``click_action``): every member's alert, and an owner's alert
# that also offers to mute the object it saw.
ALERT_CATEGORY = "VIGIL_ALERT"
OWNER_ALERT_CATEGORY = "VIGIL_ALERT_OWNER"
# A button's label where the push itself carries them (Web Push notification actions).
ACTION_TITLES: Mapping[PushAction, str] = {
    PushAction.SNOOZE_CAMERA: "Snooze camera 1 h",
    PushAction.MUTE_OBJECT: "Mute this object",
    PushAction.MARK_SEEN: "Mark as seen",
    PushAction.ACKNOWLEDGE: "Acknowledge",
}


class Outcome(enum.Enum):
    SENT = "sent"  # the provider accepted it
    RETRY = "retry"  # transient (5xx, 429, timeout, connection error): try again later
    INVALID_TOKEN = "invalid_token"  # the token is dead (FCM UNREGISTERED, APNs 410...)
    FAILED = "failed"  # permanent for this message (bad payload, auth misconfigured)


@dataclass(frozen=True)
class PushMessage:
    delivery_id: int  # the outbox row
    # Stable across every resend of the same delivery: the APNs apns-id and the FCM data
    # field ``push_id``, so a resend after an ambiguous failure replaces, not adds.
    push_id: str
    token: str
    platform: Platform  # one of PUSH_PLATFORMS
    kind: NotificationKind
    title: str
    body: str
    # Plain strings only (FCM data values must be strings): event_id, notification_id,
    # home_id, kind, deep_link, snapshot_url, push_id; an alert's action_token, action_url
    # and actions (comma-separated) when it offers actions.
    data: Mapping[str, str] = field(default_factory=dict)
    # Summaries of one home share a key so the newest replaces the last on the phone;
    # an alert's key is its event, so a resend of it replaces itself.
    collapse_key: str = ""
    thread_id: str = ""  # groups a home's notifications (APNs thread-id, FCM tag prefix)
    image_url: str | None = None  # annotated snapshot
    time_sensitive: bool = False  # alerts: high priority / time-sensitive interruption level
    ttl_s: int = 3600  # drop it if the phone stays offline longer than this
    # An escalated life-safety alert: FCM high priority; on iOS a critical alert (through
    # the silent switch and Do Not Disturb) where the app is entitled to send one.
    critical: bool = False
    # What the member may do from the notification, in the order the buttons show, and the
    # category that names this set of buttons (None: no actions).
    actions: tuple[PushAction, ...] = ()
    category: str | None = None


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_id: str | None = None  # FCM message name, APNs apns-id
    status: int | None = None  # HTTP status, when there was an answer
    reason: str | None = None  # FCM errorCode, APNs reason, or the transport error
    retry_after_s: float | None = None  # the provider's Retry-After, when it gave one


class PushProvider(Protocol):
    name: str  # "fcm", "apns", "embedded": recorded on each delivery

    def send(self, message: PushMessage) -> SendResult:
        """One request to the provider; never raises for a provider or network error."""
        ...

    def warm(self) -> None:
        """Get the credentials a send needs now (tokens), so a first send does not wait."""
        ...

    def close(self) -> None: ...


class PlatformProviders(Protocol):
    """The provider each device platform's pushes go to (``notify.providers.Providers``)."""

    def for_platform(self, platform: str) -> PushProvider:
        """ValueError for a platform that gets no pushes."""
        ...
