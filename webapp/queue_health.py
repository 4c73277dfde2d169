"""Are the Celery queues being consumed? Read from worker heartbeats and the broker's lists.

A queue is fine when it is empty, or when a live worker (fresh heartbeat, see
``tasks.heartbeat``) serves it and it is moving. It is *stalled* when its oldest message
has waited ``stall_s`` and nothing was consumed from it for as long.

kombu pushes on the left and workers pop on the right, so the oldest message is the tail
(``LINDEX -1``); how long it has waited comes from the publish time every sender stamps on
it (``tasks.heartbeat.published_at``), measured against Redis's clock: hosts kept in time
by NTP differ by far less than any stall threshold. A message without the stamp (sent by a
foreign producer) has an unknown wait: its queue is then judged by consumption alone.

The check only reads: three round trips, whatever the load, and no key written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.heartbeat import CONSUMED, HEARTBEAT_KEY, HEARTBEATS, published_at
from tasks.queues import QUEUES


@dataclass
class WorkerReport:
    live: list[str] = field(default_factory=list)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"live": self.live, "queues": self.queues}


@dataclass(frozen=True)
class QueueState:
    """One queue as the check saw it."""

    name: str
    length: int
    workers: int
    oldest_wait_s: float | None  # None: empty, or its oldest message carries no stamp
    last_consumed_s_ago: float | None  # None: never consumed (since Redis kept the stamp)

    def as_json(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "workers": self.workers,
            "oldest_wait_s": self.oldest_wait_s,
            "last_consumed_s_ago": self.last_consumed_s_ago,
        }

    def problem(self, stall_s: float) -> str | None:
        """Why this queue is unwell, or None."""
        if not self.length:
            return None
        if not self.workers:
            return f"{self.name}: {self.length} waiting and no live worker consumes it"
        ago, wait = self.last_consumed_s_ago, self.oldest_wait_s
        if (ago is not None and ago < stall_s) or (wait is not None and wait < stall_s):
            return None
        idle = "never consumed" if ago is None else f"last consumed {ago:.0f} s ago"
        waited = "an unknown time" if wait is None else f"{wait:.0f} s"
        return f"{self.name}: oldest message waiting {waited}, {idle}"


@dataclass(frozen=True)
class BrokerQueue:
    """One Celery queue as the broker holds it: its length and its oldest message's stamp.
    ``GET /health`` and ``GET /metrics`` both read the queues with ``broker_queues``."""

    name: str
    length: int
    sent_at: float | None  # its oldest message's publish time; None: empty, or no stamp
    unstamped: bool  # its oldest message carries no stamp: how long it waited is unknown

    def oldest_wait_s(self, now: float) -> float | None:
        """How long the oldest message has waited at ``now``; None: empty, or no stamp."""
        return None if self.sent_at is None else max(0.0, now - self.sent_at)


def broker_queues(broker: redis.Redis) -> tuple[float, list[BrokerQueue]]:
    """The broker's clock and each queue's length and oldest message, in one round trip."""
    pipe = broker.pipeline(transaction=False)
    pipe.time()
    for queue in QUEUES:
        pipe.llen(queue)
        pipe.lindex(queue, -1)  # kombu pushes on the left: the tail is the oldest
    (seconds, micros), *replies = pipe.execute()
    queues = []
    for queue, length, tail in zip(QUEUES, replies[0::2], replies[1::2], strict=True):
        sent = published_at(tail) if tail is not None else None
        queues.append(BrokerQueue(queue, length, sent, tail is not None and sent is None))
    return seconds + micros / 1e6, queues


def _serving(app_redis: redis.Redis, live: list[str]) -> dict[str, list[str]]:
    """The live workers consuming each queue, from their heartbeat records."""
    serving: dict[str, list[str]] = {queue: [] for queue in QUEUES}
    pipe = app_redis.pipeline(transaction=False)  # no round trip when nobody is live
    for host in live:
        pipe.get(HEARTBEAT_KEY.format(hostname=host))
    for host, raw in zip(live, pipe.execute(), strict=True):
        record = json.loads(raw) if raw else {}
        for queue in record.get("queues", []):
            serving.setdefault(queue, []).append(host)
    return serving


def check_workers(
    app_redis: redis.Redis, broker: redis.Redis, fresh_s: float, stall_s: float
) -> WorkerReport:
    """Each queue's length, its live workers, how long its head waited; reasons if unwell."""
    # Waits are measured on the app Redis's clock, the one the heartbeats are written with.
    _, queues = broker_queues(broker)
    pipe = app_redis.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(HEARTBEATS, 0, -1, withscores=True)
    pipe.hgetall(CONSUMED)
    (seconds, micros), beats, consumed = pipe.execute()
    now = seconds + micros / 1e6

    live = sorted(host for host, at in beats if now - at < fresh_s)
    serving = _serving(app_redis, live)
    report = WorkerReport(live=live)
    for queue in queues:
        last = consumed.get(queue.name)
        wait = queue.oldest_wait_s(now)
        state = QueueState(
            name=queue.name,
            length=queue.length,
            workers=len(serving[queue.name]),
            oldest_wait_s=None if wait is None else round(wait, 1),
            last_consumed_s_ago=round(now - float(last), 1) if last else None,
        )
        report.queues[queue.name] = state.as_json()
        problem = state.problem(stall_s)
        if problem is not None:
            report.reasons.append(problem)
    return report
