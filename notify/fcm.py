"""FCM HTTP v1 through pyfcm, one HTTP request per send.

pyfcm as shipped retries POSTs on 502/503 inside its requests adapter and sleeps on
``Retry-After`` before recursing; google-auth retries (with sleeps) a token endpoint that
answers 5xx. A worker must report those answers to the sender instead, so ``_OneShotFCM``
and ``_TokenRequest`` take the retries out: one ``send`` is one POST (plus, at most, one
token fetch and one resend after ``ACCESS_TOKEN_EXPIRED``).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

from notify.push import Outcome, PushMessage, SendResult

DEFAULT_FCM_ENDPOINT = "https://fcm.googleapis.com/v1/projects"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TIMEOUT_S = 10.0
_FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})


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


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth transport with our timeout and no retry: a non-200 raises at once."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(requests.Session())
        self._timeout_s = timeout_s

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        response = super().__call__(url, method, body, headers, timeout=self._timeout_s, **kwargs)
        if response.status != 200:
            # Raising here leaves google-auth's backoff loop before its first sleep.
            raise google.auth.exceptions.RefreshError(
                f"token endpoint answered {response.status}: {response.data[:200]!r}",
                retryable=response.status == 429 or response.status >= 500,
            )
        return response


class _OneShotFCM(FCMNotification):
    """pyfcm without hidden retries or sleeps, sharing one OAuth token across threads."""

    def __init__(self, credentials: service_account.Credentials, url: str, timeout_s: float):
        super().__init__(
            credentials=credentials, adapter=HTTPAdapter(max_retries=0, pool_maxsize=32)
        )
        self._fcm_end_point = url  # set directly: pyfcm would prefer the JSON's project id
        self._token_lock = threading.Lock()
        self._token_request = _TokenRequest(timeout_s)

    def _get_access_token(self) -> str:
        # pyfcm refreshes per thread every 30 min; one token until near expiry is enough.
        with self._token_lock:
            if not self.credentials.valid:
                self.credentials.refresh(self._token_request)
            return self.credentials.token

    def _drop_token(self, stale: str) -> None:
        with self._token_lock:
            if self.credentials.token == stale:  # another thread may have refreshed it
                self.credentials.token = None

    def _post(self, payload: bytes, timeout: float | None) -> requests.Response:
        token = self._get_access_token()
        response = self.requests_session.post(
            self.fcm_end_point,
            data=payload,
            timeout=timeout,
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code == 401:
            self._drop_token(token)
        return response

    def send_request(self, payload=None, timeout=None) -> requests.Response:
        response = self._post(payload, timeout)
        if self._is_access_token_expired(response):
            response = self._post(payload, timeout)
        return response

    def close(self) -> None:
        self.custom_adapter.close()
        self._token_request.session.close()


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
    return SendResult(Outcome.FAILED, status=status, reason=f"{reason}: {text}"[:300])


def payload_args(message: PushMessage) -> dict[str, Any]:
    """pyfcm ``parse_payload`` arguments for a message (Android, APNs and web options)."""
    alert = message.kind == "alert"
    ttl_s = max(0, message.ttl_s)
    android_notification = {"channel_id": "alerts" if alert else "summaries"}
    aps: dict[str, Any] = {
        "interruption-level": "time-sensitive" if message.time_sensitive else "passive"
    }
    apns_headers = {
        "apns-priority": "10" if message.time_sensitive else "5",
        "apns-push-type": "alert",
        "apns-expiration": str(int(time.time()) + ttl_s if ttl_s else 0),
    }
    android: dict[str, Any] = {
        "priority": "high" if message.time_sensitive else "normal",
        "ttl": f"{ttl_s}s",
        "notification": android_notification,
    }
    if message.collapse_key:
        # The tag makes a resend, or a newer summary, replace the shown notification.
        android["collapse_key"] = message.collapse_key
        android_notification["tag"] = message.collapse_key
        apns_headers["apns-collapse-id"] = collapse_id(message.collapse_key)
    if message.thread_id:
        aps["thread-id"] = message.thread_id
    if alert:
        aps["sound"] = "default"
    apns: dict[str, Any] = {"headers": apns_headers, "payload": {"aps": aps}}
    if message.image_url:
        aps["mutable-content"] = 1
        apns["fcm_options"] = {"image": message.image_url}
    args: dict[str, Any] = {
        "fcm_token": message.token,
        "notification_title": message.title,
        "notification_body": message.body,
        "notification_image": message.image_url,
        "data_payload": dict(message.data),
        "android_config": android,
        "apns_config": apns,
    }
    if message.platform == "web":
        urgency = "high" if message.time_sensitive else "normal"
        args["webpush_config"] = {"headers": {"TTL": str(ttl_s), "Urgency": urgency}}
    return args


class FcmProvider:
    """Push through FCM HTTP v1 with a service account; thread-safe."""

    name = "fcm"

    def __init__(
        self,
        service_account_info: Mapping[str, Any],
        *,
        project_id: str | None = None,
        endpoint: str = DEFAULT_FCM_ENDPOINT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
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
        self._fcm = _OneShotFCM(credentials, self.url, timeout_s)

    def send(self, message: PushMessage) -> SendResult:
        """One POST to FCM; network and auth trouble come back as a SendResult."""
        try:
            payload = self._fcm.parse_payload(**payload_args(message))
            response = self._fcm.send_request(payload, self.timeout_s)
        except requests.RequestException as exc:
            return SendResult(Outcome.RETRY, reason=f"{type(exc).__name__}: {exc}"[:300])
        except google.auth.exceptions.GoogleAuthError as exc:
            # A refused service account is misconfiguration; anything else is transient.
            outcome = Outcome.FAILED
            if not isinstance(exc, google.auth.exceptions.RefreshError) or exc.retryable:
                outcome = Outcome.RETRY
            return SendResult(outcome, reason=f"oauth {type(exc).__name__}: {exc}"[:300])
        return classify_response(response.status_code, response.headers, response.content)

    def warm(self) -> None:
        self._fcm._get_access_token()  # pyfcm caches the OAuth token it fetches here

    def close(self) -> None:
        self._fcm.close()
