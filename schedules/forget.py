"""Forgetting a deleted home: every scheduler key of it, and its entries in the shared
indexes, in one step on its shard (``lua/forget.lua``).

The step needs nothing but the home id, so it can run again after a crash, or after the
home's rows are gone: its candidates are in ``cand:{<home>}``, its leases name it, and the
keys no index names (``ev:`` hashes left by a lease, the devices' ingest buckets) carry
the home's hash tag, so a ``SCAN`` of the shard finds them. Run again, it finds nothing
and changes nothing (it answers 0).

What stays: ``settled:<event>`` marks of the home's events, set here so that a reconcile
that read an event as pending before its row went does not make it a candidate again;
they lapse after ``SETTLED_TTL_MS``. An event of the home that another shard's
``lite:pending`` holds (``lite_queue.give_back`` returns ids to the primary) is skipped by
the lite worker, which finds no row for it.
"""

from __future__ import annotations

import re

import redis

from .scripts import EntityId, check_id, lua, text
from .shard import Shard, Shards

FORGET = lua("forget")
# Keys a SCAN call looks at: enough to cross a large keyspace in few round trips, little
# enough that no call holds Redis for long.
SCAN_COUNT = 1000
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_literal(value: str) -> str:
    """``value`` as a SCAN MATCH pattern that matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", value)


def home_key_pattern(shard: Shard, home_id: str) -> str:
    """The SCAN MATCH pattern of the home's keys under the shard's namespace."""
    return f"{_glob_literal(shard.keys.namespace)}*{{{home_id}}}*"


def forget_home(where: Shards | Shard | redis.Redis, home_id: EntityId) -> int:
    """Remove every scheduler key of the home and its entries in the indexes, the leases
    and the lite queue of its shard; how many keys and entries went (0: none was left)."""
    home_id = check_id("home_id", home_id)
    shard = Shards.of(where).for_home(home_id)
    keys = shard.keys
    ev_prefix = keys.ev(home_id, "")
    device_prefix = keys.device_limit(home_id, "")
    events: list[str] = []
    buckets = [keys.home_limit(home_id)]
    for raw in shard.client.scan_iter(match=home_key_pattern(shard, home_id), count=SCAN_COUNT):
        key = text(raw)
        if key.startswith(ev_prefix):
            events.append(key[len(ev_prefix) :])
        elif key.startswith(device_prefix):
            buckets.append(key)
    return int(shard.run(FORGET, buckets, [home_id, *events]))
