"""``GET /stream?home_id=N``: a home's live log as server-sent events, resumable.

Each SSE event is one entry of ``notify.live``: ``id:`` the entry id, ``event:`` its kind,
``data:`` its JSON. A client that reconnects sends the last id it saw (``Last-Event-ID``
header, or ``last_event_id`` in the query for clients that cannot set headers; the header
wins, since EventSource updates it on every reconnect) and gets exactly what it missed. When
the log no longer reaches back that far, an ``event: gap`` comes first and the whole log
follows: the client must refetch through the REST API.

The response ends after ``STREAM_MAX_S``: proxies and gunicorn threads are recycled, and
the token is checked again on the reconnect. ``: keepalive`` comments go out
after ``STREAM_KEEPALIVE_S`` of silence, which is also how a vanished client is noticed.
The caller's membership is checked again as often, in PostgreSQL: a member removed from the
home (or limited to some cameras) sees their stream end, and its reconnect refused.

Each open stream holds a web thread, so streams are capped well below the thread count:
``STREAM_MAX_PER_PROCESS`` in this process's memory (8 of gunicorn's 32 threads by default,
see ``vigil.settings``), and ``STREAM_MAX_PER_USER`` across processes in Redis. Over a cap
the answer is a 429 with Retry-After; the rest of the API keeps its threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any

import psycopg
import redis
from flask import Blueprint, Response, current_app, request
from flask_jwt_extended import jwt_required
from psycopg.rows import scalar_row
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import Field

from notify import live
from webapp.access import member_home
from webapp.clients import get_pool, get_redis, redis_client
from webapp.errors import ApiError
from webapp.requests import query_args
from webapp.schemas import Id, Strict
from webapp.tokens import current_user_id

bp = Blueprint("stream", __name__, url_prefix="/stream")
log = logging.getLogger(__name__)

RETRY_MS = 2000
READ_COUNT = 100
# The blocking XREAD waits at most the keepalive; the socket must outlast it by a margin.
SOCKET_MARGIN_S = 5.0
LAST_EVENT_ID_HEADER = "Last-Event-ID"
STREAM_RETRY_AFTER_S = 10  # what a refused stream is told to wait
USER_STREAMS_KEY = "stream:user:{user_id}"
# A slot left by a process that died is forgotten once its stream would have ended anyway.
SLOT_MARGIN_S = 30.0

# KEYS[1] stream:user:<id> (ZSET slot → when it lapses, ms)
# ARGV[1] cap  ARGV[2] slot  ARGV[3] lapse after ms
# Returns 1 if the slot was taken, 0 if the user is at the cap.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


class ProcessSlots:
    """Streams open in this process, at most ``cap`` (a counter, not a queue: over the cap
    the request is refused at once instead of waiting for a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def take(self, cap: int) -> bool:
        with self._lock:
            if self.open >= cap:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


SLOTS_EXTENSION = "vigil.stream_slots"


def process_slots() -> ProcessSlots:
    """This app's counter (one app per web process)."""
    return current_app.extensions.setdefault(SLOTS_EXTENSION, ProcessSlots())


class _Held:
    """The response body, and what to release when the server closes it: WSGI servers call
    ``close()`` whether or not the body was ever iterated (a client gone before the first
    byte), which a generator's ``finally`` alone would miss."""

    def __init__(self, body: Iterator[str], release: Callable[[], None]) -> None:
        self.body = body
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[str]:
        return self.body

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if self._release is not None:
                release, self._release = self._release, None
                release()


def _too_many(message: str) -> ApiError:
    return ApiError(
        "too_many_streams", 429, message, headers={"Retry-After": str(STREAM_RETRY_AFTER_S)}
    )


def _take_slots(user_id: int, max_s: float) -> Callable[[], None]:
    """Take a process slot and a user slot, or raise 429; returns the release."""
    config = current_app.config
    slots = process_slots()
    if not slots.take(int(config["STREAM_MAX_PER_PROCESS"])):
        raise _too_many("This server holds as many live streams as it may; retry later.")
    key, slot = USER_STREAMS_KEY.format(user_id=user_id), uuid.uuid4().hex
    # The release runs when the server closes the body, outside this request's context.
    client = get_redis()
    try:
        lapse_ms = int((max_s + SLOT_MARGIN_S) * 1000)
        cap = int(config["STREAM_MAX_PER_USER"])
        taken = client.eval(_TAKE_SLOT, 1, key, cap, slot, lapse_ms)
    except BaseException:
        slots.give_back()
        raise
    if not taken:
        slots.give_back()
        raise _too_many("You have as many live streams open as allowed; close one first.")

    def release() -> None:
        slots.give_back()
        try:
            client.zrem(key, slot)
        except redis.RedisError:  # the slot lapses by itself
            log.warning("could not release stream slot of user %s", user_id)

    return release


class StreamQuery(Strict):
    home_id: Id
    last_event_id: Annotated[str, Field(max_length=64)] | None = None


def _last_event_id(query: StreamQuery) -> str | None:
    """The id the client saw last (header first), validated; None when it sends none."""
    value = request.headers.get(LAST_EVENT_ID_HEADER) or query.last_event_id
    if not value:
        return None
    try:
        live.parse_id(value.strip())
    except ValueError:
        raise ApiError(
            "invalid_last_event_id",
            422,
            "Last-Event-ID must be an id this stream sent, like '1718000000000-0'.",
        ) from None
    return value.strip()


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    # json.dumps never emits a raw newline, so one data: line always holds the payload.
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_body(
    redis_url: str,
    home_id: int,
    after: str,
    gap_after: str | None,
    keepalive_s: float,
    max_s: float,
    still_allowed: Callable[[], bool] = lambda: True,
) -> Iterator[str]:
    """The response body: retry, maybe a gap, then entries and keepalives until ``max_s``,
    or until ``still_allowed``, asked every ``keepalive_s``, says no.

    Entries come after ``after``; ``gap_after`` is the id the client sent when the log can no
    longer be continued from it (None otherwise).

    The Redis connection is opened only once the body is being sent, and closed in ``finally``,
    which also runs when the server closes the generator after the client went away.
    """
    yield f"retry: {RETRY_MS}\n\n"
    if gap_after is not None:
        yield _sse("gap", {"last_event_id": gap_after})
    deadline = time.monotonic() + max_s
    next_check = time.monotonic() + keepalive_s
    client: redis.Redis | None = None
    try:
        # Its own connection: a blocking XREAD would hold a shared pool's one for seconds.
        client = redis_client(
            redis_url,
            socket_timeout=keepalive_s + SOCKET_MARGIN_S,
            single_connection_client=True,
            client_name="vigil-stream",
        )
        while (remaining := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(min(keepalive_s, remaining) * 1000))
            entries = live.read(client, home_id, after, block_ms, READ_COUNT)
            for entry_id, kind, data in entries:
                yield _sse(kind, data, entry_id)
                after = entry_id
            if not entries:
                yield ": keepalive\n\n"
            if time.monotonic() >= next_check:
                if not still_allowed():
                    return
                next_check = time.monotonic() + keepalive_s
    except redis.RedisError as exc:
        # Headers are gone: end the body; the client reconnects and meets a 503 if still down.
        log.warning("live stream of home %s ended by Redis: %r", home_id, exc)
    finally:
        if client is not None:
            client.close()


def _still_member(pool: ConnectionPool, user_id: int, home_id: int) -> Callable[[], bool]:
    """Whether the caller still may read the home's whole log (a member without a camera
    list); no answer from PostgreSQL ends the stream too, and its reconnect meets a 503."""

    def check() -> bool:
        try:
            with pool.connection() as conn:
                sees_all = (
                    conn.cursor(row_factory=scalar_row)
                    .execute(
                        "SELECT cameras IS NULL FROM home_members"
                        " WHERE home_id = %s AND user_id = %s",
                        (home_id, user_id),
                    )
                    .fetchone()
                )
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("live stream of home %s: membership not checked: %r", home_id, exc)
            return False
        return bool(sees_all)

    return check


@bp.get("")
@jwt_required()
def stream_route() -> Response:
    query = StreamQuery.model_validate(query_args())
    last_id = _last_event_id(query)
    user_id = current_user_id()
    with get_pool().connection() as conn:
        home = member_home(conn, user_id, query.home_id)
    if home.cameras is not None:
        # The live log speaks of every camera; a member limited to some reads the history.
        raise ApiError(
            "camera_list_stream",
            403,
            "The live stream covers every camera of the home; with a camera list, read"
            " GET /events instead.",
        )
    config = current_app.config
    max_s = float(config["STREAM_MAX_S"])
    release = _take_slots(user_id, max_s)
    try:
        # Pinned before the response starts, so an entry added from now on is never missed.
        after, gap = live.resume_point(get_redis(), query.home_id, last_id)
        body = sse_body(
            config["REDIS_URL"],
            query.home_id,
            after,
            last_id if gap else None,
            float(config["STREAM_KEEPALIVE_S"]),
            max_s,
            _still_member(get_pool(), user_id, query.home_id),
        )
    except BaseException:
        release()
        raise
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer
    held: Iterable[str] = _Held(body, release)
    return Response(held, mimetype="text/event-stream", headers=headers)
