"""Where the scheduler's keys live: a shard is one Redis and one key map; ``Shards`` routes
each home to one of them.

One shard is the usual deployment. Homes spread over several (independent Redis nodes, or
namespaces with their own hash tag on a Redis Cluster) by a stable hash of the home id,
so a home's candidates, plan bucket, ingest buckets and leases all live on one shard and
every step stays one atomic script there. The tick's own state (lock, deficit,
throughput) lives on the first shard, the primary.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from redis.client import Pipeline

from .keys import ORPHAN_GRACE_MS, SETTLED_TTL_MS, KeyMap
from .scripts import ScriptArg, script


class Shard:
    """One Redis holding the scheduler's keys under ``keys``.

    ``clock_offset_ms`` shifts the Redis ``TIME`` every script reads: always 0 in
    production; tests move it to simulate minutes of traffic without sleeping.
    """

    def __init__(
        self, client: redis.Redis, keys: KeyMap | None = None, *, clock_offset_ms: float = 0.0
    ) -> None:
        self.client = client
        self.keys = keys or KeyMap()
        self.clock_offset_ms = clock_offset_ms
        self._shared = self.keys.shared()
        self._prefixes = self.keys.prefixes()

    def run(
        self,
        source: str,
        keys: Sequence[str] = (),
        args: Sequence[ScriptArg] = (),
        *,
        pipe: Pipeline | None = None,
    ) -> Any:
        """Run a script of ``schedules/lua`` with the calling convention of common.lua:
        the shared keys, then ``keys``; the clock, prefixes and limits, then ``args``.
        ``pipe``: queue it on a pipeline instead (a plain Redis's; a Redis Cluster's
        pipeline refuses scripts)."""
        header: list[ScriptArg] = [
            repr(float(self.clock_offset_ms)),
            *self._prefixes,
            SETTLED_TTL_MS,
            ORPHAN_GRACE_MS,
        ]
        return script(self.client, source)(
            keys=[*self._shared, *keys], args=[*header, *args], client=pipe
        )

    @classmethod
    def of(cls, where: Shard | redis.Redis) -> Shard:
        """A shard as given, or a client's with the default keys."""
        return where if isinstance(where, Shard) else cls(where)

    def __repr__(self) -> str:
        return f"Shard({self.client!r}, {self.keys!r})"


class Shards:
    """The shards homes are spread over, in a fixed order (the order decides routing)."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        if not shards:
            raise ValueError("at least one shard is needed")
        self._shards = list(shards)

    @classmethod
    def of(cls, where: Shards | Shard | redis.Redis) -> Shards:
        """Shards as given, or one: a shard, or a client's with the default keys."""
        return where if isinstance(where, Shards) else cls([Shard.of(where)])

    @property
    def primary(self) -> Shard:
        """Holds the tick's lock, deficit and the deep pool's throughput."""
        return self._shards[0]

    def index_of(self, home_id: str) -> int:
        """The position of the home's shard: a stable hash of its id."""
        if len(self._shards) == 1:
            return 0
        return zlib.crc32(home_id.encode()) % len(self._shards)

    def for_home(self, home_id: str) -> Shard:
        return self._shards[self.index_of(home_id)]

    def move_clock(self, ms: float) -> None:
        """Shift every shard's clock (tests)."""
        for shard in self._shards:
            shard.clock_offset_ms += ms

    def __getitem__(self, i: int) -> Shard:
        return self._shards[i]

    def __len__(self) -> int:
        return len(self._shards)

    def __iter__(self) -> Iterator[Shard]:
        return iter(self._shards)


def connect(
    urls: Sequence[str], namespace: str, client_for: Callable[[str], redis.Redis]
) -> Shards:
    """The shards at ``urls``, in order, each with the keys under ``namespace``;
    ``client_for`` gives the client of a URL (a process reuses the ones it has)."""
    keys = KeyMap(namespace)
    return Shards([Shard(client_for(url), keys) for url in urls])
