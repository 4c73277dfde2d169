"""Live streams are capped per process and per user, so they never take every web thread."""

from __future__ import annotations

import os
import secrets
import socket
import time
import urllib.request
from typing import Any

import pytest

from demo.processes import Child, stop_all, venv_env
from demo.stack import start_web
from tests.api_helpers import api_app, error_code, make_owner
from webapp.stream import SLOTS_EXTENSION

pytestmark = pytest.mark.integration


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"STREAM_MAX_PER_PROCESS": 3, "STREAM_MAX_PER_USER": 2, "STREAM_KEEPALIVE_S": 0.2}


def open_raw(client, owner):
    response = client.get(f"/stream?home_id={owner.home_id}", headers=owner.headers, buffered=False)
    if response.status_code == 200:
        next(response.response)  # the body has started: the stream really is open
    return response


def open_slots(app) -> int:
    return app.extensions[SLOTS_EXTENSION].open


def test_a_user_over_the_stream_cap_gets_429_and_others_are_not_affected(app, client, owner, bob):
    streams = [open_raw(client, owner) for _ in range(2)]
    assert [s.status_code for s in streams] == [200, 200]
    refused = open_raw(client, owner)
    assert refused.status_code == 429 and error_code(refused) == "too_many_streams"
    assert int(refused.headers["Retry-After"]) > 0
    streams.append(open_raw(client, bob))
    assert streams[-1].status_code == 200  # another user's cap is their own
    assert client.get("/homes", headers=owner.headers).status_code == 200
    streams[0].close()  # closing gives the slot back
    streams.append(open_raw(client, owner))
    assert streams[-1].status_code == 200
    for response in streams:
        response.close()
    assert open_slots(app) == 0


def test_the_process_cap_holds_across_users_and_slots_come_back(app, client, owner, bob):
    cy = make_owner(app, client, "cy@example.com")
    opened = [open_raw(client, who) for who in (owner, bob, cy)]
    assert [s.status_code for s in opened] == [200] * 3 and open_slots(app) == 3
    refused = open_raw(client, owner)
    assert refused.status_code == 429 and error_code(refused) == "too_many_streams"
    for response in opened:
        response.close()
    assert open_slots(app) == 0


def test_a_refused_home_takes_no_slot(app, client, owner, bob):
    for _ in range(5):
        response = client.get(f"/stream?home_id={bob.home_id}", headers=owner.headers)
        assert response.status_code == 404
    assert app.extensions.get(SLOTS_EXTENSION) is None or open_slots(app) == 0


# --- a real gunicorn: streams at the cap, and the API still answers ------------------------


def _stream_socket(base: str, token: str, home_id: int) -> tuple[socket.socket, bytes]:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        f"GET /stream?home_id={home_id} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):  # a refusal: read its JSON body too
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(4096)
    return sock, head + b"\r\n\r\n" + body


@pytest.mark.e2e
def test_streams_at_the_cap_leave_the_web_threads_to_the_api(
    redis_url, database_url, db, redis_client, tmp_path
):
    secret = secrets.token_urlsafe(32)
    env = venv_env(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        JWT_SECRET_KEY=secret,
        STREAM_MAX_PER_PROCESS="2",
        STREAM_MAX_PER_USER="10",
    )
    for app in api_app(database_url, redis_url, JWT_SECRET_KEY=secret):
        owner = make_owner(app, app.test_client(), "streamer@example.com")
    children: list[Child] = []
    sockets: list[socket.socket] = []
    try:
        web, base = start_web(env, tmp_path, workers=1, threads=4)
        children.append(web)
        for _ in range(2):
            sock, head = _stream_socket(base, owner.access, owner.home_id)
            sockets.append(sock)
            assert head.startswith(b"HTTP/1.1 200")
        for _ in range(6):  # far more attempts than threads: each refused at once
            sock, head = _stream_socket(base, owner.access, owner.home_id)
            sock.close()
            assert head.startswith(b"HTTP/1.1 429") and b"too_many_streams" in head
        started = time.monotonic()
        request = urllib.request.Request(
            f"{base}/homes", headers={"Authorization": f"Bearer {owner.access}"}
        )
        for _ in range(5):
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 200
        assert time.monotonic() - started < 5
    finally:
        for sock in sockets:
            sock.close()
        stop_all(children)
