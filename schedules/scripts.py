"""Key names, the Lua helpers every scheduler script shares, and per-client registration.

Key layout (braces around a home id are literal Redis Cluster hash tags,
so one home's keys share a slot):

    cand:{<home>}             ZSET  event → priority
    ev:{<home>}:<event>       HASH  candidate fields + tier, created_at, expires_at, attempts
    bucket:home:{<home>}      HASH  tokens, ts (ms) — the home's plan
    idx:cand:<tier>           ZSET  home → best priority among that home's candidates
    idx:home_tier             HASH  home → tier its candidates are indexed under
    idx:pending               HASH  tier → number of candidates
    idx:expiry                ZSET  "<home>:<event>" → expiry time (ms)
    bucket:tier:<tier>        HASH  tokens, ts (ms) — the tier's hard cap, only when set
    inflight                  ZSET  event → lease deadline (ms)
    processing:<event>        HASH  home, tier, score, attempts, deadline
    tick:lock                 STRING  holder token (SET NX PX)
    tick:deficit              HASH  tier → share owed (+) or owing (-) from rounding
    deep:throughput           HASH  count, ts (ms) — deep events completed, decayed
    lite:pending              LIST  events waiting for the CPU lite scorer, oldest first
    settled:<event>           STRING  the event was settled (analysed, failed, expired) here
                                      lately: reconcile must not make it a candidate again
    limit:device:{<home>}:<device>  HASH  tokens, ts (ms) — a device's ingest bucket
    limit:home:{<home>}       HASH  tokens, ts (ms) — a home's ingest bucket

Only the per-home candidate sets start with ``cand:`` and only the candidate hashes with
``ev:``, so ``KEYS "cand:*"`` / ``KEYS "ev:*"`` (or ``SCAN MATCH``) count exactly those; the
indexes over them live under ``idx:``.

Times are milliseconds from Redis ``TIME``. Every time-reading script takes a
``time offset`` ARGV that shifts ``TIME``; it is always 0 in production and exists only so
tests can simulate minutes of traffic without sleeping. docs/architecture.md ("Redis keys")
shows where these keys sit among the rest of the system's state.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Awaitable, Iterable
from typing import TypeAlias, TypeVar

import redis
from redis.commands.core import Script

# An id as callers hold it: a database id, or its decimal text (``check_id`` makes the text).
EntityId: TypeAlias = str | int
# What a Lua script takes as one ARGV item (redis-py encodes numbers as their text).
ScriptArg: TypeAlias = str | int | float

Reply = TypeVar("Reply")

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

INDEX_PREFIX = "idx:cand:"
HOME_TIERS = "idx:home_tier"
PENDING = "idx:pending"
EXPIRY = "idx:expiry"
INFLIGHT = "inflight"
TICK_LOCK = "tick:lock"
LITE_PENDING = "lite:pending"

# An ev:/processing: key outlives its lease or TTL by this much, so a crashed reaper or
# expiry task still finds the fields; it only guards against orphans never cleaned up.
ORPHAN_GRACE_MS = 3_600_000
# How long a settled event stays marked: far longer than reconcile takes from its
# PostgreSQL read to its Redis write, so a settlement in between is always seen.
SETTLED_TTL_MS = 600_000


def check_id(kind: str, value: EntityId) -> str:
    """Ids go into key names and ``home:event`` members: no braces, colons or spaces.

    Database ids (non-negative ints) are accepted and returned as their decimal text.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValueError(f"{kind} must match {ID_PATTERN.pattern}, got {value!r}")
    return value


def cand_key(home_id: str) -> str:
    return f"cand:{{{home_id}}}"


def ev_key(home_id: str, event_id: str) -> str:
    return f"ev:{{{home_id}}}:{event_id}"


def home_bucket_key(home_id: str) -> str:
    return f"bucket:home:{{{home_id}}}"


def tier_bucket_key(tier: str) -> str:
    return f"bucket:tier:{tier}"


