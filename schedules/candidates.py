"""The candidate store: events waiting for deep analysis, ranked per home and indexed per tier.

Every write is one Lua step that also keeps the per-tier index exact (``idx:cand:<tier>``
holds each home's best score; homes without candidates are absent), the per-tier pending
count, and the expiry index. A home's candidates are all indexed under the tier of its
latest ``add`` (a plan change moves them at once).

Redis is derived state: Postgres decides whether an event still needs analysis, so
re-adding an event that was already analysed is the caller's to avoid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import redis

from vigil.settings import current

from .config import SchedulerConfig
from .scripts import (
    EXPIRY,
    HOME_TIERS,
    LITE_PENDING,
    LUA_COMMON,
    ORPHAN_GRACE_MS,
    PENDING,
    EntityId,
    ScriptArg,
    cand_key,
    check_id,
    ev_key,
    pairs,
    processing_key,
    script,
    settled_key,
    sync_reply,
    text,
)

RESERVED_FIELDS = frozenset({"tier", "created_at", "expires_at", "attempts"})

# KEYS[1] cand:{home}  KEYS[2] ev:{home}:<event>  KEYS[3] idx:home_tier  KEYS[4] idx:pending
# KEYS[5] idx:expiry  KEYS[6] processing:<event>  KEYS[7] lite:pending
# KEYS[8] settled:<event>  KEYS[9..] ingest buckets (limit:device:..., limit:home:...)
# ARGV[1] home  ARGV[2] event  ARGV[3] tier  ARGV[4] score  ARGV[5] ttl ms
# ARGV[6] orphan grace ms  ARGV[7] time offset ms  ARGV[8] 1: queue a new candidate for the
# lite scorer  ARGV[9] 1: refuse an event marked settled (reconcile)  ARGV[10] n buckets
# then per bucket: capacity, refill per ms, 1 if this event may pass it when it is empty
# then field, value, ...
# Returns {status, wait ms}: status 1 (new candidate), 0 (already a candidate: score and
# fields updated), -1 (in flight: the lease owns the event), -2 (an ingest bucket is empty:
# nothing changed, retry after wait ms), -3 (settled since the caller read it: nothing changed).
ADD = (
    LUA_COMMON
    + r"""
local home, event, tier = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[6]) == 1 then return {-1, 0} end
if ARGV[9] == '1' and redis.call('EXISTS', KEYS[8]) == 1 then return {-3, 0} end
local now = now_ms(ARGV[7])
local nbuckets = tonumber(ARGV[10])
local buckets = {}
for i = 1, nbuckets do
  local at = 10 + (i - 1) * 3
  local capacity, per_ms, may_pass = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[at + 3]
  local tokens, ts = bucket_read(KEYS[8 + i], capacity, per_ms, now)
  if tokens < 1 and may_pass ~= '1' then
    return {-2, math.ceil((1 - tokens) / per_ms)}
  end
  buckets[i] = {KEYS[8 + i], tokens, ts, capacity, per_ms}
end
for _, b in ipairs(buckets) do  -- every bucket allows it: each pays a token if it has one
  bucket_write(b[1], math.max(0, b[2] - 1), b[3], b[4], b[5])
end
local ttl = tonumber(ARGV[5])
local old_tier = redis.call('HGET', KEYS[3], home)
if old_tier and old_tier ~= tier then
  local card = redis.call('ZCARD', KEYS[1])
  redis.call('ZREM', index_key(old_tier), home)
  redis.call('HINCRBY', KEYS[4], old_tier, -card)
  redis.call('HINCRBY', KEYS[4], tier, card)
end
redis.call('HSET', KEYS[3], home, tier)
local created = redis.call('ZADD', KEYS[1], ARGV[4], event)
if created == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'created_at', fmt(now), 'expires_at', fmt(now + ttl),
             'attempts', '0')
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl) + tonumber(ARGV[6]))
  redis.call('ZADD', KEYS[5], now + ttl, home .. ':' .. event)
  redis.call('HINCRBY', KEYS[4], tier, 1)
  if ARGV[8] == '1' then redis.call('RPUSH', KEYS[7], event) end
end
local first_field = 11 + nbuckets * 3
if #ARGV >= first_field then
  redis.call('HSET', KEYS[2], 'tier', tier, unpack(ARGV, first_field))
else
  redis.call('HSET', KEYS[2], 'tier', tier)
