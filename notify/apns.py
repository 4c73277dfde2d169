"""APNs over HTTP/2 with a token-based (.p8) provider key, one request per send.

httpx speaks HTTP/2 over TLS (ALPN) to Apple and with prior knowledge over plain http to
the local dev server. The ES256 provider token is shared by all threads and renewed
every ~50 minutes: Apple refuses one older than an hour and answers
TooManyProviderTokenUpdates to one renewed more often than every 20 minutes.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify.http_push import (
    apns_expiration,
    apns_priority,
    apns_sound,
    collapse_id,
    interruption_level,
    retry_after_s,
    transport_failure,
)
from notify.push import Outcome, PushMessage, SendResult

APNS_PRODUCTION = "https://api.push.apple.com"
DEFAULT_TIMEOUT_S = 10.0
TOKEN_REFRESH_S = 50 * 60
_DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic"})
_STALE_JWT_REASONS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})


def apns_id(push_id: str) -> str:
    """The apns-id for a push: its push_id when that is a UUID, else a stable UUID of it."""
    try:
        return str(uuid.UUID(push_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vigil-push:{push_id}"))


def apns_payload(message: PushMessage, critical_alerts: bool = False) -> dict[str, object]:
    """The JSON body: ``aps`` plus the message's data keys at the top level (Apple's custom
    keys, beside ``aps``: the action token and URL among them); ``critical_alerts``: the app
    may show critical alerts (``APNS_CRITICAL_ALERTS``)."""
    aps: dict[str, object] = {
        "alert": {"title": message.title, "body": message.body},
        "interruption-level": interruption_level(message, critical_alerts),
    }
    if message.category:
        aps["category"] = message.category  # the registered category's action buttons
    sound = apns_sound(message, critical_alerts)
    if sound is not None:
        aps["sound"] = sound
    if message.thread_id:
        aps["thread-id"] = message.thread_id
    payload: dict[str, object] = {k: v for k, v in message.data.items() if k != "aps"}
    if message.image_url:
        aps["mutable-content"] = 1  # the notification service extension fetches the image
        payload.setdefault("image_url", message.image_url)
    payload["aps"] = aps
    return payload


def classify_response(status: int, headers: httpx.Headers, body: bytes) -> SendResult:
    """Turn one APNs answer into a SendResult."""
    if status == 200:
        return SendResult(Outcome.SENT, provider_id=headers.get("apns-id"), status=status)
    try:
        reason = str(json.loads(body).get("reason") or f"HTTP {status}")
    except (ValueError, AttributeError):
        reason = f"HTTP {status}"
    if status == 410 or (status == 400 and reason in _DEAD_TOKEN_REASONS):
        return SendResult(Outcome.INVALID_TOKEN, status=status, reason=reason)
    if status == 429 or status >= 500 or (status == 403 and reason in _STALE_JWT_REASONS):
        wait = retry_after_s(headers.get("retry-after"))
        return SendResult(Outcome.RETRY, status=status, reason=reason, retry_after_s=wait)
    return SendResult(Outcome.FAILED, status=status, reason=reason)


class ApnsProvider:
    """Push to APNs with a provider key; thread-safe, connections open on first use."""

    name = "apns"

    def __init__(
        self,
        *,
        key_pem: str | bytes,
        key_id: str,
        team_id: str,
        topic: str,
        endpoint: str = APNS_PRODUCTION,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        token_refresh_s: float = TOKEN_REFRESH_S,
        clock: Callable[[], float] = time.time,
        critical_alerts: bool = False,
    ) -> None:
        missing = [
            n for n, v in (("key_id", key_id), ("team_id", team_id), ("topic", topic)) if not v
        ]
        if missing:
            raise ValueError(f"APNs config missing: {', '.join(missing)}")
        if timeout_s <= 0:
            raise ValueError("APNs timeout_s must be positive")
        pem = key_pem.encode() if isinstance(key_pem, str) else key_pem
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"APNs key is not a PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("APNs key must be the P-256 (.p8) key Apple issued")
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.token_refresh_s = token_refresh_s
        self.critical_alerts = critical_alerts
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        self._jwt: tuple[str, float] | None = None  # (token, issued at)
        self._idle: list[httpx.Client] = []  # clients no thread is using
        self._tls: ssl.SSLContext | None = None  # shared: loading the CA bundle is slow
        self._closed = False

    def warm(self) -> None:
        self.provider_token()

    def provider_token(self) -> str:
        """The cached ES256 provider JWT, renewed once it is ``token_refresh_s`` old."""
        with self._lock:
            now = self._clock()
            if self._jwt is None or now - self._jwt[1] >= self.token_refresh_s:
                token = jwt.encode(
                    {"iss": self.team_id, "iat": int(now)},
                    self._key,
                    algorithm="ES256",
                    headers={"kid": self.key_id},
                )
                self._jwt = (token, now)
            return self._jwt[0]

    def _drop_token(self, stale: str) -> None:
        with self._lock:
            if self._jwt is not None and self._jwt[0] == stale:  # not one a peer just made
                self._jwt = None

    def _checkout(self) -> httpx.Client:
        # One client (one HTTP/2 connection) per concurrent sender: httpcore's sync HTTP/2
        # is not thread-safe (encode/httpx#3566), and a pool keeps connections across
        # batches instead of a TLS handshake per new thread. Created on demand, never at
        # configuration, so a forked worker opens its own.
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
        return httpx.Client(http1=False, http2=True, timeout=self.timeout_s, verify=self._tls)

    def _checkin(self, client: httpx.Client) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(client)
                return
        client.close()

    def headers(self, message: PushMessage) -> dict[str, str]:
        """The APNs request headers for a message (without authorization)."""
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": apns_priority(message),
            "apns-expiration": apns_expiration(message.ttl_s, self._clock()),
            "apns-id": apns_id(message.push_id),
        }
        if message.collapse_key:
            headers["apns-collapse-id"] = collapse_id(message.collapse_key)
        return headers

    def send(self, message: PushMessage) -> SendResult:
        """One POST to APNs; network trouble comes back as RETRY, never raised."""
        url = f"{self.endpoint}/3/device/{urllib.parse.quote(message.token, safe='')}"
        payload = apns_payload(message, self.critical_alerts)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        token = self.provider_token()
        headers = {**self.headers(message), "authorization": f"bearer {token}"}
        client = self._checkout()
        try:
            response = client.post(url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        finally:
            self._checkin(client)
        result = classify_response(response.status_code, response.headers, response.content)
        if result.status == 403 and result.outcome is Outcome.RETRY:
            self._drop_token(token)
        return result

    def close(self) -> None:
        """Close every connection; a send still in flight closes its own when done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()
