"""Worker heartbeats: proof that a worker is alive *and* consuming, for ``GET /health``.

Every worker writes ``worker:heartbeat:{hostname}`` (JSON, TTL ``HEARTBEAT_TTL_S``) into the
app's Redis (``REDIS_URL``, not the broker database):

    {"at": 1712345678.9, "queues": ["lite"], "last_task": "inference.lite_batch",
     "last_task_at": 1712345670.1, "tasks_done": 12}

and registers itself in ``worker:heartbeats`` (ZSET hostname → at) so a reader finds the
live workers without scanning keys. After each task it also stamps
``worker:consumed`` (HASH queue → at), which tells a stalled queue from a merely busy one.

Writers: ``worker_ready`` and Celery's ``heartbeat_sent`` (the main process, every event
heartbeat, throttled here) and ``task_postrun`` (the pool process that ran the task). One
Lua step merges the record, so a main-process beat never erases a child's task count.
Times come from Redis ``TIME``: one clock for every writer and for the health check.

Celery messages carry no publish time, so every publish of this app stamps one in the
message's headers (``before_task_publish``, in whichever process sends: beat, workers, a
test). ``GET /health`` reads it back from a queue's oldest message (``published_at``) to
tell a queue whose message has waited for minutes from one that was fed a moment ago,
without writing anything itself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import redis
from celery.signals import before_task_publish, heartbeat_sent, task_postrun, worker_ready

from schedules.scripts import script
from tasks.best_effort_redis import best_effort_redis
from vigil.settings import current

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "worker:heartbeat:{hostname}"
HEARTBEATS = "worker:heartbeats"
CONSUMED = "worker:consumed"
HEARTBEAT_TTL_S = 120
# Celery's event heartbeat fires every 2 s; a beat this often is plenty for a 120 s TTL.
BEAT_EVERY_S = 10.0
# The message header holding when the message was published (Unix time, the sender's clock).
PUBLISHED_AT = "vigil_published_at"

# KEYS[1] worker:heartbeat:<hostname>  KEYS[2] worker:heartbeats  KEYS[3] worker:consumed
# ARGV[1] hostname  ARGV[2] queues (JSON list)  ARGV[3] ttl s  ARGV[4] task name or ''
# ARGV[5] queue the task came from or ''
# Returns the record as written (JSON).
RECORD = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[3])
local rec = {tasks_done = 0}
local old = redis.call('GET', KEYS[1])
if old then
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' then rec = decoded end
end
rec.at = now
local queues = cjson.decode(ARGV[2])
if #queues > 0 then rec.queues = queues end
if ARGV[4] ~= '' then
  rec.last_task = ARGV[4]
  rec.last_task_at = now
  rec.tasks_done = (tonumber(rec.tasks_done) or 0) + 1
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[5], string.format('%.6f', now)) end
end
local out = cjson.encode(rec)
redis.call('SET', KEYS[1], out, 'EX', ttl)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
return out
"""


def record_heartbeat(
    client: redis.Redis,
    hostname: str,
    queues: list[str],
    *,
    task: str | None = None,
    queue: str | None = None,
    ttl_s: int = HEARTBEAT_TTL_S,
) -> dict[str, Any]:
    """Refresh ``hostname``'s record; with ``task``, count one task consumed from ``queue``."""
    raw = script(client, RECORD)(
        keys=[HEARTBEAT_KEY.format(hostname=hostname), HEARTBEATS, CONSUMED],
        args=[hostname, json.dumps(sorted(queues)), str(ttl_s), task or "", queue or ""],
    )
    return json.loads(raw)


class _Writer:
    """This process's Redis client (rebuilt after fork) and the beat throttle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._client: redis.Redis | None = None
        self.last_beat = 0.0

    def client(self) -> redis.Redis | None:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._client, self.last_beat = os.getpid(), None, 0.0
            url = current().redis_url
            if self._client is None and url:
                # Short timeouts: the main-process beat runs on the consumer's event loop.
                self._client = best_effort_redis(url)
            return self._client

    def write(
        self,
        hostname: str | None,
        queues: list[str],
        task: str | None = None,
        queue: str | None = None,
    ) -> None:
        client = self.client()
        if client is None or not hostname:
            return
        try:
            record_heartbeat(client, hostname, queues, task=task, queue=queue)
        except Exception as exc:  # a heartbeat must never fail a task or stall the loop
            log.warning("worker heartbeat not written: %r", exc)


_writer = _Writer()


def consumed_queues(app: Any) -> list[str]:
    """Queues this worker consumes (``-Q``), as selected by the worker at start."""
    try:
        return sorted(app.amqp.queues.consume_from)
    except Exception:  # not a worker, or queues not selected yet
        return []


def published_at(raw: str | bytes) -> float | None:
    """When the queued message ``raw`` was published (Unix time), from its stamp.

    ``raw`` is one entry of a queue's list in the broker's Redis as kombu's Redis transport
    (kombu 5) writes it: a JSON object whose ``headers`` are the message's application
    headers, which Celery's task protocol 2 fills with the task's headers, ``PUBLISHED_AT``
    among them. None for anything else, or a message sent without the stamp.
    """
    try:
        stamp = json.loads(raw)["headers"][PUBLISHED_AT]
    except (ValueError, TypeError, KeyError):
        return None
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    return float(stamp)


@before_task_publish.connect
def _stamp_published_at(headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    if headers is not None:
        headers[PUBLISHED_AT] = time.time()


@worker_ready.connect
def _on_ready(sender: Any = None, **_kwargs: Any) -> None:
    if sender is None:
        return
    _writer.last_beat = time.monotonic()
    _writer.write(getattr(sender, "hostname", None), consumed_queues(sender.app))


@heartbeat_sent.connect
def _on_heartbeat(sender: Any = None, **_kwargs: Any) -> None:
    eventer = getattr(sender, "eventer", None)
    now = time.monotonic()
    if eventer is None or now - _writer.last_beat < BEAT_EVERY_S:
        return
    _writer.last_beat = now
    _writer.write(getattr(eventer, "hostname", None), consumed_queues(eventer.app))


@task_postrun.connect
def _on_task_done(sender: Any = None, **_kwargs: Any) -> None:
    if sender is None:
        return
    request = sender.request
    queue = (request.delivery_info or {}).get("routing_key")
    _writer.write(request.hostname, consumed_queues(sender.app), task=sender.name, queue=queue)
