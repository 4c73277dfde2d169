"""Snoozes: a member asks for no alert from the whole home, one camera, or one camera and
presence group, until a time (``snoozes``). Life-safety alerts pass a snooze, as they pass
every preference; summaries speak of the whole home and are left alone; an expired snooze
means nothing and the beat prunes it (``prune_expired``).

**What a snooze covers.** An alert is about one camera (its event's) and names presence
groups (its labels). A member's active snoozes cover it when one of them is home-wide, or
of that camera with no label, or when the member's snoozes of that camera with a label
name *every* group the alert names: a snooze of ``vehicle`` on the driveway camera covers
an alert of a vehicle there, not one of a person and a vehicle, nor a fail-safe alert that
names only ``motion`` (what moved is unknown). ``covers_sql`` is this rule in SQL, shared
by ``everyone_snoozed`` (the digest's "snoozed" decision: nobody would hear of it) and
``notify.recipients`` (who hears of an alert).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg_pool import ConnectionPool

from store.db import transaction
from vigil.vocabulary import PresenceGroup

# An expired snooze is kept this long before the beat prunes it: a snooze being read as it
# expires is still there to read.
PRUNE_MARGIN_S = 60
PRUNE_LIMIT = 1000  # rows a run deletes at most; the next run takes the rest


@dataclass(frozen=True)
class Snooze:
    """A member's active snooze (``snoozes``); ``device_id`` None: the whole home,
    ``label`` None: every presence group."""

    id: int
    home_id: int
    user_id: int
    device_id: int | None
    label: PresenceGroup | None
    until: dt.datetime
    created_at: dt.datetime

    def __post_init__(self) -> None:
        # class_row passes the column's text; the field holds the vocabulary's member.
        if self.label is not None:
            object.__setattr__(self, "label", PresenceGroup(self.label))


SNOOZE_COLUMNS = "id, home_id, user_id, device_id, label, until, created_at"


def covers_sql(home: str, user: str, camera: str, labels: str) -> str:
    """SQL: true when member ``user`` of ``home`` has active snoozes that cover an alert
    of ``camera`` naming ``labels`` (a text[]), by the rule of the module's docstring.
    The arguments are SQL expressions."""
    return f"""EXISTS (
        SELECT FROM snoozes s
        WHERE s.home_id = {home} AND s.user_id = {user} AND s.until > now()
          AND (s.device_id IS NULL OR s.device_id = {camera})
        HAVING bool_or(s.device_id IS NULL OR s.label IS NULL)
            OR (cardinality({labels}) > 0
                AND {labels} <@ array_agg(s.label) FILTER (WHERE s.label IS NOT NULL))
    )"""


# Active snoozes a member may hold in one home: every alert's audience reads them.
MAX_ACTIVE_SNOOZES = 32


class TooManySnoozes(Exception):
    """The member holds ``MAX_ACTIVE_SNOOZES`` active snoozes in the home already."""


def add_snooze(
    conn: psycopg.Connection[Any],
    home_id: int,
    user_id: int,
    until: dt.datetime,
    *,
    device_id: int | None = None,
    label: PresenceGroup | None = None,
) -> int:
    """A new snooze of ``user_id`` in ``home_id``; its id. ``TooManySnoozes`` at the cap,
    whichever way it is asked (the API, a push action): the member's row is locked, so two
    snoozes at once take turns for the last place."""
    (active,) = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "WITH member AS (SELECT 1 FROM home_members WHERE home_id = %(home)s"
            " AND user_id = %(user)s FOR NO KEY UPDATE)"
            " SELECT count(*) FROM snoozes, member"
            " WHERE home_id = %(home)s AND user_id = %(user)s AND until > now()",
            {"home": home_id, "user": user_id},
        )
        .fetchall()
    )
    if active >= MAX_ACTIVE_SNOOZES:
        raise TooManySnoozes(f"member {user_id} holds {active} snoozes in home {home_id}")
    (snooze_id,) = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "INSERT INTO snoozes (home_id, user_id, device_id, label, until)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (home_id, user_id, device_id, label, until),
        )
        .fetchall()
    )
    return int(snooze_id)


def active_snoozes(conn: psycopg.Connection[Any], home_id: int, user_id: int) -> list[Snooze]:
    """The member's snoozes in the home that have not ended, ending soonest first."""
    return (
        conn.cursor(row_factory=class_row(Snooze))
        .execute(
            f"SELECT {SNOOZE_COLUMNS} FROM snoozes"
            " WHERE home_id = %s AND user_id = %s AND until > now() ORDER BY until, id",
            (home_id, user_id),
        )
        .fetchall()
    )


# Whether every member of %(home_id)s who may see camera %(device_id)s has snoozes that
# cover an alert of it naming %(groups)s; false when nobody may see it.
_MEMBER_COVERED = covers_sql("m.home_id", "m.user_id", "%(device_id)s", "%(groups)s::text[]")
_EVERYONE_SNOOZED = f"""
SELECT coalesce(bool_and({_MEMBER_COVERED}), false)
FROM home_members m
WHERE m.home_id = %(home_id)s AND (m.cameras IS NULL OR %(device_id)s = ANY(m.cameras))
"""


def everyone_snoozed(
    conn: psycopg.Connection[Any],
    home_id: int,
    device_id: int,
    groups: Collection[PresenceGroup],
) -> bool:
    """Whether every member of the home who may see camera ``device_id``
    (``home_members.cameras`` NULL or naming it) has snoozes covering an alert of it that
    names ``groups``: then nobody would hear of it. False for a camera nobody may see."""
    params = {"home_id": home_id, "device_id": device_id, "groups": [str(g) for g in groups]}
    (covered,) = conn.cursor(row_factory=scalar_row).execute(_EVERYONE_SNOOZED, params).fetchall()
    return bool(covered)


_PRUNE = """
DELETE FROM snoozes WHERE id IN (
    SELECT id FROM snoozes
    WHERE until < now() - make_interval(secs => %(margin_s)s)
    ORDER BY until LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""


def prune_expired(
    target: psycopg.Connection[Any] | ConnectionPool, limit: int = PRUNE_LIMIT
) -> int:
    """Delete snoozes that ended over ``PRUNE_MARGIN_S`` ago, at most ``limit`` of them
    (on ``target``: a connection, in its transaction, or a pool, in a transaction of its
    own); how many were deleted."""
    params = {"margin_s": PRUNE_MARGIN_S, "limit": limit}
    if isinstance(target, ConnectionPool):
        with transaction(target) as conn:
            return conn.execute(_PRUNE, params).rowcount
    return target.execute(_PRUNE, params).rowcount
