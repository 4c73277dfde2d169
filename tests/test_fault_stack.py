"""The whole stack under load, one fault at a time: nothing accepted is lost or left stuck,
no push arrives twice, and every process is still there without a hand restart.

One stack for the module, on servers of its own (the session's are never disturbed):
redis-server and PostgreSQL, gunicorn, a deep worker (CPU), the CPU worker, beat, and local
FCM and APNs servers. Each test posts events from two homes' cameras as a phone app would
(uploads, each with its own Idempotency-Key, retried with the same key on a 5xx, a 429 or a
broken connection), injects its fault while the load runs, then waits for every accepted
event to be settled (analysed, skipped or failed) and decided by the digest, and for the
outbox to drain.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from demo.client import ApiClient
from demo.processes import Child, stop_all
from demo.provision import create_users, set_up_home
from demo.scenario import Home, HomeSpec
from demo.stack import (
    start_beat,
    start_cpu_worker,
    start_deep_worker,
    start_web,
    wait_workers_ready,
)
from devservers import PostgresServer, RedisServer
from devservers.apns_server import ApnsServer
from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from store.db import create_pool
from store.migrate import migrate
from tests.api_helpers import stack_env, wait_for
from tests.photos import photo

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

EVENTS = 16  # per test
EVERY_S = 0.25
FAULT_AFTER = 5  # events sent before the fault
EVENT_DEADLINE_S = 120.0  # a client keeps retrying one event this long
SETTLE_S = 240.0  # Redis restarted empty: reconcile (30 s + 30 s) and the digest sweep
HOMES = (
    HomeSpec("fault-a@vigil.test", "Fault A", "enterprise", "away"),
    HomeSpec("fault-b@vigil.test", "Fault B", "premium", "away"),
)


@dataclass
class Stack:
    root: Path
    redis: RedisServer
    postgres: PostgresServer
    env: dict[str, str]
    base_url: str
    homes: list[Home]
    fcm: FcmServer
    apns: ApnsServer
    processes: dict[str, Child] = field(default_factory=dict)

    def start(self, name: str) -> Child:
        logs = self.root / "logs"
        if name == "deep":
            child = start_deep_worker(self.env, logs)
        elif name == "cpu":
            child = start_cpu_worker(self.env, logs)
        else:  # a beat; more than one may run at once
            child = start_beat(self.env, logs)
        self.processes[name] = child
        return child

    def kill(self, name: str) -> None:
        child = self.processes[name]
        os.killpg(child.pid, signal.SIGKILL)
        child.proc.wait(timeout=10)

    def dead(self) -> list[str]:
        return [name for name, child in self.processes.items() if not child.running()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fault-stack")
    redis_server, postgres = RedisServer(root / "redis"), PostgresServer(root / "postgres")
    fcm, apns = FcmServer().start(), ApnsServer().start()
    children: list[Child] = []
    stack: Stack | None = None
    try:
        redis_url, database_url = redis_server.start(), postgres.start()
        migrate(database_url)
        env = stack_env(
            redis_url,
            database_url,
            # A killed worker's leases expire in 30 s, not 300: the test waits for the reaper.
            SCHEDULER_PROCESSING_TIMEOUT_S="30",
            **push_env(fcm, apns),
        )
        env.pop("VIGIL_WORKER_ROLE", None)
        web, base_url = start_web(env, root / "logs", workers=1, threads=8)
        children.append(web)
        env["PUBLIC_BASE_URL"] = base_url
        create_users(list(HOMES), env)
        homes = [set_up_home(base_url, spec) for spec in HOMES]
        stack = Stack(root, redis_server, postgres, env, base_url, homes, fcm, apns)
        stack.processes["web"] = web
        for name in ("deep", "cpu", "beat"):
            stack.start(name)
        wait_workers_ready(stack.processes["deep"], stack.processes["cpu"])
        yield stack
    finally:
        if stack is not None:
            children = list(stack.processes.values())
        stop_all(children)
        for server in (fcm, apns):
            server.stop()
        redis_server.stop()
        postgres.stop()


@dataclass
class Load:
    """Events posted from a thread, each retried with its own key until accepted."""

    stack: Stack
    accepted: dict[str, int] = field(default_factory=dict)  # key → event id
    refused: list[tuple[str, int, object]] = field(default_factory=list)
    tries: int = 0
    server_errors: int = 0
    sent: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=EVENTS * EVERY_S + EVENT_DEADLINE_S + 30)
        assert not self._thread.is_alive(), "the load is stuck"

    def _run(self) -> None:
        image = photo("person").read_bytes()
        clients = {
            h.home_id: ApiClient(self.stack.base_url, h.token, timeout=10) for h in self.stack.homes
        }
        try:
            for i in range(EVENTS):
                home = self.stack.homes[i % len(self.stack.homes)]
                location = ("front_door", "backyard", "driveway")[i % 3]
                fields = {
                    "device_id": f"{location}_cam",
                    "location": location,
                    "mode": "security",
                    "motion_score": 0.8,
                }
                self._post(clients[home.home_id], fields, image, f"fault-{uuid.uuid4()}")
                self.sent += 1
                time.sleep(EVERY_S)
        finally:
            for client in clients.values():
                client.close()

    def _post(self, client: ApiClient, fields: dict, image: bytes, key: str) -> None:
        deadline = time.monotonic() + EVENT_DEADLINE_S
        while time.monotonic() < deadline:
            self.tries += 1
            try:
                status, body = client.post_event_upload(fields, image, idempotency_key=key)
            except (OSError, http.client.HTTPException):  # a connection cut mid-request
                client.close()
                time.sleep(0.5)
                continue
            if 200 <= status < 300:
                self.accepted[key] = body["event_id"]
                return
            if status >= 500:
                self.server_errors += 1
            if status >= 500 or status == 429:
                time.sleep(0.5)
                continue
            self.refused.append((key, status, body))
            return
        self.refused.append((key, 0, "gave up"))


def run_with_fault(stack: Stack, fault: Callable[[], None]) -> Load:
    """Load, the fault after FAULT_AFTER events, then everything settled and checked."""
    load = Load(stack)
    load.start()
    wait_for(lambda: load.sent >= FAULT_AFTER, timeout=60)
    fault()
    load.join()
    assert load.refused == [], load.refused
    assert len(load.accepted) == EVENTS
    ids = sorted(load.accepted.values())
    pool = create_pool(stack.env["DATABASE_URL"], min_size=1, max_size=2)
    try:

        def open_events() -> bool:
            with pool.connection() as conn:
                row = conn.execute(
                    "SELECT count(*) AS known, count(*) FILTER (WHERE status IN"
                    " ('analyzed', 'skipped', 'failed') AND digest IS NOT NULL) AS done"
                    " FROM events WHERE id = ANY(%s)",
                    (ids,),
                ).fetchone()
            assert row["known"] == len(ids), "an accepted event was lost"
            return row["done"] == len(ids)

        wait_for(open_events, timeout=SETTLE_S)

        def outbox_drained() -> bool:
            with pool.connection() as conn:
                pending = conn.execute(
                    "SELECT count(*) AS n FROM deliveries WHERE status IN ('pending', 'sending')"
                ).fetchone()["n"]
            return pending == 0

        wait_for(outbox_drained, timeout=60)
    finally:
        pool.close()
    fcm_ids = [a["message"]["data"]["push_id"] for a in stack.fcm.accepted]
    apns_ids = [a["headers"]["apns-id"] for a in stack.apns.accepted]
    assert len(fcm_ids) == len(set(fcm_ids)) and len(apns_ids) == len(set(apns_ids))
    assert stack.dead() == [], [stack.processes[n].log_tail() for n in stack.dead()]
    print(
        f"tries {load.tries} for {EVENTS} events, {load.server_errors} answered 5xx, "
        f"{len(fcm_ids) + len(apns_ids)} pushes"
    )
    return load


def test_redis_sigkilled_and_restarted_from_its_aof(stack: Stack) -> None:
    def fault() -> None:
        os.kill(stack.redis.pid, signal.SIGKILL)
        stack.redis._proc.wait(timeout=10)  # type: ignore[union-attr]
        stack.redis._proc = None
        time.sleep(1.0)
        stack.redis.start()

    run_with_fault(stack, fault)


def test_redis_restarted_empty(stack: Stack) -> None:
    def fault() -> None:
        stack.redis.stop()
        shutil.rmtree(stack.redis.data_dir)
        stack.redis.start()

    run_with_fault(stack, fault)


def test_postgres_stopped_and_started(stack: Stack) -> None:
    def fault() -> None:
        stack.postgres.stop()
        time.sleep(3.0)
        stack.postgres.start()

    load = run_with_fault(stack, fault)
    assert load.tries > EVENTS  # the outage was seen, and retried through


def test_the_deep_worker_sigkilled_and_restarted_by_the_platform(stack: Stack) -> None:
    def fault() -> None:
        stack.kill("deep")
        stack.start("deep")  # what the platform does for a process that died

    run_with_fault(stack, fault)


def test_beat_sigkilled_and_two_beats_running_after(stack: Stack) -> None:
    def fault() -> None:
        stack.kill("beat")
        stack.start("beat")
        stack.start("beat-second")  # a second beat by mistake: harmless

    run_with_fault(stack, fault)
