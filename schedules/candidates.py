"""The candidate store: events waiting for deep analysis, ranked per home and indexed per tier.

Every write is one Lua step on the home's shard (``schedules/lua``); the two primitives
of common.lua, add_candidate and take_candidates, keep the per-tier index exact
(``idx:cand:<tier>`` holds each home's best score; homes without candidates are absent),
the per-tier pending count, and the expiry index. A home's candidates are all indexed
under the tier of its latest ``add`` (a plan change moves them at once).

Redis is derived state: Postgres decides whether an event still needs analysis, so
re-adding an event that was already analysed is the caller's to avoid.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import redis

from vigil.settings import current

from .config import SchedulerConfig
from .keys import KeyMap
from .scripts import EntityId, ScriptArg, check_id, lua, pairs, sync_reply, text
from .shard import Shard, Shards

RESERVED_FIELDS = frozenset({"tier", "created_at", "expires_at", "attempts"})

ADD = lua("add")
RESCORE = lua("rescore")
REMOVE = lua("remove")
EXPIRE = lua("expire")


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
    """Candidates in Redis, on the shard of their home. ``config`` (default: this process's
    settings) supplies the TTL."""

    def __init__(
        self, shards: Shards | Shard | redis.Redis, config: SchedulerConfig | None = None
    ) -> None:
        self.shards = Shards.of(shards)
        self.config = config or current().scheduler

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
    ) -> bool:
        """Add (or refresh) a candidate; True if it is new.

        Idempotent: adding the same event again keeps one candidate, updates its score and
        fields, and keeps its created_at and expiry. An event in flight is left alone.
        With ``lite``, a new candidate is also queued for the lite scorer (``lite:pending``)
        in the same step. With ``unless_settled`` (reconcile), an event marked settled
        since the caller read it as pending is left alone.
        """
        outcome = self.admit(
            home_id, event_id, tier, score, fields, ttl_s, lite=lite, unless_settled=unless_settled
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
    ) -> Admission:
        """``add``, first taking a token from each ingest bucket in the same step: when one
        is empty (and the event may not pass it) nothing is written and the answer says
        how long until it refills. A bucket's ``key`` is the home's shard's own name."""
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
        shard = self.shards.for_home(home_id)
        keys, args = add_call(
            shard.keys,
            home_id,
            event_id,
            tier,
            score,
            ttl_s * 1000.0,
            lite=lite,
            unless_settled=unless_settled,
            buckets=buckets,
            fields=flat,
        )
        status, wait_ms = shard.run(ADD, keys, args)
        return Admission(AddStatus(int(status)), int(wait_ms) / 1000.0)

    def update_score(self, home_id: EntityId, event_id: EntityId, score: float) -> bool:
        """Set a candidate's score (e.g. after the lite scorer ran); False if not a candidate."""
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        _check_score(score)
        shard = self.shards.for_home(home_id)
        return int(shard.run(RESCORE, [], [home_id, event_id, repr(float(score))])) == 1

    def remove(self, home_id: EntityId, event_id: EntityId) -> bool:
        """Drop a candidate; False if it was not one."""
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        shard = self.shards.for_home(home_id)
        return int(shard.run(REMOVE, [shard.keys.ev(home_id, event_id)], [home_id, event_id])) == 1

    def get(self, home_id: EntityId, event_id: EntityId) -> Candidate | None:
        home_id = check_id("home_id", home_id)
        event_id = check_id("event_id", event_id)
        shard = self.shards.for_home(home_id)
        pipe = shard.client.pipeline(transaction=True)
        pipe.zscore(shard.keys.cand(home_id), event_id)
        pipe.hgetall(shard.keys.ev(home_id, event_id))
        score, fields = pipe.execute()
        if score is None:
            return None
        return Candidate(
            home_id, event_id, float(score), {text(k): text(v) for k, v in fields.items()}
        )

    def count(self, home_id: EntityId) -> int:
        home_id = check_id("home_id", home_id)
        shard = self.shards.for_home(home_id)
        return int(sync_reply(shard.client.zcard(shard.keys.cand(home_id))))

    def pending_total(self, tier: str) -> int:
        self.config.tier(tier)
        return self.pending_by_tier().get(tier, 0)

    def pending_by_tier(self) -> dict[str, int]:
        """Candidates waiting, per tier, all shards together (tiers without any are absent)."""
        return pending_by_tier(self.shards)

    def expire_due(self, limit: int | None = None) -> list[Expired]:
        """Drop up to ``limit`` candidates past their TTL on each shard and return them
        (caller: skipped)."""
        limit = self.config.expire_limit if limit is None else limit
        if limit < 1:
            raise ValueError("limit must be >= 1")
        return [
            Expired(text(h), text(e), pairs(f))
            for shard in self.shards
            for h, e, f in shard.run(EXPIRE, [], [limit])
        ]


def add_call(
    keys: KeyMap,
    home_id: str,
    event_id: str,
    tier: str,
    score: float,
    ttl_ms: float,
    *,
    lite: bool = False,
    unless_settled: bool = False,
    buckets: Sequence[IngestBucket] = (),
    fields: Sequence[str] = (),
) -> tuple[list[str], list[ScriptArg]]:
    """The keys and arguments of one ADD (``lua/add.lua``) for checked ids: what ``admit``
    runs, and what a bulk loader queues on a pipeline (``Shard.run(..., pipe=...)``)."""
    options = {
        "home": home_id,
        "event": event_id,
        "tier": tier,
        "score": repr(float(score)),
        "ttl_ms": ttl_ms,
        "lite": lite,
        "unless_settled": unless_settled,
        "buckets": [
            {"capacity": b.capacity, "per_ms": b.refill_per_s / 1000.0, "may_pass": b.may_pass}
            for b in buckets
        ],
    }
    script_keys = [
        keys.ev(home_id, event_id),
        keys.lease(event_id),
        keys.settled(event_id),
        *(b.key for b in buckets),
    ]
    return script_keys, [json.dumps(options), *fields]


def pending_by_tier(shards: Shards) -> dict[str, int]:
    """``idx:pending`` of every shard, summed (one HGETALL each)."""
    total: dict[str, int] = {}
    for shard in shards:
        for tier, n in sync_reply(shard.client.hgetall(shard.keys.pending)).items():
            total[text(tier)] = total.get(text(tier), 0) + int(n)
    return total


def _check_score(score: float) -> None:
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise ValueError(f"score must be a finite number, got {score!r}")
