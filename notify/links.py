"""Links a push carries: the app's deep link, a signed, expiring snapshot URL, and where an
alert's actions are posted (``notify.actions``).

A phone shows the annotated snapshot before the user opens the app: Android's FCM SDK
fetches the notification image without our JWT, and an iOS notification extension would
need the token in shared storage. So the snapshot URL carries its own proof instead: an
HMAC over the event id and an expiry, checked by ``GET /events/<id>/snapshot``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from vigil.settings import Settings

DEFAULT_BASE_URL = "http://localhost:5000"
DEFAULT_SNAPSHOT_TTL_S = 24 * 3600
# What a signed link carries: an HMAC-SHA256 as lowercase hex, a Unix time in seconds.
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_MAX_EXPIRES = 10**12 - 1


def deep_link(event_id: int | None, notification_id: int) -> str:
    """Where the app opens: the event for an alert, the notification for a summary."""
    if event_id is not None:
        return f"vigil://events/{event_id}"
    return f"vigil://notifications/{notification_id}"


def _key(secret: str) -> bytes:
    # A key of its own, derived from the shared secret, so a snapshot signature can never
    # be replayed as anything else signed with the same secret.
    return hmac.new(secret.encode(), b"vigil snapshot url v1", hashlib.sha256).digest()


def snapshot_signature(secret: str, event_id: int, expires: int) -> str:
    message = f"{event_id}:{expires}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def parse_expires(value: str | int) -> int | None:
    """A link's ``expires`` as a Unix time, or None unless it is 1-12 ASCII digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value <= _MAX_EXPIRES else None
    if isinstance(value, str) and _EXPIRES.fullmatch(value):
        return int(value)
    return None


def snapshot_signature_valid(
    secret: str, event_id: int, expires: int | str, signature: str, now: float | None = None
) -> bool:
    """Whether ``signature`` signs this event until ``expires``, and that is still ahead.

    Anything a client may put in the query is safe here: a value of the wrong form (not
    64 lowercase hex digits, not a plain number) is simply not valid, never an error.
    """
    when = parse_expires(expires)
    if when is None or when < (time.time() if now is None else now):
        return False
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return False
    expected = snapshot_signature(secret, event_id, when)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii"))


@dataclass(frozen=True)
class Links:
    base_url: str = DEFAULT_BASE_URL
    secret: str | None = None  # without it, pushes carry no snapshot URL and no actions
    snapshot_ttl_s: int = DEFAULT_SNAPSHOT_TTL_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Links:
        """PUBLIC_BASE_URL, and SNAPSHOT_URL_SECRET (else JWT_SECRET_KEY) to sign with (a key
        derived from it for each purpose: snapshot links here, action tokens in
        ``notify.actions``)."""
        return cls(base_url=settings.public_base_url.rstrip("/"), secret=settings.snapshot_secret)

    def snapshot_url(self, event_id: int, now: float | None = None) -> str | None:
        if not self.secret:
            return None
        expires = int((time.time() if now is None else now) + self.snapshot_ttl_s)
        query = urlencode(
            {"expires": expires, "sig": snapshot_signature(self.secret, event_id, expires)}
        )
        return f"{self.base_url}/events/{event_id}/snapshot?{query}"

    def action_url(self, notification_id: int) -> str:
        """Where the phone posts an action taken on the notification's push."""
        return f"{self.base_url}/notifications/{notification_id}/actions"
