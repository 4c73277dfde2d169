"""FCM HTTP v1: pyfcm writes the message, this module sends it, one HTTP request per send.

Of pyfcm 2.1.1's public API only ``FCMNotification.parse_payload`` is used: it turns the
message options into the v1 request body. Its sending calls (``notify``, ``send_request``)
cannot do what a worker needs:

* ``send_request`` sleeps for as long as ``Retry-After`` says and sends again, without
  bound, inside the task; its default adapter also retries a POST answered 502 or 503.
  A worker must hand such answers to the sender, which backs off in the outbox instead.
* ``notify`` turns each error answer into an exception that carries neither the HTTP
  status, nor ``Retry-After``, nor FCM's ``errorCode``: the sender needs all three to tell
  a dead token from a busy server.
* Each thread fetches its own OAuth token (every 30 minutes), through a google-auth
  transport without our timeout, which retries a token endpoint answering 5xx, sleeping
  between tries.
* The endpoint is a class constant, and the credentials' project wins over one given:
  ``FCM_ENDPOINT`` and ``FCM_PROJECT_ID`` could not apply.

So the POST, one OAuth token shared by every thread, and the one resend after
``ACCESS_TOKEN_EXPIRED`` are here: one ``send`` is one POST (plus, at most, one token fetch
and one resend). ``tests/test_push_fcm.py`` pins the pyfcm version and what
``parse_payload`` writes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

from notify.http_push import (
    MAX_REASON_CHARS,
    apns_expiration,
    apns_priority,
    apns_sound,
    collapse_id,
    interruption_level,
    retry_after_s,
    transport_failure,
)
from notify.push import ACTION_TITLES, Outcome, PushMessage, SendResult
from vigil.vocabulary import NotificationKind, Platform

DEFAULT_FCM_ENDPOINT = "https://fcm.googleapis.com/v1/projects"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TIMEOUT_S = 10.0
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_CONNECTIONS = 32  # kept open to FCM, shared by the sending threads

JsonObject = dict[str, object]


class _OneTryTokenTransport(google.auth.transport.Request):
    """google-auth's requests transport with our timeout and no retry: a token endpoint
    that answers anything but 200 raises at once, which leaves google-auth's retry loop
    before its first sleep."""

    def __init__(self, timeout_s: float) -> None:
        self._inner = google.auth.transport.requests.Request(requests.Session())
        self._timeout_s = timeout_s

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: object,
    ) -> google.auth.transport.Response:
        response = self._inner(url, method, body, headers, timeout=self._timeout_s, **kwargs)
        if response.status != 200:
            raise google.auth.exceptions.RefreshError(
                f"token endpoint answered {response.status}: {response.data[:200]!r}",
                retryable=response.status == 429 or response.status >= 500,
            )
        return response

    def close(self) -> None:
        self._inner.session.close()


class _AccessToken:
    """One OAuth access token for every sending thread, fetched again only near expiry."""

    def __init__(self, credentials: service_account.Credentials, timeout_s: float) -> None:
        self._credentials = credentials
        self._transport = _OneTryTokenTransport(timeout_s)
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            if not self._credentials.valid:
                self._credentials.refresh(self._transport)
            token = self._credentials.token
        if not isinstance(token, str):
            raise google.auth.exceptions.RefreshError("the token endpoint gave no access token")
        return token

    def drop(self, stale: str) -> None:
        """Forget a token FCM refused, unless another thread already replaced it."""
        with self._lock:
            if self._credentials.token == stale:
                self._credentials.token = None

    def close(self) -> None:
        self._transport.close()


def access_token_expired(status: int, body: bytes) -> bool:
    """Google's answer to a token past its expiry: 401 with reason ACCESS_TOKEN_EXPIRED."""
    if status != 401:
        return False
    try:
        details = json.loads(body).get("error", {}).get("details", [])
        return any(detail.get("reason") == "ACCESS_TOKEN_EXPIRED" for detail in details)
    except (ValueError, AttributeError, TypeError):
        return False


def _error_fields(body: bytes) -> tuple[str | None, str, list[str]]:
    """(FcmError errorCode, error message, field-violation fields) of a v1 error body."""
    try:
        error = json.loads(body).get("error") or {}
        code, fields = None, []
        for detail in error.get("details") or []:
            if detail.get("@type") == _FCM_ERROR:
                code = detail.get("errorCode")
            elif detail.get("@type") == _BAD_REQUEST:
                fields += [str(v.get("field", "")) for v in detail.get("fieldViolations", [])]
        return code or error.get("status"), str(error.get("message", "")), fields
    except (ValueError, AttributeError, TypeError):
        return None, "", []


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> SendResult:
    """Turn one FCM v1 answer into a SendResult."""
    if status == 200:
        try:
            name = json.loads(body).get("name")
        except (ValueError, AttributeError):
            name = None
        return SendResult(Outcome.SENT, provider_id=name, status=status)
    code, text, fields = _error_fields(body)
    reason = code or f"HTTP {status}"
    about_token = any(f.endswith("token") for f in fields) or "registration token" in text.lower()
    if code in _DEAD_TOKEN_CODES or (code == "INVALID_ARGUMENT" and about_token):
        return SendResult(Outcome.INVALID_TOKEN, status=status, reason=reason)
    if status == 429 or status >= 500:
        wait = retry_after_s(headers.get("Retry-After"))
        return SendResult(Outcome.RETRY, status=status, reason=reason, retry_after_s=wait)
    return SendResult(Outcome.FAILED, status=status, reason=f"{reason}: {text}"[:MAX_REASON_CHARS])


