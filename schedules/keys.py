"""Every Redis key of the scheduler, named once.

One ``KeyMap`` per shard; its ``namespace`` goes in front of every name (default: none,
so ``redis-cli`` sees the names below). The Lua scripts never spell a key: they receive
the shared keys and the prefixes of the per-home and per-event keys from this map
(``schedules/lua/common.lua``), so a namespace, or a hash tag in it, applies to all.

    cand:{<home>}             ZSET  event → priority
    ev:{<home>}:<event>       HASH  candidate fields + tier, created_at, expires_at, attempts
    bucket:home:{<home>}      HASH  tokens, ts (ms) — the home's plan
    idx:cand:<tier>           ZSET  home → best priority among that home's candidates
    idx:home_tier             HASH  home → tier its candidates are indexed under
    idx:pending               HASH  tier → number of candidates
    idx:expiry                ZSET  "<home>:<event>" → expiry time (ms)
    bucket:tier:<tier>        HASH  tokens, ts (ms) — the tier's hard cap, only when set
    inflight                  ZSET  event → lease deadline (ms)
    processing:<event>        HASH  home, tier, score, attempts, deadline — the lease
    settled:<event>           STRING  settled (analysed, failed, expired) lately: reconcile
                                      must not make it a candidate again
    lite:pending              LIST  events waiting for the CPU lite scorer, oldest first
    tick:lock                 STRING  holder token (SET NX PX)
    tick:deficit              HASH  tier → share owed (+) or owing (-) from rounding
    deep:throughput           HASH  count, ts (ms) — deep events completed, decayed
    limit:device:{<home>}:<device>  HASH  tokens, ts (ms) — a device's ingest bucket
    limit:home:{<home>}       HASH  tokens, ts (ms) — a home's ingest bucket

Braces around a home id are literal Redis Cluster hash tags: one home's keys share a slot.
Only the per-home candidate sets start with ``cand:`` and only the candidate hashes with
``ev:``, so ``KEYS "cand:*"`` (or ``SCAN MATCH``) counts exactly those; the indexes over
them live under ``idx:``. docs/scheduling.md ("Shards") says how a namespace with a hash
tag makes each shard's keys one Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

# An ev: or lease hash outlives its TTL or lease by this much, so a crashed reaper or
# expiry task still finds the fields; it only guards against orphans never cleaned up.
ORPHAN_GRACE_MS = 3_600_000
# How long a settled event stays marked: far longer than reconcile takes from its
# PostgreSQL read to its Redis write, so a settlement in between is always seen.
SETTLED_TTL_MS = 600_000


@dataclass(frozen=True)
class KeyMap:
    namespace: str = ""

    # Keys every script receives (KEYS[1..5], in this order: common.lua reads them so).
    @property
    def home_tiers(self) -> str:
        return self.namespace + "idx:home_tier"

    @property
    def pending(self) -> str:
        return self.namespace + "idx:pending"

    @property
    def expiry(self) -> str:
        return self.namespace + "idx:expiry"

    @property
    def inflight(self) -> str:
        return self.namespace + "inflight"

    @property
    def lite_pending(self) -> str:
        return self.namespace + "lite:pending"

    def shared(self) -> list[str]:
        return [self.home_tiers, self.pending, self.expiry, self.inflight, self.lite_pending]

    # Prefixes every script receives (ARGV[2..7], in this order).
    def prefixes(self) -> list[str]:
        ns = self.namespace
        return [
            ns + "cand:",
            ns + "ev:",
            ns + "bucket:home:",
            ns + "idx:cand:",
            ns + "processing:",
            ns + "settled:",
        ]

    def cand(self, home_id: str) -> str:
        return f"{self.namespace}cand:{{{home_id}}}"

    def ev(self, home_id: str, event_id: str) -> str:
        return f"{self.namespace}ev:{{{home_id}}}:{event_id}"

    def home_bucket(self, home_id: str) -> str:
        return f"{self.namespace}bucket:home:{{{home_id}}}"

    def index(self, tier: str) -> str:
        return f"{self.namespace}idx:cand:{tier}"

    def lease(self, event_id: str) -> str:
        return f"{self.namespace}processing:{event_id}"

    def settled(self, event_id: str) -> str:
        return f"{self.namespace}settled:{event_id}"

    def tier_bucket(self, tier: str) -> str:
        return f"{self.namespace}bucket:tier:{tier}"

    def device_limit(self, home_id: str, device_id: str) -> str:
        return f"{self.namespace}limit:device:{{{home_id}}}:{device_id}"

    def home_limit(self, home_id: str) -> str:
        return f"{self.namespace}limit:home:{{{home_id}}}"

    @property
    def tick_lock(self) -> str:
        return self.namespace + "tick:lock"

    @property
    def deficit(self) -> str:
        return self.namespace + "tick:deficit"

    @property
    def throughput(self) -> str:
        return self.namespace + "deep:throughput"
