"""Are the Celery queues being consumed? Read from worker heartbeats and the broker's lists.

A queue is fine when it is empty, or when a live worker (fresh heartbeat, see
``tasks.heartbeat``) serves it and it is moving. It is *stalled* when its oldest message
has waited ``stall_s`` and nothing was consumed from it for as long.

kombu pushes on the left and workers pop on the right, so the oldest message is the tail
(``LINDEX -1``). Messages carry no publish time, so the wait is measured from when a health
check first saw that message at the tail (``health:queue_tail:<queue>``): a lower bound,
exact to the scrape interval. The whole check is three round trips, whatever the load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis

from celery_config import QUEUES
from tasks.heartbeat import CONSUMED, HEARTBEAT_KEY, HEARTBEATS

TAIL_KEY = "health:queue_tail:{queue}"
TAIL_TTL_S = 86_400


@dataclass
class WorkerReport:
    live: list[str] = field(default_factory=list)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"live": self.live, "queues": self.queues}


def message_id(raw: str) -> str:
    """A kombu message's task id (or delivery tag); a digest of it if it is not JSON."""
    try:
        message = json.loads(raw)
        return str(message["headers"].get("id") or message["properties"]["delivery_tag"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


def check_workers(
    app_redis: redis.Redis, broker: redis.Redis, fresh_s: float, stall_s: float
) -> WorkerReport:
    """Each queue's length, its live workers, how long its head waited; reasons if unwell."""
    pipe = broker.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue)
        pipe.lindex(queue, -1)
    replies = pipe.execute()
    lengths = dict(zip(QUEUES, replies[0::2], strict=True))
    tails = dict(zip(QUEUES, replies[1::2], strict=True))

    pipe = app_redis.pipeline(transaction=False)
    pipe.time()
    pipe.zrange(HEARTBEATS, 0, -1, withscores=True)
    pipe.hgetall(CONSUMED)
    pipe.mget([TAIL_KEY.format(queue=q) for q in QUEUES])
    (seconds, micros), beats, consumed, marks = pipe.execute()
    now = seconds + micros / 1e6

    live = sorted(host for host, at in beats if now - at < fresh_s)
    pipe = app_redis.pipeline(transaction=False)
    if live:
        pipe.mget([HEARTBEAT_KEY.format(hostname=h) for h in live])
    serving: dict[str, list[str]] = {q: [] for q in QUEUES}
    report = WorkerReport(live=live)
    waits = _tail_waits(pipe, tails, dict(zip(QUEUES, marks, strict=True)), now)
    results = pipe.execute()
    for host, raw in zip(live, results[0] if live else [], strict=True):
        record = json.loads(raw) if raw else {}
        for queue in record.get("queues", []):
            serving.setdefault(queue, []).append(host)

    for queue in QUEUES:
        length = lengths[queue]
        last = consumed.get(queue)
        ago = round(now - float(last), 1) if last else None
        report.queues[queue] = {
            "length": length,
            "workers": len(serving[queue]),
            "oldest_wait_s": waits.get(queue),
            "last_consumed_s_ago": ago,
        }
        if not length:
            continue
        if not serving[queue]:
            report.reasons.append(f"{queue}: {length} waiting and no live worker consumes it")
        elif waits[queue] >= stall_s and (ago is None or ago >= stall_s):
            idle = "never consumed" if ago is None else f"last consumed {ago:.0f} s ago"
            report.reasons.append(f"{queue}: oldest message waiting {waits[queue]:.0f} s, {idle}")
    return report


def _tail_waits(
    pipe: redis.client.Pipeline,
    tails: dict[str, str | None],
    marks: dict[str, str | None],
    now: float,
) -> dict[str, float]:
    """Seconds each queue's current tail has been seen there; queues new tails on ``pipe``."""
    waits: dict[str, float] = {}
    for queue, raw in tails.items():
        if raw is None:
            continue
        tail = message_id(raw)
        mark = json.loads(marks[queue]) if marks[queue] else None
        if mark is not None and mark.get("id") == tail:
            waits[queue] = round(max(0.0, now - float(mark["since"])), 1)
            continue
        waits[queue] = 0.0
        value = json.dumps({"id": tail, "since": now})
        pipe.set(TAIL_KEY.format(queue=queue), value, ex=TAIL_TTL_S)
    return waits
