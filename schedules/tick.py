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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis

from .config import SchedulerConfig
from .dispatch import Dispatched, dispatch
from .leases import release
from .scripts import PENDING, TICK_LOCK, script, sync_reply, text
from .shares import quotas, split

log = logging.getLogger(__name__)

DEFICIT = "tick:deficit"  # HASH tier -> share owed (+) or owing (-) from rounding, |x| < 1

# KEYS[1] tick:lock  ARGV[1] holder token. Deletes the lock only if we still hold it.
UNLOCK = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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


def run_tick(
    redis_client: redis.Redis,
    config: SchedulerConfig,
    free_capacity: Callable[[], int],
    send_batch: Callable[[str, list[Dispatched]], None],
    *,
    time_offset_ms: float = 0.0,
) -> TickReport:
    """Share ``free_capacity()`` (how many more events the deep workers can start soon;
    negative counts as 0) among the tiers by weight and dispatch it."""
    token = uuid.uuid4().hex
    if not sync_reply(redis_client.set(TICK_LOCK, token, nx=True, px=config.tick_lock_ms)):
        return TickReport(locked_out=True)
    report = TickReport()
    try:
        report.capacity = max(0, int(free_capacity()))
        if report.capacity == 0:
            return report
        leased = _dispatch_shares(redis_client, config, report, time_offset_ms)
        for name, events in leased.items():
            report.dispatched[name] = _send(
                redis_client, config, report, name, events, send_batch, time_offset_ms
            )
    finally:
        script(redis_client, UNLOCK)(keys=[TICK_LOCK], args=[token])
    return report


def waiting_by_tier(redis_client: redis.Redis, config: SchedulerConfig) -> dict[str, int]:
    """``idx:pending`` for the configured tiers (a tier with none is 0)."""
    counts = sync_reply(redis_client.hgetall(PENDING))
    found = {text(tier): int(n) for tier, n in counts.items()}
    return {name: max(0, found.get(name, 0)) for name in config.tiers}


def _dispatch_shares(
    redis_client: redis.Redis, config: SchedulerConfig, report: TickReport, offset: float
) -> dict[str, list[Dispatched]]:
    weights = {name: tier.weight for name, tier in config.tiers.items()}
    waiting = waiting_by_tier(redis_client, config)
    demand = {name: min(n, config.k_per_tick) for name, n in waiting.items()}
    leased: dict[str, list[Dispatched]] = {name: [] for name, n in demand.items() if n > 0}
    if not leased:
        redis_client.delete(DEFICIT)
        return {}
    first, carried = quotas(report.capacity, weights, demand, _deficit(redis_client))
    _save_deficit(redis_client, carried)
    report.quotas = {name: first[name] for name in leased}
    left = report.capacity
    share = first
    exhausted: set[str] = set()  # returned fewer than asked: nothing more this tick
    while left > 0 and report.passes <= len(config.tiers):
        report.passes += 1
        for name, quota in share.items():
            if quota <= 0:
                continue
            got = dispatch(
                redis_client, config.tiers[name], config, quota, time_offset_ms=offset
            ).events
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
    redis_client: redis.Redis,
    config: SchedulerConfig,
    report: TickReport,
    name: str,
    events: list[Dispatched],
    send_batch: Callable[[str, list[Dispatched]], None],
    offset: float,
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
            report.released += release(
                redis_client, config, [d.event_id for d in batch], time_offset_ms=offset
            )
            continue
        report.batches += 1
        sent += len(batch)
    return sent


def _deficit(redis_client: redis.Redis) -> dict[str, float]:
    stored = sync_reply(redis_client.hgetall(DEFICIT))
    out: dict[str, float] = {}
    for tier, value in stored.items():
        try:
            out[text(tier)] = float(value)
        except ValueError:
            continue  # a hand-edited value: start that tier afresh
    return out


def _save_deficit(redis_client: redis.Redis, carried: Mapping[str, float]) -> None:
    pipe = redis_client.pipeline(transaction=True)
    pipe.delete(DEFICIT)
    if carried:
        pipe.hset(DEFICIT, mapping={tier: repr(value) for tier, value in carried.items()})
    pipe.execute()