end
repair_index(home, tier)
return {created, 0}
"""
)


# KEYS[1] cand:{home}  KEYS[2] idx:home_tier
# ARGV[1] home  ARGV[2] event  ARGV[3] score
# Returns 1 if the event was a candidate (score updated), else 0.
UPDATE_SCORE = (
    LUA_COMMON
    + r"""
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[2])
repair_index(ARGV[1], redis.call('HGET', KEYS[2], ARGV[1]))
return 1
"""
)

# KEYS[1] cand:{home}  KEYS[2] ev:{home}:<event>  KEYS[3] idx:home_tier  KEYS[4] idx:pending
# KEYS[5] idx:expiry
# ARGV[1] home  ARGV[2] event
# Returns 1 if the event was a candidate (now removed), else 0.
REMOVE = (
    LUA_COMMON
    + r"""
local home, event = ARGV[1], ARGV[2]
if redis.call('ZREM', KEYS[1], event) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[5], home .. ':' .. event)
local tier = redis.call('HGET', KEYS[3], home)
redis.call('HINCRBY', KEYS[4], tier, -1)
repair_index(home, tier)
return 1
"""
)

# KEYS[1] idx:expiry  KEYS[2] idx:home_tier  KEYS[3] idx:pending
# ARGV[1] limit  ARGV[2] time offset ms
# Returns {{home, event, {field, value, ...}}, ...} for candidates past their TTL, removed.
EXPIRE_DUE = (
    LUA_COMMON
    + r"""
