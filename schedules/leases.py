"""Leases on dispatched events: complete, release (send failed) and reap (deadline passed).

A lease is ``inflight`` (event → deadline ms) plus ``processing:<event>`` (home, tier, score,
attempts). ``attempts`` counts leases that expired: the reaper returns an expired event to
its home's candidates with ``attempts + 1``, or, once that reaches ``max_attempts``, drops
it and reports it failed (the caller marks it failed in Postgres: a dead letter). A
completion that arrives after its lease was reaped finds nothing and changes nothing; the
event may then be analysed again (at least once), which the notification outbox makes
harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

from .config import SchedulerConfig
from .scripts import EntityId, ScriptArg, lua, text
from .shard import Shard, Shards

COMPLETE = lua("complete")
RELEASE = lua("returns", "release")
REAP = lua("returns", "reap")


@dataclass(frozen=True)
class Reaped:
    """An expired lease; ``home_id`` is "" only if its lease record was lost."""

    home_id: str
    event_id: str
    tier: str
    attempts: int


@dataclass(frozen=True)
class ReapReport:
    returned: list[Reaped] = field(default_factory=list)  # candidates again
    failed: list[Reaped] = field(default_factory=list)  # caller marks them failed


def complete(shard: Shard | redis.Redis, event_id: EntityId) -> bool:
    """Clear an event's lease after analysis; False (harmless) if there was none."""
    return complete_all(shard, [event_id]) == 1


def complete_all(where: Shard | redis.Redis, event_ids: Iterable[EntityId]) -> int:
    """``complete`` for a whole batch in one step; returns how many had a lease."""
    ids = [str(e) for e in event_ids]
    if not ids:
        return 0
    return int(Shard.of(where).run(COMPLETE, [], ids))


def complete_batch(
    shards: Shards,
    event_ids: Iterable[EntityId],
    homes: Mapping[int, int] | Mapping[str, str] | None = None,
) -> int:
    """``complete_all`` over shards: an event whose home is known (``homes``: event → home)
    goes to its home's shard; one whose home is not is completed on every shard (a shard
    without its lease only marks it settled)."""
    known = {str(event): str(home) for event, home in (homes or {}).items()}
    by_shard: dict[int, list[str]] = {}
    for event_id in map(str, event_ids):
        home = known.get(event_id)
        targets = [shards.index_of(home)] if home is not None else range(len(shards))
        for i in targets:
            by_shard.setdefault(i, []).append(event_id)
    return sum(complete_all(shards[i], ids) for i, ids in by_shard.items())


def release(
    where: Shards | Shard | redis.Redis, config: SchedulerConfig, event_ids: Iterable[EntityId]
) -> int:
    """Return leased events to their candidates without counting an attempt (the batch
    never reached a worker); returns how many were still leased. Given shards, each is
    asked (a shard without an event's lease ignores it)."""
    ids = [str(e) for e in event_ids]
    if not ids:
        return 0
    targets = list(Shards.of(where))
    args: list[ScriptArg] = [config.candidate_ttl_s * 1000.0, *ids]
    return sum(int(t.run(RELEASE, [], args)) for t in targets)


def reap(
    where: Shards | Shard | redis.Redis, config: SchedulerConfig, limit: int | None = None
) -> ReapReport:
    """Handle up to ``limit`` leases whose deadline has passed, on each shard."""
    limit = config.reap_limit if limit is None else limit
    if limit < 1:
        raise ValueError("limit must be >= 1")
    args: list[ScriptArg] = [config.max_attempts, config.candidate_ttl_s * 1000.0, limit]
    report = ReapReport()
    for shard in Shards.of(where):
        returned, failed = shard.run(REAP, [], args)
        report.returned.extend(Reaped(text(h), text(e), text(t), int(a)) for h, e, t, a in returned)
        report.failed.extend(Reaped(text(h), text(e), text(t), int(a)) for h, e, t, a in failed)
    return report
