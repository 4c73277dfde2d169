"""Adopt candidates written under the earlier index names (``cand:index:<tier>``,
``cand:tiers``, ``cand:pending``, ``cand:expiry``), now ``idx:cand:<tier>``,
``idx:home_tier``, ``idx:pending`` and ``idx:expiry``.

The per-home sets ``cand:{<home>}``, the hashes ``ev:{<home>}:<event>`` and the leases kept
their names, so a Redis written by the earlier release still holds every candidate; only
the indexes that find them moved. Reconcile alone would not notice: it asks whether an
event is in its home's set, and it is. So the reconcile task first runs :data:`ADOPT`, one
Lua step that does nothing unless an earlier name exists, and otherwise folds the earlier
indexes into the current ones and rebuilds those from the per-home sets: every home the
earlier ``cand:tiers`` knew keeps its tier (unless the current hash already names one),
``idx:cand:<tier>`` and ``idx:pending`` are recomputed from the sets, expiry entries are
merged (the later deadline wins) and those whose candidate has gone are dropped; then the
earlier keys are deleted. Running it again is harmless, so processes of both releases may
overlap for a while during a deploy.

The step reads every home with candidates: milliseconds for thousands of homes, about a
second per million. It runs once per Redis that holds the earlier names.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from .scripts import EXPIRY, HOME_TIERS, LUA_COMMON, PENDING, index_key, script

LEGACY_HOME_TIERS = "cand:tiers"
LEGACY_PENDING = "cand:pending"
LEGACY_EXPIRY = "cand:expiry"
LEGACY_INDEX_PREFIX = "cand:index:"

# KEYS[1] cand:tiers  KEYS[2] cand:pending  KEYS[3] cand:expiry  KEYS[4] idx:home_tier
# KEYS[5] idx:pending  KEYS[6] idx:expiry  then n cand:index:<tier>, then n idx:cand:<tier>
# ARGV[1] n (tiers)
# Returns -1 if no earlier key exists (nothing done), else the homes indexed afterwards.
ADOPT = (
    LUA_COMMON
    + r"""
local n = tonumber(ARGV[1])
local legacy = {KEYS[1], KEYS[2], KEYS[3]}
for i = 1, n do legacy[#legacy + 1] = KEYS[6 + i] end
if redis.call('EXISTS', unpack(legacy)) == 0 then return -1 end

local old = redis.call('HGETALL', KEYS[1])
for i = 1, #old, 2 do redis.call('HSETNX', KEYS[4], old[i], old[i + 1]) end

redis.call('ZUNIONSTORE', KEYS[6], 2, KEYS[6], KEYS[3], 'AGGREGATE', 'MAX')
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local sep = string.find(member, ':', 1, true)
  local home, event = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  if not redis.call('ZSCORE', cand_key(home), event) then redis.call('ZREM', KEYS[6], member) end
end

for _, key in ipairs(legacy) do redis.call('DEL', key) end
redis.call('DEL', KEYS[5])
for i = 1, n do redis.call('DEL', KEYS[6 + n + i]) end

local homes = redis.call('HGETALL', KEYS[4])
local indexed = 0
for i = 1, #homes, 2 do
  local home, tier = homes[i], homes[i + 1]
  local card = redis.call('ZCARD', cand_key(home))
  if card > 0 then
    redis.call('HINCRBY', KEYS[5], tier, card)
    indexed = indexed + 1
  end
  repair_index(home, tier)
end
return indexed
"""
)


def legacy_index_key(tier: str) -> str:
    return LEGACY_INDEX_PREFIX + tier


def adopt_legacy_indexes(client: redis.Redis, tiers: Iterable[str]) -> int | None:
    """Fold indexes left under the earlier names into the current ones; None if there were
    none (the usual case: one EXISTS inside the script), else the homes now indexed."""
    names = list(tiers)
    keys = [
        LEGACY_HOME_TIERS,
        LEGACY_PENDING,
        LEGACY_EXPIRY,
        HOME_TIERS,
        PENDING,
        EXPIRY,
        *(legacy_index_key(t) for t in names),
        *(index_key(t) for t in names),
    ]
    indexed = int(script(client, ADOPT)(keys=keys, args=[len(names)]))
    return None if indexed < 0 else indexed