local now = now_ms(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local sep = string.find(member, ':', 1, true)
  local home, event = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if redis.call('ZREM', cand_key(home), event) == 1 then
    mark_settled(event)  -- the caller marks it skipped
    local ev = ev_key(home, event)
    local fields = redis.call('HGETALL', ev)
    redis.call('DEL', ev)
    local tier = redis.call('HGET', KEYS[2], home)
    redis.call('HINCRBY', KEYS[3], tier, -1)
    repair_index(home, tier)
    out[#out + 1] = {home, event, fields}
  end
end
return out
"""
)


class AddStatus(IntEnum):
    """What adding a candidate did (the ADD script's answer)."""

    NEW = 1
    REFRESHED = 0
    IN_FLIGHT = -1
    LIMITED = -2
    SETTLED = -3


@dataclass(frozen=True)
class Admission:
    status: AddStatus
    retry_after_s: float = 0.0  # LIMITED: when the emptied bucket has a token again


@dataclass(frozen=True)
class IngestBucket:
    """A token bucket an event must pass to be added (a device's or a home's ingest rate).

    ``may_pass``: this event is added even when the bucket is empty (a critical event
    passes its device's bucket; only its home's bucket can refuse it)."""

    key: str
    capacity: float
    refill_per_s: float
    may_pass: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity) and self.capacity >= 1):
            raise ValueError(f"capacity must be >= 1, got {self.capacity!r}")
        if not (math.isfinite(self.refill_per_s) and self.refill_per_s > 0):
            raise ValueError(f"refill_per_s must be > 0, got {self.refill_per_s!r}")


@dataclass(frozen=True)
class Candidate:
    home_id: str
    event_id: str
    score: float
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expired:
    """A candidate dropped for age; the caller marks it skipped in Postgres."""

    home_id: str
    event_id: str
    fields: dict[str, str]


def candidate_fields(location: str, mode: str, motion_score: float) -> dict[str, str]:
    """The fields a candidate carries besides those the store sets itself. Workers read
    events from PostgreSQL; these say what the event was to someone inspecting Redis."""
    return {"location": location, "mode": mode, "motion_score": repr(float(motion_score))}


class CandidateStore:
    """Candidates in Redis. ``config`` (default: this process's settings) supplies the TTL."""

    def __init__(self, redis_client: redis.Redis, config: SchedulerConfig | None = None) -> None:
        self.redis = redis_client
        self.config = config or current().scheduler
        self._add = script(redis_client, ADD)
        self._update = script(redis_client, UPDATE_SCORE)
        self._remove = script(redis_client, REMOVE)
        self._expire = script(redis_client, EXPIRE_DUE)

    def add(
        self,
        home_id: EntityId,
        event_id: EntityId,
        tier: str,
        score: float,
        fields: Mapping[str, str] | None = None,
        ttl_s: float | None = None,
        *,
        lite: bool = False,
        unless_settled: bool = False,
        time_offset_ms: float = 0.0,
    ) -> bool:
        """Add (or refresh) a candidate; True if it is new.

        Idempotent: adding the same event again keeps one candidate, updates its score and
        fields, and keeps its created_at and expiry. An event in flight is left alone.
        With ``lite``, a new candidate is also queued for the lite scorer (``lite:pending``)
        in the same step. With ``unless_settled`` (reconcile), an event marked settled
        since the caller read it as pending is left alone.
        """
        outcome = self.admit(
            home_id,
            event_id,
            tier,
            score,
            fields,
            ttl_s,
            lite=lite,
            unless_settled=unless_settled,
            time_offset_ms=time_offset_ms,
        )
        return outcome.status is AddStatus.NEW

    def admit(
        self,
        home_id: EntityId,
        event_id: EntityId,
        tier: str,
        score: float,
        fields: Mapping[str, str] | None = None,
        ttl_s: float | None = None,
        *,
        lite: bool = False,
        unless_settled: bool = False,
        buckets: Sequence[IngestBucket] = (),
        time_offset_ms: float = 0.0,
    ) -> Admission:
        """``add``, first taking a token from each ingest bucket in the same step: when one
        is empty (and the event may not pass it) nothing is written and the answer says
        how long until it refills."""
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        self.config.tier(tier)
        _check_score(score)
        ttl_s = self.config.candidate_ttl_s if ttl_s is None else ttl_s
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        flat: list[str] = []
        for name, value in (fields or {}).items():
            if name in RESERVED_FIELDS or not isinstance(value, str):
                raise ValueError(f"field {name!r} is reserved or not a str")
            flat += [name, value]
        keys = [
            cand_key(home_id),
            ev_key(home_id, event_id),
            HOME_TIERS,
            PENDING,
            EXPIRY,
            processing_key(event_id),
            LITE_PENDING,
            settled_key(event_id),
            *(b.key for b in buckets),
        ]
        argv: list[ScriptArg] = [
            home_id,
            event_id,
            tier,
            repr(float(score)),
            ttl_s * 1000.0,
            ORPHAN_GRACE_MS,
            time_offset_ms,
            int(lite),
            int(unless_settled),
            len(buckets),
        ]
        for b in buckets:
            argv += [b.capacity, b.refill_per_s / 1000.0, int(b.may_pass)]
        status, wait_ms = self._add(keys=keys, args=[*argv, *flat])
        return Admission(AddStatus(int(status)), int(wait_ms) / 1000.0)

    def update_score(self, home_id: EntityId, event_id: EntityId, score: float) -> bool:
        """Set a candidate's score (e.g. after the lite scorer ran); False if not a candidate."""
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        _check_score(score)
        keys = [cand_key(home_id), HOME_TIERS]
        return int(self._update(keys=keys, args=[home_id, event_id, repr(float(score))])) == 1

    def remove(self, home_id: EntityId, event_id: EntityId) -> bool:
        """Drop a candidate; False if it was not one."""
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        keys = [cand_key(home_id), ev_key(home_id, event_id), HOME_TIERS, PENDING, EXPIRY]
        return int(self._remove(keys=keys, args=[home_id, event_id])) == 1

    def get(self, home_id: EntityId, event_id: EntityId) -> Candidate | None:
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zscore(cand_key(home_id), event_id)
        pipe.hgetall(ev_key(home_id, event_id))
        score, fields = pipe.execute()
        if score is None:
            return None
        return Candidate(
            home_id, event_id, float(score), {text(k): text(v) for k, v in fields.items()}
        )

    def count(self, home_id: EntityId) -> int:
        return int(sync_reply(self.redis.zcard(cand_key(check_id("home_id", home_id)))))

    def pending_total(self, tier: str) -> int:
        self.config.tier(tier)
        return int(sync_reply(self.redis.hget(PENDING, tier)) or 0)

    def pending_by_tier(self) -> dict[str, int]:
        """Candidates waiting, per tier (tiers without any are absent)."""
        counts = sync_reply(self.redis.hgetall(PENDING))
        return {text(tier): int(n) for tier, n in counts.items()}

    def expire_due(self, limit: int | None = None, *, time_offset_ms: float = 0.0) -> list[Expired]:
        """Drop up to ``limit`` candidates past their TTL and return them (caller: skipped)."""
        limit = self.config.expire_limit if limit is None else limit
        if limit < 1:
            raise ValueError("limit must be >= 1")
        rows = self._expire(keys=[EXPIRY, HOME_TIERS, PENDING], args=[limit, time_offset_ms])
        return [Expired(text(h), text(e), pairs(f)) for h, e, f in rows]


def _check_score(score: float) -> None:
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(f"score must be a finite number, got {score!r}")
