"""One scheduler tick: per tier, lease what may go now and hand it to the sender in batches.

The tick takes a short lock (``SET tick:lock <token> NX PX``) so a second beat does no
work; correctness never depends on it, because each tier's dispatch is one atomic Lua
step. If ``send_batch`` raises, that batch's leases are released back to the candidates at
once (no attempt counted, nothing lost). The tokens they took are not refunded: a token is
a dispatch attempt, so a broken broker cannot turn into a retry storm, and the events go
again as the bucket refills.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from .config import SchedulerConfig
from .dispatch import Dispatched, dispatch
from .leases import release
from .scripts import TICK_LOCK, script, sync_reply

log = logging.getLogger(__name__)

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


def run_tick(
    redis_client: redis.Redis,
    config: SchedulerConfig,
    free_capacity: Callable[[str], int],
    send_batch: Callable[[str, list[Dispatched]], None],
    *,
    time_offset_ms: float = 0.0,
) -> TickReport:
    """Dispatch every tier once; ``free_capacity(tier)`` is how many more events its workers
    can start soon (negative counts as 0)."""
    token = uuid.uuid4().hex
    if not sync_reply(redis_client.set(TICK_LOCK, token, nx=True, px=config.tick_lock_ms)):
        return TickReport(locked_out=True)
    report = TickReport()
    try:
        for name, tier in config.tiers.items():
            free = max(0, int(free_capacity(name)))
            if free == 0:
                continue
            result = dispatch(redis_client, tier, config, free, time_offset_ms=time_offset_ms)
            sent = 0
            size = config.max_batch_size
            for start in range(0, len(result.events), size):
                batch = result.events[start : start + size]
                try:
                    send_batch(name, batch)
                except Exception:
                    log.exception("sending a %s batch of %d failed; releasing it", name, len(batch))
                    report.send_failures += 1
                    report.released += release(
                        redis_client,
                        config,
                        [d.event_id for d in batch],
                        time_offset_ms=time_offset_ms,
                    )
                    continue
                report.batches += 1
                sent += len(batch)
            report.dispatched[name] = sent
    finally:
        script(redis_client, UNLOCK)(keys=[TICK_LOCK], args=[token])
    return report
