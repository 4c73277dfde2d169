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
from .scripts import cand_key, processing_key


def missing_from_redis(
    redis_client: redis.Redis, events: Sequence[PendingEvent]
) -> list[PendingEvent]:
    """The events that are neither a candidate nor under a lease (two reads per event)."""
    pipe = redis_client.pipeline(transaction=False)
    for event in events:
        pipe.zscore(cand_key(str(event.home_id)), str(event.id))
        pipe.exists(processing_key(str(event.id)))
    answers = pipe.execute()
    return [
        event
        for event, score, leased in zip(events, answers[::2], answers[1::2], strict=True)
        if score is None and not leased
    ]


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
