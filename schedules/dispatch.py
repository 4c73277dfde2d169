"""The atomic dispatch step: one Lua script per tier per pass of a tick.

In one step it decides how many events the tier may take (``n = min(quota, k)``, and no
more than the whole tokens of the tier's hard-cap bucket when one is configured), picks
the best ``n`` candidates across homes while honouring every home's plan bucket and the
share cap, pops them, writes a lease for each (``inflight`` + ``processing:<event>``),
repairs the index entries of the homes it touched and takes exactly the tokens used. A
crash or a second beat therefore can neither dispatch an event twice nor leak tokens.

Share cap: while other homes of the tier can go, one home takes at most
``max(1, ceil(home_share × n))`` of the step. Only when the homes found cannot fill ``n``
that way does the step give them more, each still within its plan bucket, so the cap
spreads a tier's capacity without ever leaving it idle.

Selection is O(n log H + n²) per tier, never O(homes): walking ``idx:cand:<tier>`` from
the top, the first ``n`` homes whose plan bucket allows at least one event hold the best
``n`` events any cap-respecting choice could take (every other home's best is no better
than theirs), so the script merges those homes' top events only. At most ``scan_limit``
homes are inspected, so a crowd of homes held by their plans at the top costs a bounded
walk (those homes simply wait for their buckets, as the plan intends).

Every key the step touches is on one shard: the home keys it finds on the index share the
shard's namespace, so a namespace with a hash tag keeps the whole step in one Redis Cluster
slot (docs/scheduling.md, "Shards"). A dry run answers what the step would take without
writing, so a tick over several shards can merge their best before it takes from each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from .config import SchedulerConfig, TierConfig
from .scripts import lua, text
from .shard import Shard

DISPATCH = lua("dispatch")


@dataclass(frozen=True)
class Dispatched:
    """One leased event. Workers read the event from PostgreSQL, so the candidate's own
    fields are not sent back; they stay in Redis until the lease ends, so an event the
    reaper returns is a candidate with its fields again."""

    home_id: str
    event_id: str
    tier: str
    score: float
    attempts: int


@dataclass(frozen=True)
class DispatchResult:
    tier: str
    events: list[Dispatched]
    now_ms: float  # the Redis time the step used
    cap_tokens_left: float | None  # the hard-cap bucket after the step; None: no cap


def dispatch(
    where: Shard | redis.Redis,
    tier: TierConfig,
    config: SchedulerConfig,
    quota: int,
    *,
    dry: bool = False,
) -> DispatchResult:
    """Lease the best events of ``tier`` on ``shard``, at most ``quota`` (and
    ``config.k_per_tick``), within every home's plan, the share cap and the tier's hard cap
    if it has one. With ``dry``, only say which events that would be; nothing changes."""
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise ValueError(f"quota must be an int >= 0, got {quota!r}")
    shard = Shard.of(where)
    cap_refill = tier.cap_refill_per_s
    options: dict[str, object] = {
        "tier": tier.name,
        "n": min(quota, config.k_per_tick),
        "home_share": tier.home_share,
        "scan_limit": config.scan_limit,
        "lease_ms": config.processing_timeout_s * 1000.0,
        "dry": dry,
        "plan": {"capacity": float(tier.plan_burst), "per_ms": tier.plan_refill_per_s / 1000.0},
    }
    if cap_refill is not None:
        options["cap"] = {"capacity": float(tier.cap_burst or 0), "per_ms": cap_refill / 1000.0}
    now, tokens, rows = shard.run(
        DISPATCH, [shard.keys.tier_bucket(tier.name)], [json.dumps(options)]
    )
    events = [Dispatched(text(h), text(e), tier.name, float(s), int(a)) for h, e, s, a in rows]
    left = float(tokens) if cap_refill is not None else None
    return DispatchResult(tier.name, events, float(now), left)
