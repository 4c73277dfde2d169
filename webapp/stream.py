"""``GET /stream?home_id=N``: a home's live log as server-sent events, resumable.

Each SSE event is one entry of ``notify.live``: ``id:`` the entry id, ``event:`` its kind,
``data:`` its JSON. A client that reconnects sends the last id it saw (``Last-Event-ID``
header, or ``last_event_id`` in the query for clients that cannot set headers; the header
wins, since EventSource updates it on every reconnect) and gets exactly what it missed. When
the log no longer reaches back that far, an ``event: gap`` comes first and the whole log
follows: the client must refetch through the REST API.

The response ends after ``STREAM_MAX_S`` (default 300 s): proxies and gunicorn threads are
recycled, and the token is checked again on the reconnect. ``: keepalive`` comments go out
after ``STREAM_KEEPALIVE_S`` of silence, which is also how a vanished client is noticed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Annotated, Any

import redis
from flask import Blueprint, Response, current_app, request
from flask_jwt_extended import jwt_required
from pydantic import Field

from notify import live
from webapp.access import owned_home
from webapp.clients import get_pool, get_redis, redis_client
from webapp.errors import ApiError
from webapp.requests import query_args
from webapp.schemas import Id, Strict
from webapp.tokens import current_user_id

bp = Blueprint("stream", __name__, url_prefix="/stream")
log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_S = 15.0
RETRY_MS = 2000
READ_COUNT = 100
# The blocking XREAD waits at most the keepalive; the socket must outlast it by a margin.
SOCKET_MARGIN_S = 5.0
LAST_EVENT_ID_HEADER = "Last-Event-ID"


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
) -> Iterator[str]:
    """The response body: retry, maybe a gap, then entries and keepalives until ``max_s``.

    Entries come after ``after``; ``gap_after`` is the id the client sent when the log can no
    longer be continued from it (None otherwise).

    The Redis connection is opened only once the body is being sent, and closed in ``finally``,
    which also runs when the server closes the generator after the client went away.
    """
    yield f"retry: {RETRY_MS}\n\n"
    if gap_after is not None:
        yield _sse("gap", {"last_event_id": gap_after})
    deadline = time.monotonic() + max_s
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
    except redis.RedisError as exc:
        # Headers are gone: end the body; the client reconnects and meets a 503 if still down.
        log.warning("live stream of home %s ended by Redis: %r", home_id, exc)
    finally:
        if client is not None:
            client.close()


@bp.get("")
@jwt_required()
def stream_route():
    query = StreamQuery.model_validate(query_args())
    last_id = _last_event_id(query)
    with get_pool().connection() as conn:
        owned_home(conn, current_user_id(), query.home_id)
    # Pinned before the response starts, so an entry added from now on is never missed.
    after, gap = live.resume_point(get_redis(), query.home_id, last_id)
    config = current_app.config
    body = sse_body(
        config["REDIS_URL"],
        query.home_id,
        after,
        last_id if gap else None,
        float(config.get("STREAM_KEEPALIVE_S", DEFAULT_KEEPALIVE_S)),
        float(config["STREAM_MAX_S"]),
    )
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer
    return Response(body, mimetype="text/event-stream", headers=headers)