def index_key(tier: str) -> str:
    return INDEX_PREFIX + tier


def processing_key(event_id: str) -> str:
    return f"processing:{event_id}"


def settled_key(event_id: str) -> str:
    return f"settled:{event_id}"


def device_limit_key(home_id: str, device_id: str) -> str:
    return f"limit:device:{{{home_id}}}:{device_id}"


def home_limit_key(home_id: str) -> str:
    return f"limit:home:{{{home_id}}}"


# The index names, from the constants above: a script names them through these locals only.
LUA_NAMES = f"""
local INDEX_PREFIX = '{INDEX_PREFIX}'
local HOME_TIERS = '{HOME_TIERS}'
local PENDING = '{PENDING}'
local EXPIRY = '{EXPIRY}'
local INFLIGHT = '{INFLIGHT}'
"""

LUA_COMMON = (
    LUA_NAMES
    + r"""
local function cand_key(home) return 'cand:{' .. home .. '}' end
local function index_key(tier) return INDEX_PREFIX .. tier end
local function ev_key(home, event) return 'ev:{' .. home .. '}:' .. event end
local function home_bucket_key(home) return 'bucket:home:{' .. home .. '}' end
local function fmt(x) return string.format('%.17g', x) end

-- Settled in PostgreSQL (or about to be): a reconcile that read it as pending must not
-- make it a candidate again.
local function mark_settled(event)
  redis.call('SET', 'settled:' .. event, '1', 'PX', 600000)  -- SETTLED_TTL_MS
end

local function now_ms(offset)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 + tonumber(offset)
end

-- The index holds each home's best score; a home without candidates is absent.
local function repair_index(home, tier)
  local top = redis.call('ZREVRANGE', cand_key(home), 0, 0, 'WITHSCORES')
  if #top == 0 then
    redis.call('ZREM', index_key(tier), home)
    redis.call('HDEL', HOME_TIERS, home)
  else
    redis.call('ZADD', index_key(tier), top[2], home)
  end
end

-- Token bucket: HASH {tokens, ts}; a missing bucket is full. Refill is linear and capped;
-- a clock that goes backwards refills nothing and never moves ts back.
local function bucket_read(key, capacity, per_ms, now)
  local s = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(s[1]), tonumber(s[2])
  if tokens == nil or ts == nil then return capacity, now end
  if now > ts then
    tokens = tokens + (now - ts) * per_ms
    ts = now
  end
  return math.min(capacity, tokens), ts
end

local function bucket_write(key, tokens, ts, capacity, per_ms)
  redis.call('HSET', key, 'tokens', fmt(tokens), 'ts', fmt(ts))
  -- once full again the state carries no information: let it go
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / per_ms) + 1000)
end
"""
)

_registry: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = weakref.WeakKeyDictionary()


def script(client: redis.Redis, source: str) -> Script:
    """``client.register_script(source)``, once per client (Script objects cache the SHA)."""
    per_client = _registry.setdefault(client, {})
    found = per_client.get(source)
    if found is None:
        found = per_client[source] = client.register_script(source)
    return found


def sync_reply(reply: Awaitable[Reply] | Reply) -> Reply:
    """A command's reply, typed for the synchronous ``redis.Redis`` this package takes.

    redis-py declares each command once for its blocking and asyncio clients, as
    ``Awaitable[T] | T``; a blocking client always answers ``T``.
    """
    if isinstance(reply, Awaitable):
        raise TypeError("the scheduler needs a synchronous redis.Redis, not an asyncio client")
    return reply


def text(value: str | bytes) -> str:
    """A reply as str, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value


def pairs(flat: Iterable[str | bytes]) -> dict[str, str]:
    """A flat HGETALL reply [k1, v1, k2, v2, ...] as a dict."""
    items = [text(v) for v in flat]
    return dict(zip(items[0::2], items[1::2], strict=True))
