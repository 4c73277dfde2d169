"""Shared pieces of the API tests: an app on the test servers, users with homes, tokens.

Each test module declares its own small ``app``/``client`` fixtures from ``api_app`` (the
shared conftest stays as it is); ``db`` and ``redis_client`` empty both stores first.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from psycopg_pool import ConnectionPool

from demo.processes import venv_env
from schedules.config import SchedulerConfig
from tasks.app import app as celery_app
from tasks.app import worker_argv
from tasks.context import WorkerContext
from tasks.scheduling import dispatch_lite
from tests.photos import photo
from webapp import create_app
from webapp.accounts import hash_password
from webapp.clients import clients
from webapp.responses import ApiModel
from webapp.tokens import start_session

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
# The source's POST /events body, exactly as its integration guide sends it.
SOURCE_EVENT = {
    "image_url": "https://example.com/test.jpg",
    "device_id": "test_device_001",
    "location": "front_door",
    "mode": "security",
    "motion_score": 0.8,
}


def api_app(database_url: str, redis_url: str, **config: Any) -> Iterator[Flask]:
    """A testing app on the session's servers; its clients are closed afterwards."""
    app = create_app(
        {"TESTING": True, "DATABASE_URL": database_url, "REDIS_URL": redis_url, **config}
    )
    yield app
    clients(app).close()


@dataclass
class Owner:
    """A user with one home and one camera named like the source's device, logged in."""

    email: str
    user_id: int
    home_id: int
    device_id: int
    access: str
    refresh: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_owner(
    app: Flask,
    client: FlaskClient,
    email: str = "ana@example.com",
    *,
    tier: str = "premium",
    arm_mode: str = "away",
    device_name: str = "test_device_001",
) -> Owner:
    """A user with a home, as ``flask users create`` makes them, and a session of theirs.

    Every owner has the same password, hashed once per session: a test that is not about
    passwords need not pay for a slow hash and a login each time (``login`` does the real
    thing)."""
    pool = clients(app).pool
    with pool.connection() as conn:
        user_id = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id",
            (email, password_hash()),
        ).fetchone()["id"]
        home_id = conn.execute(
            "INSERT INTO homes (owner_id, name, tier, timezone, arm_mode)"
            " VALUES (%s, 'Home', %s, 'Europe/Paris', %s) RETURNING id",
            (user_id, tier, arm_mode),
        ).fetchone()["id"]
    device_id = add_device(pool, home_id, device_name)
    with app.test_request_context():
        tokens = start_session(user_id)
    assert tokens is not None
    return Owner(email, user_id, home_id, device_id, tokens.access_token, tokens.refresh_token)


@functools.cache
def password_hash() -> str:
    """``PASSWORD`` as the app stores it."""
    return hash_password(PASSWORD)


def add_device(pool: ConnectionPool, home_id: int, name: str, kind: str = "camera") -> int:
    platform = "camera" if kind == "camera" else "android"
    with pool.connection() as conn:
        return conn.execute(
            "INSERT INTO devices (home_id, user_id, kind, platform, name)"
            " SELECT id, CASE WHEN %s = 'phone' THEN owner_id END, %s, %s, %s FROM homes"
            " WHERE id = %s RETURNING id",
            (kind, kind, platform, name, home_id),
        ).fetchone()["id"]


