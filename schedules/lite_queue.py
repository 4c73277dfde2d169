"""Events waiting for the CPU lite scorer: ``lite:pending``, a FIFO list of event ids per
shard (each shard's list holds its homes' events; ``take`` drains them in turn).

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

from .scripts import sync_reply
from .shard import Shards


def take(where: Shards | redis.Redis, n: int) -> list[int]:
    """Remove and return up to ``n`` of the oldest waiting event ids (shard by shard)."""
    taken: list[int] = []
    for shard in Shards.of(where):
        if len(taken) >= n:
            break
        got = sync_reply(shard.client.lpop(shard.keys.lite_pending, n - len(taken)))
        if isinstance(got, list):  # with a count, LPOP answers a list, or nil when empty
            taken += [int(event) for event in got]
    return taken


def give_back(where: Shards | redis.Redis, event_ids: Sequence[int]) -> None:
    """Put ids that could not be sent back at the head of the primary shard's list, in
    their order (the lite worker reads events from PostgreSQL, so any list will do)."""
    if event_ids:
        shard = Shards.of(where).primary
        shard.client.lpush(shard.keys.lite_pending, *reversed([str(e) for e in event_ids]))


def waiting(where: Shards | redis.Redis) -> int:
    return sum(
        int(sync_reply(shard.client.llen(shard.keys.lite_pending))) for shard in Shards.of(where)
    )
