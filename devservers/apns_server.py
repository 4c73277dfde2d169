"""A local APNs for tests, the demo and the benchmark: HTTP/2 (h2c, prior knowledge).

It makes its own ES256 key pair (``key_pem()``, ``key_id``, ``team_id`` configure the
client), verifies each provider token, checks the headers and payload the way Apple does
and answers 200 with an ``apns-id`` or an error ``{"reason": ...}``. One thread per
connection reads frames; answers are written under the connection's lock, so a held
(``hang_next``) or delayed stream never blocks the others on its connection.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from devservers.push_base import Fault, PushServerBase, pkcs8_pem

_PATH = re.compile(r"^/3/device/([^/?]*)$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2}){8,100}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_PUSH_TYPES = {
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
}
# The reason an injected fault answers with, by status.
_REASONS = {
    400: "BadPayload",
    403: "Forbidden",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
Reply = tuple[int, list[tuple[str, str]], bytes]
# The keys Apple defines in ``aps``; an app's own keys go beside ``aps``, never in it.
APS_KEYS = frozenset(
    {
        "alert",
        "badge",
        "sound",
        "thread-id",
        "category",
        "content-available",
        "mutable-content",
        "target-content-id",
        "interruption-level",
        "relevance-score",
        "filter-criteria",
        "stale-date",
        "content-state",
        "timestamp",
        "event",
        "dismissal-date",
        "attributes-type",
        "attributes",
    }
)


def check_payload(payload: Any) -> str | None:
    """What is wrong with an APNs JSON payload (None when nothing is): it must hold an
    ``aps`` dictionary of Apple's keys only, with a string ``category`` when it names one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        return "no aps dictionary"
    aps = payload["aps"]
    unknown = set(aps) - APS_KEYS
    if unknown:
        return f"custom keys {sorted(unknown)} inside aps (they go beside it)"
    if "category" in aps and not isinstance(aps["category"], str):
        return "aps.category is not a string"
    return None


