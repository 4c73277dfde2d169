"""The scheduler's Lua, loaded once from ``schedules/lua/``, and the helpers every module
of this package shares.

Each script is ``common.lua`` (the calling convention, the key helpers and the two
primitives that alone change candidates) followed by the files it names. A ``Script``
object is registered once per client and runs by SHA (``EVALSHA``, loading on a miss).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Awaitable, Iterable
from functools import cache
from importlib import resources
from typing import TypeAlias, TypeVar

import redis
from redis.commands.core import Script

# An id as callers hold it: a database id, or its decimal text (``check_id`` makes the text).
EntityId: TypeAlias = str | int
# What a Lua script takes as one ARGV item (redis-py encodes numbers as their text).
ScriptArg: TypeAlias = str | int | float

Reply = TypeVar("Reply")

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def check_id(kind: str, value: EntityId) -> str:
    """Ids go into key names and ``home:event`` members: no braces, colons or spaces.

    Database ids (non-negative ints) are accepted and returned as their decimal text.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValueError(f"{kind} must match {ID_PATTERN.pattern}, got {value!r}")
    return value


@cache
def _file(name: str) -> str:
    return resources.files("schedules").joinpath("lua", f"{name}.lua").read_text()


def lua(*names: str) -> str:
    """The source of a script: ``common.lua`` then each named file, in order."""
    return "\n".join(_file(name) for name in ("common", *names))


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
