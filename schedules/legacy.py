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

from .scripts import lua
from .shard import Shard

LEGACY_HOME_TIERS = "cand:tiers"
LEGACY_PENDING = "cand:pending"
LEGACY_EXPIRY = "cand:expiry"
LEGACY_INDEX_PREFIX = "cand:index:"

ADOPT = lua("adopt_legacy")


def legacy_index_key(tier: str) -> str:
    return LEGACY_INDEX_PREFIX + tier


def adopt_legacy_indexes(where: Shard | redis.Redis, tiers: Iterable[str]) -> int | None:
    """Fold indexes left under the earlier names into the current ones; None if there were
    none (the usual case: one EXISTS inside the script), else the homes now indexed. The
    earlier release had no namespace and one node: only a shard with the default keys
    can hold them."""
    shard = Shard.of(where)
    names = list(tiers)
    legacy = [LEGACY_HOME_TIERS, LEGACY_PENDING, LEGACY_EXPIRY]
    keys = [*legacy, *(legacy_index_key(t) for t in names)]
    indexed = int(shard.run(ADOPT, keys, names))
    return None if indexed < 0 else indexed
