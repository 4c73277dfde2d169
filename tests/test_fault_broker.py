"""The broker dies under a consuming worker: Redis SIGKILLed again and again, restarted from
its AOF or empty, while tasks keep coming. The worker process must live through every kill
without a hand restart and consume what is sent after the last one.

Each test owns a redis-server in its tmp dir (broker on DB 1, heartbeats on DB 0, as in
production where both share REDIS_URL), so the session's Redis is never disturbed. The
worker runs the CPU worker's queues with two pool processes, like the Procfile's
``worker_cpu``; the producer sends the smallest real tasks of two of them, in turn:
``schedules.lite`` (acknowledged on receipt; with nothing in ``lite:pending`` it only reads
the lite queue's length) and ``tasks.lite.lite_batch`` of no events (acknowledged after it
ran). Consumption is read from the heartbeat records of tasks/heartbeat.py, stamped by the
worker after each task.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from devservers.redis import RedisServer
from tasks.app import create_celery, worker_argv
from tasks.heartbeat import CONSUMED, HEARTBEAT_KEY
from tasks.queues import DIGEST_QUEUE, LITE_QUEUE, SCHEDULER_QUEUE
from tests.api_helpers import ROOT, TEST_WORKER_FLAGS, broker_url, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

QUEUES = ",".join((SCHEDULER_QUEUE, DIGEST_QUEUE, LITE_QUEUE))
WORKER = "broker-fault"
CONCURRENCY = 2  # as worker_cpu (CPU_CONCURRENCY)
TASKS = (("tasks.scheduling.feed_lite", []), ("tasks.lite.lite_batch", [[]]))
SEND_EVERY_S = 0.02
READY_S = 60.0
RESUME_S = 20.0  # from a restarted Redis to the next task consumed
FINAL_TASKS = 20
MARKER = "fault:written-before-the-kills"


@dataclass
class Stack:
    """A dedicated Redis, a worker consuming from it, and a producer sending to it."""

    server: RedisServer
    worker: subprocess.Popen
    log: Path
    client: redis.Redis
    producer: Producer

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_alive(self, when: str) -> None:
        """The worker process runs and has not given up (Celery's "Unrecoverable error" is
        followed by a warm shutdown that can hang, so the process alone proves nothing)."""
        text = self.log_text()
        assert self.worker.poll() is None and "Unrecoverable error" not in text, (
            f"worker died {when} (exit status {self.worker.poll()})\n{text[-6000:]}"
        )

    def wait_consuming(self, since: float, when: str) -> None:
        """Wait until a task is consumed after ``since`` (Redis time), failing fast if the
        worker dies meanwhile."""
        deadline = time.monotonic() + RESUME_S
        while not consumed_since(self.client, since):
            self.assert_alive(when)
            assert time.monotonic() < deadline, (
                f"nothing consumed {when}\n{self.log_text()[-6000:]}"
            )
            time.sleep(0.1)


class Producer:
    """Sends ``TASKS`` in turn every ``SEND_EVERY_S`` from a thread, as beat would."""

    def __init__(self, broker: str) -> None:
        self.app = create_celery({"broker_url": broker}, set_as_current=False)
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SEND_EVERY_S):
            name, args = TASKS[self.sent % len(TASKS)]
            try:
                self.app.send_task(name, args=args, retry=False)
                self.sent += 1
            except Exception:  # the broker is down: beat would lose this tick too
                self.failed += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "producer stuck sending"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    server = RedisServer(tmp_path / "redis")
    url = server.start()
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_WORKER_ROLE"}
    env.update(REDIS_URL=url, CELERY_BROKER_URL=broker_url(url), PYTHONUNBUFFERED="1")
    env.pop("DATABASE_URL", None)  # neither task needs PostgreSQL: leave the session's alone
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            worker_argv(QUEUES, WORKER, CONCURRENCY, *TEST_WORKER_FLAGS),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop_group takes the pool processes too
        )
    producer = Producer(broker_url(url))
    running = Stack(server, worker, log, client, producer)
    try:
        wait_for(
            lambda: running.assert_alive("at start") or " ready." in running.log_text(), READY_S
        )
        producer.start()
        yield running
    finally:
        producer.stop()
        stop_group(worker)
        client.close()
        server.stop()
        print(running.log_text()[-4000:])  # shown by pytest when the test failed


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the worker's group (warm shutdown), SIGKILL if it is not gone in 20 s."""
    for sig, timeout in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
            return


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def consumed_since(client: redis.Redis, since: float) -> bool:
    """True once the worker has stamped a scheduler task done after ``since`` (Redis time)."""
    try:
        stamp = client.hget(CONSUMED, SCHEDULER_QUEUE)
    except redis.RedisError:
        return False
    return stamp is not None and float(stamp) > since


