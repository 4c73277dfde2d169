"""What the HTTP push providers share: reading Retry-After, APNs header values (FCM forwards
them to Apple in its ``apns`` block), and the answer to a request that got no answer."""

from __future__ import annotations

import email.utils
import hashlib
import time
from datetime import UTC

from notify.push import Outcome, PushMessage, SendResult
from vigil.vocabulary import NotificationKind

MAX_REASON_CHARS = 300  # what a delivery row keeps of an error
CRITICAL_SOUND = {"critical": 1, "name": "default", "volume": 1.0}


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def collapse_id(key: str) -> str:
    """APNs refuses a collapse id over 64 bytes; a digest keeps long keys stable and unique."""
    return key if len(key.encode()) <= 64 else hashlib.sha256(key.encode()).hexdigest()


def apns_priority(message: PushMessage) -> str:
    """10: deliver now and wake the phone; 5: when the phone sees fit."""
    return "10" if message.time_sensitive or message.critical else "5"


def interruption_level(message: PushMessage, critical_alerts: bool = False) -> str:
    """A critical push is a critical alert only where the app holds Apple's critical-alerts
    entitlement (``critical_alerts``): without it iOS would drop the level, so it stays
    time-sensitive."""
    if message.critical and critical_alerts:
        return "critical"
    return "time-sensitive" if message.time_sensitive or message.critical else "passive"


def apns_sound(message: PushMessage, critical_alerts: bool = False) -> object | None:
    """The ``aps.sound``: a critical alert's plays at full volume through the silent switch;
    other alerts ring as usual; summaries are silent (None)."""
    if message.critical and critical_alerts:
        return dict(CRITICAL_SOUND)
    return "default" if message.kind == NotificationKind.ALERT else None


def apns_expiration(ttl_s: int, now: float) -> str:
    """The ``apns-expiration`` header: 0 asks APNs for one attempt only, so a zero ttl
    cannot mean "forever"."""
    return str(int(now) + ttl_s if ttl_s > 0 else 0)


def transport_failure(error: Exception, prefix: str = "") -> SendResult:
    """A request that got no answer (timeout, refused connection): worth another try."""
    reason = f"{prefix}{type(error).__name__}: {error}"
    return SendResult(Outcome.RETRY, reason=reason[:MAX_REASON_CHARS])
