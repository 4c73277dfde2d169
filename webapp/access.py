"""Ownership checks: a user reaches only the homes they own and what hangs off them.

Another user's resource answers exactly like a missing one (404), so ids cannot be probed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowFactory, class_row

from vigil.vocabulary import ArmMode, Tier
from webapp.errors import not_found

R = TypeVar("R")


@dataclass(frozen=True)
class HomeRow:
    """A home as its owner sees it (``homes``; the owner is the caller)."""

    id: int
    name: str
    tier: Tier
    arm_mode: ArmMode
    timezone: str
    quiet_hours_start: dt.time | None
    quiet_hours_end: dt.time | None
    created_at: dt.datetime

    def __post_init__(self) -> None:
        # class_row passes the columns' text; the fields hold the vocabulary's members.
        object.__setattr__(self, "tier", Tier(self.tier))
        object.__setattr__(self, "arm_mode", ArmMode(self.arm_mode))


HOME_COLUMNS = ", ".join(f.name for f in dataclasses.fields(HomeRow))


def owned_home(
    conn: psycopg.Connection[Any], user_id: int, home_id: int, *, lock: bool = False
) -> HomeRow:
    """The caller's home ``home_id``; 404 ``home_not_found`` otherwise."""
    query = f"SELECT {HOME_COLUMNS} FROM homes WHERE id = %s AND owner_id = %s"
    if lock:
        query += " FOR UPDATE"
    row = conn.cursor(row_factory=class_row(HomeRow)).execute(query, (home_id, user_id)).fetchone()
    if row is None:
        raise not_found("home")
    return row


def owned_event(
    conn: psycopg.Connection[Any],
    user_id: int,
    event_id: int,
    columns: str,
    row_factory: RowFactory[R],
) -> R:
    """``columns`` (``e.`` prefixed) of the caller's event ``event_id``, as ``row_factory``
    makes them; 404 ``event_not_found`` otherwise."""
    row = (
        conn.cursor(row_factory=row_factory)
        .execute(
            f"SELECT {columns} FROM events e JOIN homes h ON h.id = e.home_id "
            "WHERE e.id = %s AND h.owner_id = %s",
            (event_id, user_id),
        )
        .fetchone()
    )
    if row is None:
        raise not_found("event")
    return row
