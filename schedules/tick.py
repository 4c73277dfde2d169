"""One scheduler tick: split the free capacity among the tiers by weight, lease what may go
now, and hand it to the sender in batches.

1. ``free_capacity()`` says how many events the deep workers can start soon (one pool for
   every tier, ``schedules/capacity.py``); ``idx:pending`` how many wait per tier.
2. The capacity is split among the tiers with events waiting by weight, water-filling, with
   a deficit carried between ticks in ``tick:deficit`` (``schedules/shares.py``), and each
   tier's dispatch step takes its quota.
3. A step that returns fewer than its quota (homes held by their plans, a hard cap) leaves
   the rest to the tiers that filled theirs: further passes split it among them by weight
   until it is used or no tier can take more. No capacity idles while any event may go.

With several shards (``schedules/shard.py``) each tier's quota is merged across them: a dry
run of the dispatch step on every shard says which events each would give, the best
``quota`` of those decide how many each shard gives, and then each takes its part. The
lock, the deficit and the waiting counts' sum are the primary shard's business.

The tick takes a short lock (``SET tick:lock <token> NX PX``) so a second beat does no
work; correctness never depends on it, because each dispatch step is one atomic Lua step
(at worst two overlapping ticks both dispatch up to the capacity they read, and one's
deficit write wins). Events are sent once all passes are done, a tier's in batches of at
most ``max_batch_size``. If ``send_batch`` raises, that batch's leases are released back to
the candidates at once (no attempt counted, nothing lost). The plan and cap tokens they
took are not refunded: a token is a dispatch attempt, so a broken broker cannot turn into
a retry storm, and the events go again as the buckets refill.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from .candidates import pending_by_tier
from .config import SchedulerConfig, TierConfig
from .dispatch import Dispatched, dispatch
from .leases import release
from .scripts import lua, sync_reply, text
from .shard import Shard, Shards
from .shares import quotas, split

log = logging.getLogger(__name__)

UNLOCK = lua("unlock")


@dataclass
class TickReport:
    locked_out: bool = False  # another tick held the lock: nothing was done
    dispatched: dict[str, int] = field(default_factory=dict)  # tier -> events sent
    batches: int = 0
    send_failures: int = 0
    released: int = 0  # events returned to the candidates after a failed send
    capacity: int = 0  # what free_capacity() answered (negative counts as 0)
    quotas: dict[str, int] = field(default_factory=dict)  # tier -> first-pass quota
    leased: dict[str, int] = field(default_factory=dict)  # tier -> events leased, all passes
    passes: int = 0  # dispatch passes run (1 + those that handed on leftover capacity)
    waiting: dict[str, int] = field(default_factory=dict)  # tier -> candidates before the tick

    def left(self) -> dict[str, int]:
        """Candidates still waiting per tier after the tick."""
        return {name: max(0, n - self.leased.get(name, 0)) for name, n in self.waiting.items()}


def run_tick(
    where: Shards | Shard | redis.Redis,
    config: SchedulerConfig,
    free_capacity: Callable[[], int],
    send_batch: Callable[[str, list[Dispatched]], None],
) -> TickReport:
    """Share ``free_capacity()`` (how many more events the deep workers can start soon;
    negative counts as 0) among the tiers by weight and dispatch it."""
    shards = Shards.of(where)
    primary = shards.primary
    lock = primary.keys.tick_lock
    token = uuid.uuid4().hex
    if not sync_reply(primary.client.set(lock, token, nx=True, px=config.tick_lock_ms)):
        return TickReport(locked_out=True)
    report = TickReport()
    try:
        report.waiting = waiting_by_tier(shards, config)
        report.capacity = max(0, int(free_capacity()))
        if report.capacity == 0:
            return report
        leased = _dispatch_shares(shards, config, report)
        for name, events in leased.items():
            report.dispatched[name] = _send(shards, config, report, name, events, send_batch)
    finally:
        primary.run(UNLOCK, [lock], [token])
    return report


def waiting_by_tier(where: Shards | redis.Redis, config: SchedulerConfig) -> dict[str, int]:
    """``idx:pending`` of every shard, summed, for the configured tiers (none: 0)."""
    found = pending_by_tier(Shards.of(where))
    return {name: max(0, found.get(name, 0)) for name in config.tiers}


def take_across(
    shards: Shards, tier: TierConfig, config: SchedulerConfig, quota: int
) -> list[Dispatched]:
    """Lease the tier's best ``quota`` events over every shard (one dispatch step per
    shard; with several, a dry run on each first decides how many each gives)."""
    if len(shards) == 1:
        return dispatch(shards.primary, tier, config, quota).events
    offers = [
        (event.score, i)
        for i, shard in enumerate(shards)
        for event in dispatch(shard, tier, config, quota, dry=True).events
    ]
    offers.sort(key=lambda offer: offer[0], reverse=True)
    counts = Counter(i for _, i in offers[:quota])
    taken: list[Dispatched] = []
    for i, n in sorted(counts.items()):
        taken += dispatch(shards[i], tier, config, n).events
    return taken


def _dispatch_shares(
    shards: Shards, config: SchedulerConfig, report: TickReport
) -> dict[str, list[Dispatched]]:
    primary = shards.primary
    weights = {name: tier.weight for name, tier in config.tiers.items()}
    demand = {name: min(n, config.k_per_tick) for name, n in report.waiting.items()}
    leased: dict[str, list[Dispatched]] = {name: [] for name, n in demand.items() if n > 0}
    if not leased:
        primary.client.delete(primary.keys.deficit)  # nothing waits: nobody is owed anything
        return {}
    first, carried = quotas(report.capacity, weights, demand, _deficit(primary))
    _save_deficit(primary, carried)
    report.quotas = {name: first[name] for name in leased}
    left = report.capacity
    share = first
    exhausted: set[str] = set()  # returned fewer than asked: nothing more this tick
    while left > 0 and report.passes <= len(config.tiers):
        report.passes += 1
        for name, quota in share.items():
            if quota <= 0:
                continue
            got = take_across(shards, config.tiers[name], config, quota)
            leased[name] += got
            left -= len(got)
            if len(got) < quota:
                exhausted.add(name)
        more = {
            name: demand[name] - len(events)
            for name, events in leased.items()
            if name not in exhausted and demand[name] > len(events)
        }
        if left <= 0 or not more:
            break
        share = split(left, weights, more)
    report.leased = {name: len(events) for name, events in leased.items()}
    return leased


def _send(
    shards: Shards,
    config: SchedulerConfig,
    report: TickReport,
    name: str,
    events: list[Dispatched],
    send_batch: Callable[[str, list[Dispatched]], None],
) -> int:
    """Send a tier's events best first in batches; returns how many went."""
    events = sorted(events, key=lambda d: d.score, reverse=True)
    sent = 0
    size = config.max_batch_size
    for start in range(0, len(events), size):
        batch = events[start : start + size]
        try:
            send_batch(name, batch)
        except Exception:
            log.exception("sending a %s batch of %d failed; releasing it", name, len(batch))
            report.send_failures += 1
            by_shard: dict[int, list[str]] = {}
            for d in batch:
                by_shard.setdefault(shards.index_of(d.home_id), []).append(d.event_id)
            for i, ids in by_shard.items():
                report.released += release(shards[i], config, ids)
            continue
        report.batches += 1
        sent += len(batch)
    return sent


def _deficit(primary: Shard) -> dict[str, float]:
    stored = sync_reply(primary.client.hgetall(primary.keys.deficit))
    out: dict[str, float] = {}
    for tier, value in stored.items():
        try:
            out[text(tier)] = float(value)
        except ValueError:
            continue  # a hand-edited value: start that tier afresh
    return out


def _save_deficit(primary: Shard, carried: Mapping[str, float]) -> None:
    key = primary.keys.deficit
    pipe = primary.client.pipeline(transaction=True)
    pipe.delete(key)
    if carried:
        pipe.hset(key, mapping={tier: repr(value) for tier, value in carried.items()})
    pipe.execute()
