"""The embedded servers are real, reachable from other processes, durable, and leave no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from devservers import DATABASE_URL, REDIS_URL, DevServers, read_env_file
from devservers.apns_server import check_payload
from devservers.fcm_server import check_message
from devservers.postgres import PostgresServer
from devservers.redis import RedisServer

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parent.parent


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still has a pid; it is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def _devservers(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "devservers", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _devservers_env(base_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m devservers env``: prints the running servers' URLs, exit 1 if none."""
    return subprocess.run(
        [sys.executable, "-m", "devservers", "env", "--base-dir", str(base_dir)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _env_with(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (REDIS_URL, DATABASE_URL)}
    env.update(values)
    return env


@pytest.mark.integration
def test_redis_answers_on_loopback_with_aof_on(redis_client: redis.Redis) -> None:
    assert redis_client.ping()
    if not os.environ.get(REDIS_URL):  # embedded, not a server named by the environment
        assert redis_client.connection_pool.connection_kwargs["host"] == "127.0.0.1"
        assert redis_client.config_get("appendonly") == {"appendonly": "yes"}


def test_redis_keeps_acknowledged_writes_across_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    with RedisServer(data_dir) as first:
        with redis.Redis.from_url(first.url) as client:
            client.set("greeting", "hello")
            client.zadd("cand:{1}", {"42": 0.9})
        pid = first.pid
    assert pid is not None and not _pid_alive(pid)
    assert (data_dir / "appendonly.aof").stat().st_size > 0

    with RedisServer(data_dir) as second, redis.Redis.from_url(second.url) as client:
        assert client.get("greeting") == b"hello"
        assert client.zscore("cand:{1}", "42") == pytest.approx(0.9)


def test_postgres_accepts_tcp_connections_from_another_process(database_url: str) -> None:
    probe = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1], connect_timeout=5) as conn:\n"
        "    print(*conn.execute('SELECT current_database(), 1 + 1').fetchone())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, database_url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "2"
    assert database_url.startswith("postgresql://")


def test_postgres_creates_its_database_and_keeps_data_across_a_restart(
    servers_root: Path,
) -> None:
    data_dir = servers_root / "restart" / "pg"
    with PostgresServer(data_dir, database="restart_check", durable=False) as first:
        assert first.url.endswith(f"@127.0.0.1:{first.port}/restart_check")
        with psycopg.connect(first.url) as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        pid = first.pid
    assert pid is not None and not _pid_alive(pid)

    with PostgresServer(data_dir, database="restart_check", durable=False) as second:
        with psycopg.connect(second.url) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == ("still here",)


def test_up_writes_env_file_shares_servers_and_stops_on_sigterm(
    tmp_path: Path, database_url: str
) -> None:
    # DATABASE_URL given: `up` must start only Redis and pass the given URL through.
    env = _env_with(DATABASE_URL=database_url)
    up = _devservers("up", "--base-dir", str(tmp_path), env=env)
    try:
        _wait_for(lambda: REDIS_URL in read_env_file(tmp_path), what="servers.env")
        urls = read_env_file(tmp_path)
        assert urls[DATABASE_URL] == database_url
        assert _redis_answers(urls[REDIS_URL])
        assert not (tmp_path / "postgres").exists()

        printed = _devservers_env(tmp_path, env)
        assert printed.returncode == 0
        assert f"{REDIS_URL}={urls[REDIS_URL]}" in printed.stdout.splitlines()

        # A second user of the same base_dir reuses the running Redis.
        with DevServers(tmp_path, environ={DATABASE_URL: database_url}) as again:
            assert not again.owned
            assert again.urls == urls
    finally:
        up.send_signal(signal.SIGTERM)
        _, stderr = up.communicate(timeout=30)
    assert up.returncode == 0, stderr
    assert not _redis_answers(urls[REDIS_URL])
    assert not (tmp_path / "servers.env").exists()
    not_running = _devservers_env(tmp_path, env)
    assert not_running.returncode == 1


def test_servers_die_with_a_killed_owner(tmp_path: Path, database_url: str) -> None:
    up = _devservers("up", "--base-dir", str(tmp_path), env=_env_with(DATABASE_URL=database_url))
    try:
        _wait_for(lambda: REDIS_URL in read_env_file(tmp_path), what="servers.env")
        url = read_env_file(tmp_path)[REDIS_URL]
    finally:
        up.kill()
        up.communicate(timeout=30)
    # No orphan keeps the port or the AOF: the kernel signals the server when we die.
    _wait_for(lambda: not _redis_answers(url), what="orphaned redis-server to exit")


# --- the push servers' checks of what a push says -----------------------------------------


def _fcm_message(**fields: object) -> dict:
    message = {"token": "dXk2c3R1YjE6APA91bF-test_token", "data": {"kind": "alert"}, **fields}
    return {"message": message}


@pytest.mark.unit
def test_the_fcm_server_takes_an_alert_with_actions_on_every_platform() -> None:
    body = _fcm_message(
        data={"action_token": "va_1.7.1.x", "actions": "snooze_camera,mark_seen"},
        android={"notification": {"tag": "event-1", "click_action": "VIGIL_ALERT"}},
        apns={"payload": {"aps": {"category": "VIGIL_ALERT"}, "action_url": "https://x/y"}},
        webpush={
            "headers": {"TTL": "3600", "Urgency": "high"},
            "notification": {"actions": [{"action": "mark_seen", "title": "Mark as seen"}]},
        },
    )
    assert check_message(body) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"data": {"notification_id": 7}}, "message.data"),
        ({"data": {"actions": ["mark_seen"]}}, "message.data"),
        (
            {"android": {"notification": {"click_action": 1}}},
            "message.android.notification",
        ),
        ({"apns": {"payload": {"aps": {"category": 2}}}}, "message.apns.payload"),
        ({"apns": {"payload": {"aps": {"action_token": "va_"}}}}, "message.apns.payload"),
        ({"webpush": {"notification": {"actions": [{"action": "a"}]}}}, "message.webpush"),
        ({"webpush": {"notification": {"actions": [{"title": "A"}]}}}, "message.webpush"),
        (
            {"webpush": {"notification": {"actions": [{"action": "a", "title": 1}]}}},
            "message.webpush",
        ),
        ({"webpush": {"notification": {"actions": "mark_seen"}}}, "message.webpush"),
        ({"webpush": {"headers": {"TTL": 60}}}, "message.webpush"),
        ({"webpush": {"unknown": {}}}, "message.webpush"),
    ],
)
def test_the_fcm_server_refuses_what_google_would(fields: dict, field: str) -> None:
    problem = check_message(_fcm_message(**fields))
    assert problem is not None and problem[1].startswith(field), problem


@pytest.mark.unit
def test_the_apns_server_wants_custom_keys_beside_aps_and_a_string_category() -> None:
    assert check_payload({"aps": {"alert": "hi", "category": "VIGIL_ALERT"}, "token": "x"}) is None
    assert check_payload({"aps": {"category": ["VIGIL_ALERT"]}}) == "aps.category is not a string"
    inside = check_payload({"aps": {"alert": "hi", "action_url": "https://x/y"}})
    assert inside is not None and "action_url" in inside
    assert check_payload({"alert": "hi"}) == "no aps dictionary"