def join(
    pool: ConnectionPool, home: Owner, member: Owner, role: str = "member", cameras=None
) -> None:
    """``member`` becomes a member of ``home`` as an accepted invitation makes them."""
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s)",
            (home.home_id, member.user_id, role, cameras),
        )


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def issue_device_key(client: FlaskClient, owner: Owner, device_id: int | None = None) -> str:
    """A new key for one of the owner's devices (the owner's camera by default)."""
    device = owner.device_id if device_id is None else device_id
    response = client.post(f"/devices/{device}/key", headers=owner.headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["key"]


def error_code(response: Any) -> str:
    """The JSON error code of a response, asserting the error shape on the way."""
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return body["error"]["code"]


def count(pool: ConnectionPool, table: str) -> int:
    with pool.connection() as conn:
        return conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def candidates(redis_client: Any, home_id: int) -> dict[str, float]:
    """The home's candidate ZSET (``cand:{home_id}``), read straight from Redis."""
    return dict(redis_client.zrange(f"cand:{{{home_id}}}", 0, -1, withscores=True))


def post_event(client: FlaskClient, owner: Owner, **changes: Any) -> Any:
    body = {**SOURCE_EVENT, **changes}
    return client.post("/events", json=body, headers=owner.headers)


def photo_upload(name: str = "person", data: bytes | None = None, **fields: Any) -> dict:
    """Multipart form data: an ``image`` part (a real photo by default) and the event fields."""
    if data is None:
        data = photo(name).read_bytes()
    form: dict[str, Any] = {
        "device_id": "test_device_001",
        "location": "front_door",
        "mode": "security",
        "motion_score": "0.8",
        **fields,
    }
    form["image"] = (io.BytesIO(data), f"{name}.jpg", "image/jpeg")
    return form


def broker_url(redis_url: str) -> str:
    """The broker on Redis DB 1: the ``redis_client`` fixture flushes only DB 0."""
    return redis_url.rsplit("/", 1)[0] + "/1"


def stack_env(redis_url: str, database_url: str, **settings: str) -> dict[str, str]:
    """Environment of the app's own processes (gunicorn, workers, beat) that a test starts:
    this virtualenv's commands, the given servers, the broker on DB 1, a fresh JWT secret,
    and ``settings``."""
    env = venv_env(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url(redis_url),
        JWT_SECRET_KEY=secrets.token_urlsafe(32),
        **settings,
    )
    return env


def response_example(model: type[ApiModel]) -> dict[str, Any]:
    """The one example a response model publishes in ``GET /openapi.json``."""
    extra = model.model_config.get("json_schema_extra")
    assert isinstance(extra, dict), model
    (example,) = extra["examples"]
    return example


def dispatch_lite_now(redis_url: str, database_url: str) -> int:
    """What beat's lite dispatch does: send ``lite:pending`` to the lite queue in batches."""
    env = worker_env(redis_url, database_url)
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]  # this process sends the batches
    return dispatch_lite(WorkerContext.from_environ(env), SchedulerConfig())


def queued_tasks(broker: Any, queue: str) -> list[tuple[str, list]]:
    """(task name, args) of each message in a Celery queue's list, oldest first."""
    found = []
    for raw in reversed(broker.lrange(queue, 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], args))
    return found


def wait_for(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s")


@contextlib.contextmanager
def celery_worker(env: dict[str, str], queues: str, name: str) -> Iterator[subprocess.Popen]:
    """A real ``celery worker`` process (one pool process), stopped with SIGTERM after.

    Its log goes to a file, printed at the end (pytest shows it when a test fails).
    """
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        worker_argv(queues, name, 1, *TEST_WORKER_FLAGS),
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_text = lambda: _read_log(log)  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        print(log.read()[-4000:])
        log.close()


def _read_log(log) -> str:
    # pread leaves the file offset alone: the worker shares it and keeps appending.
    fd = log.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


# Test workers skip the cluster handshakes: nothing else is there to meet.
TEST_WORKER_FLAGS = ("--without-gossip", "--without-mingle")


def start_killable_worker(
    env: dict[str, str], queues, name: str, argv: list[str] | None = None
) -> subprocess.Popen:
    """A real worker in its own process group, so ``kill_group`` takes its pool child too;
    ``argv``: its command line, when not one prefork process on ``queues``."""
    return subprocess.Popen(
        [*(argv or worker_argv(queues, name, 1)), *TEST_WORKER_FLAGS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def worker_env(redis_url: str, database_url: str) -> dict[str, str]:
    """Environment of a test worker: the session's servers, broker on DB 1, no model role."""
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_WORKER_ROLE"}
    env.update(
        REDIS_URL=redis_url, DATABASE_URL=database_url, CELERY_BROKER_URL=broker_url(redis_url)
    )
    return env
