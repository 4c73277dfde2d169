"""The live log of a home: a capped Redis Stream that workers append to and ``GET /stream`` reads.

Pub/sub forgets a message nobody was listening for; a stream keeps the last ~1000 entries, so
a client that reconnects with the last entry id it saw gets exactly what it missed. The entry
id (``1718000000000-0``) is the SSE event id, ``kind`` is the SSE event name and ``data`` the
JSON payload.

Kinds (``data`` keys in brackets), written by the deep worker (``tasks/deep.py``), the
digest and expiry tasks and the outbox sender (``tasks/digest.py``):

- ``event.analyzed``: the deep worker stored detections (event_id, labels)
- ``event.failed``: the deep worker could not analyse the event (event_id, error)
- ``alert``: an alert notification was recorded (event_id, notification_id, title)
- ``summary``: a summary notification was recorded (notification_id)
- ``push.delivered``: a push reached a provider (notification_id, device_id, provider,
  status, kind)
- ``push.failed``: a push was refused or gave up (the same keys)
- ``escalation``: an unacknowledged life-safety alert reached the next member of the
  chain, or everyone, or stopped (notification_id, step, members, pushes,
  stopped_reason, stopped_by)
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Iterable, Mapping

import redis
from redis.typing import EncodableT, FieldT

STREAM_KEY = "live:{{{home_id}}}"  # hash tag: one home's keys share a cluster slot
DEFAULT_MAXLEN = 1000
KINDS = frozenset(
    {
        "event.analyzed",
        "event.failed",
        "alert",
        "summary",
        "push.delivered",
        "push.failed",
        "escalation",
    }
)
START = "0-0"  # before every entry: reading after it replays the whole log
_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX_PART = 2**64 - 1

Entry = tuple[str, str, dict[str, object]]  # (id, kind, data)


def stream_key(home_id: int) -> str:
    return STREAM_KEY.format(home_id=home_id)


def publish(
    redis_client: redis.Redis,
    home_id: int,
    kind: str,
    data: Mapping[str, object],
    *,
    maxlen: int = DEFAULT_MAXLEN,
) -> str:
    """Append one entry to the home's log and return its id; ``ValueError`` on an unknown kind.

    Trimming is approximate (``MAXLEN ~``): Redis drops whole radix-tree nodes, which is far
    cheaper than trimming on every XADD, so the log may briefly hold a few more than ``maxlen``.
    """
    return publish_all(redis_client, [(home_id, kind, data)], maxlen=maxlen)[0]


def publish_all(
    redis_client: redis.Redis,
    entries: Iterable[tuple[int, str, Mapping[str, object]]],
    *,
    maxlen: int = DEFAULT_MAXLEN,
) -> list[str]:
    """``publish`` for several (home, kind, data) entries in one round trip; their ids."""
    pipe = redis_client.pipeline(transaction=False)
    for home_id, kind, data in entries:
        if kind not in KINDS:
            raise ValueError(f"unknown live kind {kind!r}")
        fields: dict[FieldT, EncodableT] = {
            "kind": kind,
            "data": json.dumps(dict(data), separators=(",", ":")),
        }
        pipe.xadd(stream_key(home_id), fields, maxlen=maxlen, approximate=True)
    return [_text(entry_id) for entry_id in pipe.execute()]


def read(
    redis_client: redis.Redis, home_id: int, last_id: str, block_ms: int | None, count: int
) -> list[Entry]:
    """Up to ``count`` entries after ``last_id``, oldest first, as (id, kind, data).

    With ``block_ms`` the call waits that long for a first entry (XREAD BLOCK), so the
    client's socket timeout must be above it; ``None`` returns at once.
    """
    reply = redis_client.xread({stream_key(home_id): last_id}, count=count, block=block_ms)
    if isinstance(reply, Awaitable):  # redis-py types its blocking and asyncio clients alike
        raise TypeError("the live log needs a blocking redis.Redis")
    if not reply:
        return []
    # RESP2 answers [[key, entries]], RESP3 {key: [entries]}.
    streams = reply.values() if isinstance(reply, dict) else [e for _key, e in reply]
    entries: list[Entry] = []
    for batch in streams:
        for entry_id, fields in batch:
            fields = {_text(k): _text(v) for k, v in fields.items()}
            entries.append((_text(entry_id), fields.get("kind", ""), json.loads(fields["data"])))
    return entries


def parse_id(text: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair of ints; ``ValueError`` for anything else."""
    match = _ID.fullmatch(text)
    if match is None:
        raise ValueError(f"not a stream entry id: {text[:40]!r}")
    parts = (int(match[1]), int(match[2]))
    if max(parts) > _MAX_PART:
        raise ValueError(f"stream entry id out of range: {text[:40]!r}")
    return parts


def resume_point(redis_client: redis.Redis, home_id: int, last_id: str | None) -> tuple[str, bool]:
    """Where a reader starts: (id to read after, whether entries it missed are gone).

    ``last_id=None`` means only new entries: the log's current last id, pinned now, because
    XREAD's ``$`` re-evaluated on every call would drop entries added between two reads. A
    ``last_id`` the log can no longer continue from (older than its first entry, or newer than
    its last one after Redis lost data) replays the whole log and reports a gap, so the
    client knows to refetch.
    """
    key = stream_key(home_id)
    with redis_client.pipeline(transaction=False) as pipe:
        pipe.xrange(key, count=1)
        pipe.xrevrange(key, count=1)
        first, last = pipe.execute()
    first_id = _text(first[0][0]) if first else None
    last_entry_id = _text(last[0][0]) if last else None
    if last_id is None:
        return last_entry_id or START, False
    seen = parse_id(last_id)
    if seen == (0, 0):
        return START, False
    if first_id is None or last_entry_id is None:  # the log is gone: Redis lost its data
        return START, True
    if seen < parse_id(first_id) or seen > parse_id(last_entry_id):
        return START, True
    return last_id, False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