def _text_pairs(headers: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
    """Header pairs as text (h2 decodes them already when given a header_encoding)."""
    return [(_text(name), _text(value)) for name, value in headers]


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()


class _Connection:
    """One client connection: h2 state, partly received streams, unsent response data."""

    def __init__(self, server: ApnsServer, sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config)
        self.lock = threading.Lock()  # h2 state and socket writes; timers write too
        self.streams: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        self.pending: dict[int, bytes] = {}

    def run(self) -> None:
        try:
            with self.lock:
                self.h2.initiate_connection()
                self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
                self._flush()
            while data := self.sock.recv(65536):
                with self.lock:
                    ready = self._on_events(self.h2.receive_data(data))
                    self._flush()
                for stream_id, headers, body in ready:
                    self.server._dispatch(self, stream_id, headers, body)
        except (OSError, h2.exceptions.ProtocolError):
            pass  # the client went away or spoke badly: drop the connection
        finally:
            self.server._forget(self)
            self.sock.close()

    def _on_events(self, events: list[h2.events.Event]) -> list[tuple[int, list, bytes]]:
        ready = []
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = (_text_pairs(event.headers), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id in self.streams:
                    self.streams[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.streams:
                headers, body = self.streams.pop(event.stream_id)
                ready.append((event.stream_id, headers, bytes(body)))
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._send_pending()
        return ready

    def respond(self, stream_id: int, reply: Reply) -> None:
        status, headers, body = reply
        with self.lock:
            try:
                self.h2.send_headers(stream_id, [(":status", str(status)), *headers], not body)
                if body:
                    self.pending[stream_id] = body
                    self._send_pending()
                self._flush()
            except (OSError, h2.exceptions.H2Error):
                pass  # the stream or the connection is gone; nobody is waiting

    def cancel(self, stream_id: int) -> None:
        with self.lock:
            try:
                self.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
                self._flush()
            except (OSError, h2.exceptions.H2Error):
                pass

    def _send_pending(self) -> None:
        for stream_id, data in list(self.pending.items()):
            try:  # flow control: send what the window allows, the rest on WindowUpdated
                window = self.h2.local_flow_control_window(stream_id)
                room = min(window, self.h2.max_outbound_frame_size)
            except h2.exceptions.H2Error:
                del self.pending[stream_id]
                continue
            if room > 0:
                chunk, self.pending[stream_id] = data[:room], data[room:]
                self.h2.send_data(stream_id, chunk, end_stream=not self.pending[stream_id])
                if not self.pending[stream_id]:
                    del self.pending[stream_id]

    def _flush(self) -> None:
        if out := self.h2.data_to_send():
            self.sock.sendall(out)


class ApnsServer(PushServerBase):
    """APNs on 127.0.0.1 over cleartext HTTP/2; start()/stop() or ``with``."""

    def __init__(
        self,
        topic: str = "com.vigil.app",
        *,
        team_id: str = "VIGILTEAM1",
        key_id: str | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.topic, self.team_id, self.latency_s = topic, team_id, latency_s
        self.key_id = key_id or secrets.token_hex(5).upper()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._jwts: dict[str, str] = {}  # provider token -> "ok" | "expired"
        self._conns: set[_Connection] = set()
        self._listener: socket.socket | None = None
        self._port = 0

    def key_pem(self) -> str:
        """The private key as Apple ships a .p8 (PKCS#8 PEM)."""
        return pkcs8_pem(self._key).decode()

    @property
    def endpoint(self) -> str:
        if self._listener is None:
            raise RuntimeError("ApnsServer has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def provider_tokens(self) -> list[str]:
        """Each distinct, validly signed provider JWT seen, in order."""
        with self._lock:
            return list(self._jwts)

    def expire_provider_tokens(self) -> None:
        """Answer 403 ExpiredProviderToken to every provider JWT seen so far."""
        with self._lock:
            self._jwts = dict.fromkeys(self._jwts, "expired")

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._jwts.clear()

    def start(self) -> Self:
        if self._listener is None:
            self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
            self._port = self._listener.getsockname()[1]
            threading.Thread(target=self._accept_loop, args=(self._listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        for sock in [listener, *(c.sock for c in self._connections())]:
            try:  # shutdown, not just close, wakes the threads blocked on these sockets
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        listener.close()

    def _connections(self) -> list[_Connection]:
        with self._lock:
            return list(self._conns)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # stopped
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.run, daemon=True).start()

    def _dispatch(self, conn: _Connection, stream_id: int, headers: list, body: bytes) -> None:
        answer = self._handle(headers, body)
        if isinstance(answer, Fault):  # held past the client's timeout, then dropped
            timer = threading.Timer(answer.seconds, conn.cancel, (stream_id,))
        elif self.latency_s:
            timer = threading.Timer(self.latency_s, conn.respond, (stream_id, answer))
        else:
            return conn.respond(stream_id, answer)
        timer.daemon = True
        timer.start()

    def _handle(self, pairs: list[tuple[str, str]], body: bytes) -> Reply | Fault:
        now, h = time.time(), dict(pairs)
        entry = {"path": h.get(":path"), "headers": h, "body": body, "time": now}
        fault = self._take_fault()
        if fault is not None and fault.kind == "hang":
            self._record(**entry, status=None, hung=True)
            return fault
        apns_id = h.get("apns-id") or str(uuid.uuid4())
        if fault is not None:
            status, reason = fault.status, _REASONS.get(fault.status, "InternalServerError")
        else:
            status, reason = self._check(pairs, h, body, now)
        self._record(**entry, status=status, reason=reason)
        headers = [("apns-id", apns_id)]
        if status == 200:
            payload = json.loads(body)
            token = urllib.parse.unquote(h[":path"].rsplit("/", 1)[1])
            self._accept(token=token, headers=h, payload=payload, apns_id=apns_id, received_at=now)
            return 200, headers, b""
        if fault is not None and fault.retry_after is not None:
            headers.append(("retry-after", f"{fault.retry_after:g}"))
        error: dict[str, Any] = {"reason": reason}
        if status == 410:
            error["timestamp"] = int(now * 1000)
        return status, [*headers, ("content-type", "application/json")], json.dumps(error).encode()

    def _check(self, pairs: list, h: dict[str, str], body: bytes, now: float) -> tuple[int, str]:
        """(status, reason) the way APNs would answer this request."""
        if len({name for name, _ in pairs}) != len(pairs):
            return 400, "DuplicateHeaders"
        if h.get(":method") != "POST":
            return 405, "MethodNotAllowed"
        match = _PATH.match(h.get(":path", ""))
        if not match:
            return 404, "BadPath"
        token = urllib.parse.unquote(match.group(1))
        if not token:
            return 400, "MissingDeviceToken"
        if not _HEX.match(token):
            return 400, "BadDeviceToken"
        if problem := self._check_jwt(h.get("authorization", ""), now):
            return 403, problem
        if "apns-topic" not in h:
            return 400, "MissingTopic"
        if h["apns-topic"] != self.topic:
            return 400, "TopicDisallowed"
        if h.get("apns-push-type") not in _PUSH_TYPES:
            return 400, "InvalidPushType"
        if h.get("apns-priority", "10") not in ("10", "5", "1"):
            return 400, "BadPriority"
        if "apns-id" in h and not _UUID.match(h["apns-id"]):
            return 400, "BadMessageId"
        if not h.get("apns-expiration", "0").isdigit():
            return 400, "BadExpirationDate"
        if len(h.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId"
        if not body:
            return 400, "PayloadEmpty"
        if len(body) > 4096:
            return 413, "PayloadTooLarge"
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if check_payload(payload) is not None:
            return 400, "BadPayload"  # Apple's wording varies; check_payload names the problem
        if self._is_dead(token):
            return 410, "Unregistered"
        return 200, ""

    def _check_jwt(self, authorization: str, now: float) -> str | None:
        """None for a valid provider token, else the 403 reason."""
        if not authorization:
            return "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        try:
            header = jwt.get_unverified_header(token)
            if scheme.lower() != "bearer" or header.get("kid") != self.key_id:
                return "InvalidProviderToken"
            claims = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["ES256"],
                issuer=self.team_id,
                leeway=60,
                options={"require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        with self._lock:
            state = self._jwts.setdefault(token, "ok")
        if state == "expired" or now - claims["iat"] > 3600:
            return "ExpiredProviderToken"
        return None
