"""A local server speaking FCM HTTP v1 (and its OAuth token endpoint) for tests and demos.

It generates its own service account, so ``service_account_info()`` is a complete
FCM_CREDENTIALS_JSON whose token_uri points here; it checks what Google checks (the
assertion's signature, the Bearer token, the message shape) and answers like Google.
Faults, dead tokens and the record of requests come from ``devservers.push_base``.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devservers.apns_server import check_payload
from devservers.push_base import Fault, PushServerBase, pkcs8_pem

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs every assertion for Google's token URL, whatever token_uri says.
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
_SEND_PATH = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{8,4096}$")
_TTL = re.compile(r"^\d+(\.\d{1,9})?s$")
# google.rpc status names, and the FcmError code Google adds for the statuses FCM defines.
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FCM_CODE = {
    400: "INVALID_ARGUMENT",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_MESSAGE_FIELDS = {
    "name",
    "token",
    "data",
    "notification",
    "android",
    "apns",
    "webpush",
    "fcm_options",
}
_ANDROID_FIELDS = {
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
}
_WEBPUSH_FIELDS = {"headers", "data", "notification", "fcm_options"}
_RESERVED_DATA = {"from", "notification", "message_type"}
_LEVELS = {"passive", "active", "time-sensitive", "critical"}
# (status, body, extra headers) of one answer to messages:send.
Answer = tuple[int, dict[str, Any], dict[str, str]]


def google_error(status: int, message: str, field: str | None = None, **info: str) -> dict:
    """A v1 error body the way Google writes it."""
    details: list[dict[str, Any]] = []
    if status in _FCM_CODE:
        details.append(_detail("google.firebase.fcm.v1.FcmError", errorCode=_FCM_CODE[status]))
    if field:
        violation = {"field": field, "description": message}
        details.append(_detail("google.rpc.BadRequest", fieldViolations=[violation]))
    if info:
        details.append(_detail("google.rpc.ErrorInfo", **info))
    body = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    return {"error": {**body, "details": details}}


def _detail(kind: str, **fields: Any) -> dict[str, Any]:
    """One entry of an error's ``details``, typed the way Google types it."""
    return {"@type": f"type.googleapis.com/{kind}", **fields}