def tasks_done(client: redis.Redis) -> int:
    """Tasks the worker has finished since its heartbeat record was (re)created."""
    keys = client.keys(HEARTBEAT_KEY.format(hostname=f"{WORKER}@*"))
    return sum(json.loads(client.get(key) or "{}").get("tasks_done", 0) for key in keys)


def sigkill(server: RedisServer) -> None:
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not server.is_running(), timeout=10)


def kill_and_restart(stack: Stack, kills: int, *, empty: bool, seed: int) -> None:
    """SIGKILL Redis ``kills`` times while the worker is busy; restart it on the same port,
    from its AOF or with its data dir wiped. After every restart the worker must be alive
    and consuming again before the next kill."""
    rng = random.Random(seed)  # varied but repeatable moments of death
    resumed = redis_now(stack.client) - 1.0
    for kill in range(1, kills + 1):
        stack.wait_consuming(resumed, f"before kill {kill}")
        time.sleep(rng.uniform(0.2, 1.0))  # mid-stream: tasks reserved, running, acking
        sigkill(stack.server)
        time.sleep(rng.uniform(0.0, 0.4))
        stack.assert_alive(f"after kill {kill} (Redis down)")
        if empty:
            shutil.rmtree(stack.server.data_dir)
        stack.server.start()
        resumed = redis_now(stack.client)
        assert (stack.client.get(MARKER) is None) == empty, "restart did not start as asked"
        stack.assert_alive(f"after kill {kill} (Redis restarted)")
    stack.wait_consuming(resumed, "after the last restart")


def settled_count(stack: Stack) -> int:
    """``tasks_done`` once it has not moved for 0.5 s."""
    deadline = time.monotonic() + RESUME_S
    last = tasks_done(stack.client)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tasks_done(stack.client)
        if now == last:
            return now
        last = now
    raise AssertionError(f"tasks still running after {RESUME_S} s\n{stack.log_text()[-6000:]}")


def assert_consumes_after_restart(stack: Stack) -> None:
    """Every task sent after the last restart is consumed (counted by the heartbeat)."""
    stack.producer.stop()
    before = settled_count(stack)  # tasks already sent are done first
    for i in range(FINAL_TASKS):
        name, args = TASKS[i % len(TASKS)]
        stack.producer.app.send_task(name, args=args)
    wait_for(lambda: tasks_done(stack.client) >= before + FINAL_TASKS, RESUME_S)
    stack.assert_alive("at the end")


def test_worker_survives_redis_sigkills_with_restarts_from_the_aof(stack: Stack) -> None:
    stack.client.set(MARKER, "1")
    time.sleep(1.2)  # appendfsync everysec: on disk before the first kill
    kill_and_restart(stack, 8, empty=False, seed=1)
    assert stack.client.get(MARKER) == "1"  # every restart replayed the AOF
    assert_consumes_after_restart(stack)


def test_worker_survives_redis_restarted_empty(stack: Stack) -> None:
    # Queues, bindings, unacked messages and heartbeats are all gone after each restart:
    # the worker declares its queues again on reconnect, the heartbeat is written anew.
    kill_and_restart(stack, 4, empty=True, seed=2)
    assert_consumes_after_restart(stack)
