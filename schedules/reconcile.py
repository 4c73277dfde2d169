"""Rebuild the candidate store from PostgreSQL after Redis lost data.

Postgres is the source of truth: an event still queued or processing there must be either
a candidate or under a lease in Redis. Any that is neither (Redis restarted without its
data, or a crash between the row commit and the candidate write) is added back.

The read (PostgreSQL) and the write (Redis) are not one step, so an event may be settled
in between (expired, analysed, failed). Every settling step marks the event
``settled:<event>`` in Redis in the same script that drops its candidate or lease, and the
add re-checks that mark atomically: a settled event is never made a candidate again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from store.analysis import PendingEvent

from .candidates import CandidateStore, candidate_fields
from .shard import Shards


def missing_from_redis(
    where: Shards | redis.Redis, events: Sequence[PendingEvent]
) -> list[PendingEvent]:
    """The events that are neither a candidate nor under a lease on their home's shard
    (two reads per event, one round trip per shard)."""
    shards = Shards.of(where)
    by_shard: dict[int, list[PendingEvent]] = {}
    for event in events:
        by_shard.setdefault(shards.index_of(str(event.home_id)), []).append(event)
    missing: set[int] = set()
    for i, group in by_shard.items():
        shard = shards[i]
        pipe = shard.client.pipeline(transaction=False)
        for event in group:
            pipe.zscore(shard.keys.cand(str(event.home_id)), str(event.id))
            pipe.exists(shard.keys.lease(str(event.id)))
        answers = pipe.execute()
        for event, score, leased in zip(group, answers[::2], answers[1::2], strict=True):
            if score is None and not leased:
                missing.add(event.id)
    return [event for event in events if event.id in missing]


def restore(store: CandidateStore, events: Iterable[PendingEvent]) -> list[int]:
    """Add each event back as a candidate with its last priority (and, if it still has no
    lite result, back in the lite queue); returns the ids added."""
    restored = []
    for event in events:
        fields = candidate_fields(event.location, event.mode, event.motion_score)
        if store.add(
            event.home_id,
            event.id,
            event.tier,
            event.priority,
            fields,
            lite=event.needs_lite,  # lite:pending was lost with the rest
            # Settled between our PostgreSQL read and now (expiry, a worker): leave it.
            unless_settled=True,
        ):
            restored.append(event.id)
    return restored