def _strings(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _web_actions_problem(notification: Any) -> str | None:
    """What is wrong with a webpush notification (the Web Notification API's options):
    each of its ``actions`` needs a string ``action`` and ``title`` (and may have an
    ``icon``)."""
    if not isinstance(notification, dict):
        return "Invalid value at 'message.webpush.notification'"
    actions = notification.get("actions", [])
    if not isinstance(actions, list):
        return "Invalid value at 'message.webpush.notification.actions'"
    for action in actions:
        if (
            not isinstance(action, dict)
            or set(action) - {"action", "title", "icon"}
            or not all(isinstance(action.get(key), str) for key in ("action", "title"))
            or not isinstance(action.get("icon", ""), str)
        ):
            return "Invalid value at 'message.webpush.notification.actions': action and title"
    return None


def _webpush_problem(webpush: Any) -> str | None:
    if not isinstance(webpush, dict) or set(webpush) - _WEBPUSH_FIELDS:
        return "Invalid value at 'message.webpush'"
    if not _strings(webpush.get("headers", {})) or not _strings(webpush.get("data", {})):
        return "Invalid value at 'message.webpush': headers and data values must be strings"
    return _web_actions_problem(webpush.get("notification", {}))


def check_message(body: Any) -> tuple[str, str] | None:
    """(error, field) for a malformed messages:send body, None when Google would take it."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return "Invalid JSON payload received: message is required", "message"
    if set(body) - {"message", "validate_only"}:
        return f"Unknown name {sorted(set(body) - {'message', 'validate_only'})}", ""
    msg = body["message"]
    if set(msg) - _MESSAGE_FIELDS:
        return f"Unknown name {sorted(set(msg) - _MESSAGE_FIELDS)} at 'message'", "message"
    if not isinstance(msg.get("token"), str) or not _TOKEN.match(msg["token"]):
        return "The registration token is not a valid FCM registration token", "message.token"
    data = msg.get("data", {})
    if not _strings(data):
        return "Invalid value at 'message.data': values must be strings", "message.data"
    if any(k in _RESERVED_DATA or k.startswith(("google", "gcm")) for k in data):
        return "Invalid data payload key: reserved word", "message.data"
    if len(json.dumps(msg).encode()) > 4096:
        return "Message is too big", "message"
    if not _strings(msg.get("notification", {})):
        return "Invalid value at 'message.notification'", "message.notification"
    android = msg.get("android", {})
    if not isinstance(android, dict) or set(android) - _ANDROID_FIELDS:
        return "Invalid value at 'message.android'", "message.android"
    if android.get("priority", "normal") not in ("normal", "high"):
        return "Invalid value at 'message.android.priority'", "message.android.priority"
    if not _TTL.match(str(android.get("ttl", "0s"))):
        return "Invalid value at 'message.android.ttl'", "message.android.ttl"
    if not _strings(android.get("notification", {})):
        return "Invalid value at 'message.android.notification'", "message.android.notification"
    if not isinstance(android.get("notification", {}).get("click_action", ""), str):
        field = "message.android.notification.click_action"
        return f"Invalid value at '{field}'", field
    apns = msg.get("apns", {})
    headers, payload = apns.get("headers", {}), apns.get("payload", {"aps": {}})
    if not _strings(headers) or headers.get("apns-priority", "10") not in ("5", "10", "1"):
        return "Invalid APNs headers", "message.apns.headers"
    if len(headers.get("apns-collapse-id", "").encode()) > 64:
        return "apns-collapse-id is longer than 64 bytes", "message.apns.headers"
    aps = payload.get("aps") if isinstance(payload, dict) else None
    if not isinstance(aps, dict) or aps.get("interruption-level", "active") not in _LEVELS:
        return "Invalid value at 'message.apns.payload'", "message.apns.payload"
    if (problem := check_payload(payload)) is not None:
        return f"Invalid value at 'message.apns.payload': {problem}", "message.apns.payload"
    if "webpush" in msg and (problem := _webpush_problem(msg["webpush"])) is not None:
        return problem, "message.webpush"
    return None


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    fake: FcmServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or a worker killed mid-request drops its connection:
        # that is a case the tests make on purpose, not a server error worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError | OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections to FCM
    timeout = 30  # an idle kept-alive connection does not pin a thread forever
    server: _Http

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; Nagle would hold the body ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the benchmark make thousands of requests

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.fake._serve(self, body)

    def reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class FcmServer(PushServerBase):
    """FCM HTTP v1 and an OAuth2 token endpoint on 127.0.0.1; start()/stop() or ``with``."""

    def __init__(self, project_id: str = "vigil-dev", *, latency_s: float = 0.0) -> None:
        super().__init__()
        self.project_id, self.latency_s = project_id, latency_s
        self.client_email = f"push@{project_id}.iam.gserviceaccount.com"
        self.private_key_id = secrets.token_hex(20)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._tokens: dict[str, float] = {}  # access token -> expiry
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._http: _Http | None = None

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("FcmServer has not been started")
        return self._http.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/projects"

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def token_requests(self) -> int:
        return sum(1 for r in self.requests if r["path"] == "/token")

    def service_account_info(self) -> dict[str, str]:
        """A service-account JSON (as a dict) whose token_uri is this server."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pkcs8_pem(self._key).decode(),
            "client_email": self.client_email,
            "client_id": "1",
            "token_uri": self.token_uri,
        }

    def expire_access_tokens(self) -> None:
        """Make every token issued so far answer 401 ACCESS_TOKEN_EXPIRED."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def start(self) -> Self:
        if self._http is None:
            self._stopping.clear()
            self._http = _Http(("127.0.0.1", 0), _Handler)
            self._http.fake = self
            threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._http is None:
            return
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            for conn in list(self._conns):  # kept-alive connections would outlive us
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._http = None

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def _serve(self, h: _Handler, body: bytes) -> None:
        now = time.time()
        if h.path == "/token":
            status, answer = self._token(body)
            self._record(path=h.path, status=status, time=now, body=body)
            return h.reply(status, answer)
        fault = self._take_fault()
        if fault is not None and fault.kind == "hang":
            self._stopping.wait(fault.seconds)
            h.close_connection = True  # closed, never answered, never accepted
            return self._record(path=h.path, status=None, hung=True, time=now, body=body)
        status, answer, extra = self._send(h, body, fault, now)
        authorization = h.headers.get("Authorization")
        self._record(path=h.path, status=status, time=now, body=body, authorization=authorization)
        if self.latency_s:
            time.sleep(self.latency_s)
        h.reply(status, answer, extra)

    def _send(self, h: _Handler, body: bytes, fault: Fault | None, now: float) -> Answer:
        if fault is not None:
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return fault.status, google_error(fault.status, "Injected fault"), extra
        match = _SEND_PATH.match(h.path)
        if not match:
            return 404, google_error(404, "Requested entity was not found."), {}
        auth = h.headers.get("Authorization", "")
        with self._lock:
            expiry = self._tokens.get(auth.removeprefix("Bearer "))
        if expiry is None:
            return 401, google_error(401, "Request had invalid authentication credentials."), {}
        if expiry < now:
            expired = google_error(401, "Access token expired.", reason="ACCESS_TOKEN_EXPIRED")
            return 401, expired, {}
        if match.group(1) != self.project_id:
            return 403, google_error(403, "Permission denied on project."), {}
        try:
            parsed = json.loads(body)
        except ValueError:
            return 400, google_error(400, "Invalid JSON payload received."), {}
        problem = check_message(parsed)
        if problem is not None:
            return 400, google_error(400, problem[0], problem[1] or None), {}
        message = parsed["message"]
        if self._is_dead(message["token"]):
            return 404, google_error(404, "Requested entity was not found."), {}
        name = f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"
        self._accept(name=name, message=message, received_at=now)
        return 200, {"name": name}, {}

    def _token(self, body: bytes) -> tuple[int, dict]:
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        if form.get("grant_type") != [JWT_GRANT] or len(form.get("assertion", [])) != 1:
            return 400, {"error": "unsupported_grant_type", "error_description": "Bad grant"}
        assertion = form["assertion"][0]
        try:
            if jwt.get_unverified_header(assertion).get("kid") != self.private_key_id:
                raise jwt.InvalidTokenError("unknown key id")
            claims = jwt.decode(
                assertion,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=[self.token_uri, GOOGLE_TOKEN_URL],
                issuer=self.client_email,
                options={"require": ["iat", "exp", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
        if "https://www.googleapis.com/auth/firebase.messaging" not in claims.get("scope", ""):
            return 400, {"error": "invalid_scope", "error_description": "firebase.messaging"}
        token = "ya29." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + 3600
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}