def _urgent(message: PushMessage) -> bool:
    """High priority: an alert, and above all an escalated one."""
    return message.time_sensitive or message.critical


def _android_config(message: PushMessage, ttl_s: int) -> JsonObject:
    alert = message.kind == NotificationKind.ALERT
    notification = {"channel_id": "alerts" if alert else "summaries"}
    android: JsonObject = {
        "priority": "high" if _urgent(message) else "normal",
        "ttl": f"{ttl_s}s",
        "notification": notification,
    }
    if message.collapse_key:
        # The tag makes a resend, or a newer summary, replace the shown notification.
        android["collapse_key"] = message.collapse_key
        notification["tag"] = message.collapse_key
    if message.category:
        # The intent a tap on the notification opens: the app's alert screen with its actions.
        notification["click_action"] = message.category
    return android


def _apns_config(message: PushMessage, ttl_s: int, critical_alerts: bool) -> JsonObject:
    aps: JsonObject = {"interruption-level": interruption_level(message, critical_alerts)}
    headers = {
        "apns-priority": apns_priority(message),
        "apns-push-type": "alert",
        "apns-expiration": apns_expiration(ttl_s, time.time()),
    }
    if message.collapse_key:
        headers["apns-collapse-id"] = collapse_id(message.collapse_key)
    if message.thread_id:
        aps["thread-id"] = message.thread_id
    if message.category:
        aps["category"] = message.category
    sound = apns_sound(message, critical_alerts)
    if sound is not None:
        aps["sound"] = sound
    apns: JsonObject = {"headers": headers, "payload": {"aps": aps}}
    if message.image_url:
        aps["mutable-content"] = 1
        apns["fcm_options"] = {"image": message.image_url}
    return apns


def payload_args(message: PushMessage, critical_alerts: bool = False) -> JsonObject:
    """pyfcm ``parse_payload`` arguments for a message (Android, APNs and web options);
    ``critical_alerts``: the iOS app may show critical alerts (``APNS_CRITICAL_ALERTS``)."""
    ttl_s = max(0, message.ttl_s)
    args: JsonObject = {
        "fcm_token": message.token,
        "notification_title": message.title,
        "notification_body": message.body,
        "notification_image": message.image_url,
        "data_payload": dict(message.data),
        "android_config": _android_config(message, ttl_s),
        "apns_config": _apns_config(message, ttl_s, critical_alerts),
    }
    if message.platform == Platform.WEB:
        urgency = "high" if _urgent(message) else "normal"
        webpush: JsonObject = {"headers": {"TTL": str(ttl_s), "Urgency": urgency}}
        if message.actions:
            # Web Notification API actions: the service worker's notificationclick gets
            # the chosen one as event.action, and the token and URL in the data.
            actions = [{"action": a, "title": ACTION_TITLES[a]} for a in message.actions]
            webpush["notification"] = {"actions": actions}
        args["webpush_config"] = webpush
    return args


class FcmProvider:
    """Push through FCM HTTP v1 with a service account; thread-safe."""

    name = "fcm"

    def __init__(
        self,
        service_account_info: Mapping[str, str],
        *,
        project_id: str | None = None,
        endpoint: str = DEFAULT_FCM_ENDPOINT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        critical_alerts: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("FCM timeout_s must be positive")
        try:
            credentials = service_account.Credentials.from_service_account_info(
                dict(service_account_info), scopes=[FCM_SCOPE]
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"FCM service account JSON is not usable: {exc}") from exc
        self.project_id = project_id or service_account_info.get("project_id")
        if not self.project_id:
            raise ValueError("FCM project id missing: set FCM_PROJECT_ID or project_id")
        self.url = f"{endpoint.rstrip('/')}/{self.project_id}/messages:send"
        self.timeout_s = timeout_s
        self.critical_alerts = critical_alerts
        self._payloads = FCMNotification(credentials=credentials)  # parse_payload only
        self._token = _AccessToken(credentials, timeout_s)
        # No retries in the adapter: a 5xx goes back to the sender, which backs off.
        self._adapter = HTTPAdapter(max_retries=0, pool_maxsize=_CONNECTIONS)
        self._sessions = threading.local()  # a session per thread, one connection pool

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
            self._sessions.session = session
        return session

    def _post(self, body: bytes) -> requests.Response:
        token = self._token.get()
        response = self._session().post(
            self.url,
            data=body,
            timeout=self.timeout_s,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        if response.status_code == 401:
            self._token.drop(token)
        return response

    def send(self, message: PushMessage) -> SendResult:
        """One POST to FCM; network and auth trouble come back as a SendResult."""
        args = payload_args(message, self.critical_alerts)
        body: bytes = self._payloads.parse_payload(**args)
        try:
            response = self._post(body)
            if access_token_expired(response.status_code, response.content):
                response = self._post(body)  # with a token fetched anew
        except requests.RequestException as exc:
            return transport_failure(exc)
        except google.auth.exceptions.GoogleAuthError as exc:
            # A refused service account is misconfiguration; anything else is transient.
            result = transport_failure(exc, prefix="oauth ")
            if isinstance(exc, google.auth.exceptions.RefreshError) and not exc.retryable:
                return SendResult(Outcome.FAILED, reason=result.reason)
            return result
        return classify_response(response.status_code, response.headers, response.content)

    def warm(self) -> None:
        self._token.get()

    def close(self) -> None:
        self._adapter.close()
        self._token.close()
