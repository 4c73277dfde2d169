"""A small client of the REST API as a phone app uses it: JSON and multipart over one
keep-alive HTTP/1.1 connection (one client per thread)."""

from __future__ import annotations

import http.client
import json
import uuid
from typing import Any
from urllib.parse import urlsplit


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        super().__init__(f"{method} {path} -> {status}: {body}")
        self.status = status
        self.body = body


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.token = token
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, Any]:
        """Send one request (reconnecting once if the server closed the connection)."""
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        is_json = resp.getheader("Content-Type", "").startswith("application/json")
        return resp.status, (json.loads(raw) if is_json and raw else raw)

    def call(self, method: str, path: str, payload: Any = None, expect: tuple = (200,)) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, data = self.request(method, path, body, headers)
        if status not in expect:
            raise ApiError(method, path, status, data)
        return data

    def login(self, email: str, password: str) -> str:
        tokens = self.call("POST", "/auth/login", {"email": email, "password": password})
        self.token = tokens["access_token"]
        return self.token

    def post_event_json(self, fields: dict[str, Any]) -> tuple[int, Any]:
        """The source's body as written: image_url, device_id, location, mode, motion_score."""
        body = json.dumps(fields).encode()
        return self.request("POST", "/events", body, {"Content-Type": "application/json"})

    def post_event_upload(
        self,
        fields: dict[str, Any],
        image: bytes,
        filename: str = "frame.jpg",
        idempotency_key: str | None = None,
    ) -> tuple[int, Any]:
        """multipart/form-data: the fields as form fields, the frame as the 'image' part;
        a retry sends the same ``idempotency_key``."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in fields.items():
            text = json.dumps(value) if isinstance(value, dict) else str(value)
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{text}\r\n".encode()
            )
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + image
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self.request("POST", "/events", b"".join(parts), headers)
