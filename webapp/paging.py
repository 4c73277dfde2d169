"""Cursor pagination over a user's rows, newest first: one helper for every list route.

The cursor is the (created_at, id) of the last row of a page, so pages stay stable while
new rows arrive.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg.rows import class_row

from webapp.access import MEMBER_JOIN, member_home, sees_camera
from webapp.errors import ApiError
from webapp.schemas import PageQuery


class Paged(Protocol):
    """A row a page can end with: the cursor is its (created_at, id)."""

    @property
    def id(self) -> int: ...

    @property
    def created_at(self) -> dt.datetime: ...


R = TypeVar("R", bound=Paged)


def encode_cursor(created_at: dt.datetime, event_id: int) -> str:
    raw = json.dumps([created_at.isoformat(), event_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, event_id = json.loads(raw)
        when = dt.datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(event_id, int):
            raise ValueError("bad cursor fields")
        return when, event_id
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ApiError(
            "invalid_cursor", 400, "The cursor is invalid; use next_cursor as given."
        ) from None


def member_page(
    conn: psycopg.Connection[Any],
    user_id: int,
    query: PageQuery,
    *,
    row: type[R],
    select: str,
    alias: str,
    camera: str,
    filters: Sequence[tuple[str, str]] = (),
) -> tuple[list[R], str | None]:
    """One page of ``select`` (rows of ``alias`` with a ``home_id``) from the homes the
    caller is a member of, as ``row``s, and the next cursor.

    ``camera`` is the SQL of each row's camera (device id): a member with a camera list
    sees only those cameras' rows. Every page takes the ``PageQuery`` filters (home, time
    range); ``filters`` adds the list's own, each a ``query`` attribute with its SQL clause,
    applied when it is set. A ``home_id`` the caller is no member of is a 404, checked only
    when the page is empty (such a home can only give an empty page), so a normal page
    costs one query.
    """
    common = (
        ("home_id", f"{alias}.home_id = %(home_id)s"),
        ("since", f"{alias}.created_at >= %(since)s"),
        ("until", f"{alias}.created_at < %(until)s"),
    )
    where = [sees_camera(camera)]
    params: dict[str, Any] = {"user_id": user_id, "limit": query.limit + 1}
    for name, clause in (*common, *filters):
        value = getattr(query, name)
        if value is not None:
            where.append(clause)
            params[name] = value
    if query.cursor is not None:
        params["after_at"], params["after_id"] = decode_cursor(query.cursor)
        where.append(f"({alias}.created_at, {alias}.id) < (%(after_at)s, %(after_id)s)")
    member = MEMBER_JOIN.format(home=f"{alias}.home_id")
    rows = (
        conn.cursor(row_factory=class_row(row))
        .execute(
            f"{select} {member} WHERE {' AND '.join(where)} "
            f"ORDER BY {alias}.created_at DESC, {alias}.id DESC LIMIT %(limit)s",
            params,
        )
        .fetchall()
    )
    if not rows and query.home_id is not None:
        member_home(conn, user_id, query.home_id)
    if len(rows) <= query.limit:
        return rows, None
    rows = rows[: query.limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
