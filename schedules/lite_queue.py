"""Events waiting for the CPU lite scorer: ``lite:pending``, a FIFO list of event ids.

The candidate store appends a new candidate without on-device results in the same Lua
step that adds it, so accepting an event costs no broker message for lite scoring. The
beat's lite dispatch (``tasks.scheduling.dispatch_lite``) takes only what the lite workers
can start soon and sends it in batches, so a burst waits here, in Redis, rather than as
thousands of Celery messages. An event dispatched for deep analysis or settled meanwhile
is skipped by the worker: Postgres says whether it is still queued.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from .scripts import LITE_PENDING, sync_reply


def take(client: redis.Redis, n: int) -> list[int]:
    """Remove and return up to ``n`` of the oldest waiting event ids."""
    if n <= 0:
        return []
    taken = sync_reply(client.lpop(LITE_PENDING, n))
    if not isinstance(taken, list):  # with a count, LPOP answers a list, or nil when empty
        return []
    return [int(event) for event in taken]


def give_back(client: redis.Redis, event_ids: Sequence[int]) -> None:
    """Put ids that could not be sent back at the head, in their order."""
    if event_ids:
        client.lpush(LITE_PENDING, *reversed([str(e) for e in event_ids]))


def waiting(client: redis.Redis) -> int:
    return int(sync_reply(client.llen(LITE_PENDING)))
