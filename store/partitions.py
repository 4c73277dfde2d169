"""Monthly partitions of ``events`` and ``detections``: made ahead of time, dropped whole
once every plan has let go of them (``docs/storage.md``, "Partitioning").

Both tables are range-partitioned by their event's ``created_at`` (``detections`` by
``event_created_at``), with the same bounds and the same names: ``events_2027_01`` and
``detections_2027_01`` hold January 2027 (UTC). The first partition of each, named
``events_before_<month>``, is the table as it stood before partitioning and holds every
time before that month.

``ensure_partitions`` creates the months up to ``MONTHS_AHEAD`` months past the current
one; ``python -m store.migrate`` runs it after the migrations, the maintenance beat every
hour. An event whose month has no partition could not be stored, so ``/health`` says
degraded when fewer than ``MIN_MONTHS_AHEAD`` months lie ahead in either table.

``drop_expired_partitions`` drops the months that ended more than the longest retention
(plus ``DROP_GRACE``) ago. Row-by-row retention (``store.retention``) has deleted nearly
all of their rows by then; what is left goes without a DELETE per row:

1. the month's alerts (with their deliveries and escalations) and idempotency claims are
   deleted in bounded batches: they live in unpartitioned tables that name the events;
2. the month's ``detections`` partition is dropped;
3. the month's ``events`` partition is marked (a comment) and detached ``CONCURRENTLY``:
   its rows leave every query; then the blob keys its rows name are queued in
   ``blob_garbage``, in batches, and it is dropped.

Each step is safe to repeat, and a run killed between any two of them is finished by the
next one: a detach left pending is finalised, and a marked month detached but still on
disk is queued and dropped. One run at a time (a session advisory lock); a second one at
once returns at once.

Locks others wait on, each for an instant: dropping the detections month locks the
detections table; the detach holds SHARE on the tables that name events while it checks
that none names the month, and SHARE ROW EXCLUSIVE on homes and devices at its end;
dropping the detached month locks homes and devices (their foreign keys' triggers go with
it). Queries on those tables wait behind such a statement while it waits for its turn, so
each waits at most ``LOCK_TIMEOUT_MS`` for its locks, and is tried again a little later
if it did not get them; after ``LOCK_ATTEMPTS``, the next run goes on. ``max_lock_ms``
reports the longest statement of a run, waits included: the longest anyone could have
waited behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from store.purge import queue_keys_of

log = logging.getLogger(__name__)
T = TypeVar("T")

# The tables partitioned by month. ``events`` first: its months are the ones made and
# dropped; ``detections`` follows with the same bounds.
EVENTS, DETECTIONS = "events", "detections"
PARTITIONED = (EVENTS, DETECTIONS)

MONTHS_AHEAD = 3
MIN_MONTHS_AHEAD = 1  # /health: fewer months made ahead than this is degraded
# A month is dropped this long after the longest retention has let go of its last day.
DROP_GRACE = timedelta(days=7)
# A DDL statement waits at most this long for its lock (others queue behind it meanwhile),
# then is tried again after LOCK_RETRY_S, LOCK_ATTEMPTS times in all; then the next run.
LOCK_TIMEOUT_MS = 100
LOCK_RETRY_S = 0.5
LOCK_ATTEMPTS = 5
BATCH = 1000

# The comment on a month of events that is being dropped: only such a detached table is
# dropped by a later run.
EXPIRED_MARK = "vigil: an expired month, being dropped (store.partitions)"
# Not a key of any other lock the code takes (store.migrate uses "VIGIL\0").
ADVISORY_LOCK_KEY = 0x5649_4749_4C01


def month_start(moment: datetime, months: int = 0) -> datetime:
    """The first instant (UTC) of ``moment``'s month, ``months`` months later."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(parent: str, month: datetime) -> str:
    return f"{parent}_{month:%Y_%m}"


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None  # None: MINVALUE
    upper: datetime
    detach_pending: bool = False


# A range partition's bounds, read back by PostgreSQL itself, as Unix times: the text of
# pg_get_expr follows the session's TimeZone, and with DateStyle ISO (which psycopg needs to
# read any timestamp) it carries a numeric offset, so the cast is exact in every zone.
_PARTITIONS = """
SELECT c.relname AS name, i.inhdetachpending AS pending,
       extract(epoch FROM nullif(b.bound[1], 'MINVALUE')::timestamptz)::float8 AS lower,
       extract(epoch FROM nullif(b.bound[2], 'MAXVALUE')::timestamptz)::float8 AS upper
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(
    pg_get_expr(c.relpartbound, c.oid),
    '^FOR VALUES FROM \\(''?(MINVALUE|[^'']*)''?\\) TO \\(''?(MAXVALUE|[^'']*)''?\\)$'
) AS b(bound)
WHERE i.inhparent = to_regclass(%s)
"""


def partitions(conn: psycopg.Connection[Any], parent: str) -> list[Partition]:
    """``parent``'s partitions, oldest first."""
    rows = conn.cursor(row_factory=dict_row).execute(_PARTITIONS, (parent,)).fetchall()
    found = []
    for row in rows:
        if row["upper"] is None:
            raise ValueError(f"{row['name']}: not a range partition with an upper bound")
        lower = None if row["lower"] is None else datetime.fromtimestamp(row["lower"], UTC)
        upper = datetime.fromtimestamp(row["upper"], UTC)
        found.append(Partition(row["name"], lower, upper, row["pending"]))
    return sorted(found, key=lambda p: p.upper)


def covered_until(conn: psycopg.Connection[Any]) -> datetime | None:
    """The end of the last month both tables can store (None: one has no partition)."""
    ends = []
    for parent in PARTITIONED:
        made = partitions(conn, parent)
        if not made:
            return None
        ends.append(made[-1].upper)
    return min(ends)


def months_ahead(conn: psycopg.Connection[Any], now: datetime | None = None) -> int:
    """Whole months made ahead of the current one, in both tables (0: only this month can
    be stored; -1: not even this one)."""
    until = covered_until(conn)
    current = month_start(now or datetime.now(UTC))
    if until is None or until <= current:
        return -1
    n = 0
    while month_start(current, n + 2) <= until:
        n += 1
    return n


@contextlib.contextmanager
def ddl_connection(
    conninfo: str, lock_timeout_ms: int = LOCK_TIMEOUT_MS
) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A connection of its own in autocommit mode (``DETACH ... CONCURRENTLY`` runs in no
    transaction block) whose statements wait at most ``lock_timeout_ms`` for a lock. Its
    session's advisory locks go with it."""
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{lock_timeout_ms}ms",))
        yield conn


def ensure_partitions(
    conn: psycopg.Connection[Any], ahead: int = MONTHS_AHEAD, now: datetime | None = None
) -> list[str]:
    """Create every month missing after the last partition, up to ``ahead`` months past
    the current one, for both tables; the names created. Waits for a concurrent call."""
    target = month_start(now or datetime.now(UTC), ahead + 1)
    created = []
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY + 1,))
    try:
        for parent in PARTITIONED:
            made = partitions(conn, parent)
            start = made[-1].upper if made else month_start(now or datetime.now(UTC))
            while start < target:
                end = month_start(start, 1)
                name = partition_name(parent, start)
                conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(name),
                        sql.Identifier(parent),
                        sql.Literal(start),
                        sql.Literal(end),
                    )
                )
                created.append(name)
                start = end
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY + 1,))
    if created:
        log.info("partitions created: %s", ", ".join(created))
    return created


@dataclass(frozen=True)
class Dropped:
    months: tuple[str, ...] = ()  # the events partitions dropped, oldest first
    events: int = 0  # rows they still held
    blobs_queued: int = 0
    rows_deleted: int = 0  # alerts and idempotency keys deleted before their month went
    max_lock_ms: float = 0.0  # the longest statement, waits included (module docstring)
    skipped: bool = False  # another run was at it
    stopped: str | None = None  # why the run stopped before the last expired month


class _Run:
    """The run's figures, and its statements, each timed."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        self.conn = conn
        self.months: list[str] = []
        self.events = self.blobs_queued = self.rows_deleted = 0
        self.max_ms = 0.0

    def execute(
        self,
        statement: sql.SQL | sql.Composed,
        params: dict[str, Any] | None = None,
        *,
        blocking: bool = True,
    ) -> Any:
        """Run one statement, timed unless it holds no lock that stops readers or writers
        (``blocking=False``); its first row (None if it answers none)."""
        started = time.monotonic()
        try:
            cur = self.conn.execute(statement, params)
            return cur.fetchone() if cur.description else None
        finally:
            if blocking:
                self.max_ms = max(self.max_ms, (time.monotonic() - started) * 1000.0)

    def with_lock_retries(self, step: Callable[[], T]) -> T:
        """``step``, tried again while its locks are not to be had within the timeout."""
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                return step()
            except psycopg.errors.LockNotAvailable:
                if attempt == LOCK_ATTEMPTS:
                    raise
                time.sleep(LOCK_RETRY_S)
        raise AssertionError("unreachable")

    def report(self, stopped: str | None = None) -> Dropped:
        return Dropped(
            tuple(self.months),
            self.events,
            self.blobs_queued,
            self.rows_deleted,
            self.max_ms,
            stopped=stopped,
        )


def drop_expired_partitions(
    conn: psycopg.Connection[dict[str, Any]],
    keep_days: int,
    now: datetime | None = None,
    batch: int = BATCH,
) -> Dropped:
    """Drop the months of ``events`` and ``detections`` that ended more than ``keep_days``
    (the longest retention) plus ``DROP_GRACE`` ago. ``conn``: a ``ddl_connection``."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days) - DROP_GRACE
    locked = conn.execute(
        "SELECT pg_try_advisory_lock(%s) AS locked", (ADVISORY_LOCK_KEY,)
    ).fetchone()
    if not (locked and locked["locked"]):
        return Dropped(skipped=True)
    run = _Run(conn)
    try:
        _finish_detached(run, batch)
        for month in partitions(conn, EVENTS):
            if month.upper > cutoff:
                break
            _drop_month(run, month, batch)
        if run.months:
            # Autovacuum analyses partitions, never their parents, whose statistics the
            # planner uses for joins over all months: refreshed when the months change.
            for parent in PARTITIONED:
                run.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(parent)), blocking=False)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.ForeignKeyViolation) as exc:
        log.warning("dropping expired partitions stopped, the next run goes on: %s", exc)
        return run.report(stopped=type(exc).__name__)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return run.report()


def _twin(events_partition: str) -> str:
    """The ``detections`` partition with the same bounds as ``events_partition``."""
    return DETECTIONS + events_partition[len(EVENTS) :]


# Rows of unpartitioned tables naming the month's events, deleted before the month can be
# detached (their foreign keys refuse it otherwise); deliveries and escalations go by
# theirs. Batched: each statement is its own short transaction.
_DELETE_NAMING = {
    "notifications": """
        WITH doomed AS (
            SELECT id FROM notifications
            WHERE event_id IS NOT NULL AND event_created_at < %(upper)s
            LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
        , gone AS (DELETE FROM notifications n USING doomed WHERE n.id = doomed.id RETURNING 1)
        SELECT count(*) AS n FROM gone
    """,
    "event_requests": """
        WITH doomed AS (
            SELECT device_id, idempotency_key FROM event_requests
            WHERE event_created_at < %(upper)s
            LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
        , gone AS (
            DELETE FROM event_requests r USING doomed
            WHERE r.device_id = doomed.device_id AND r.idempotency_key = doomed.idempotency_key
            RETURNING 1)
        SELECT count(*) AS n FROM gone
    """,
}


def _drop_month(run: _Run, month: Partition, batch: int) -> None:
    for statement in _DELETE_NAMING.values():
        while True:
            row = run.execute(sql.SQL(statement), {"upper": month.upper, "batch": batch})
            n = int(row["n"])
            run.rows_deleted += n
            if n < batch:
                break
    # Detections first: their rows name the month's events. Dropped while attached, which
    # locks the detections table for the drop alone; detached first, its foreign key would
    # turn into triggers on events, and dropping those locks events instead.
    twin = _twin(month.name)
    if twin in {p.name for p in partitions(run.conn, DETECTIONS)}:
        run.with_lock_retries(
            lambda: run.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(twin)))
        )
    _detach(run, month)
    _queue_and_drop(run, month.name, batch)


def _detach(run: _Run, month: Partition) -> None:
    """Detach a month of events ``CONCURRENTLY``, or finish a detach left half-done.

    Not free of locks others wait on: while it checks that no row still names the month it
    holds SHARE on the tables that name events (alerts, claims, detections: their writers
    wait), and at its end SHARE ROW EXCLUSIVE on homes and devices (the foreign keys of the
    month become its own). In between it waits for every transaction that may still see
    the month; nobody waits for that. Under ``lock_timeout``, and tried again: a try that
    gave up in that wait leaves the detach pending, and the next one finalises it.
    """

    def attempt() -> None:
        pending = _detach_pending(run.conn, month.name)
        if pending is None:  # an earlier try finished it
            return
        how = "FINALIZE" if pending else "CONCURRENTLY"
        run.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {} " + how).format(
                sql.Identifier(EVENTS), sql.Identifier(month.name)
            )
        )

    # Marked first: a month detached by someone else (to archive it) is never dropped.
    run.with_lock_retries(
        lambda: run.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                sql.Identifier(month.name), sql.Literal(EXPIRED_MARK)
            )
        )
    )
    run.with_lock_retries(attempt)


def _detach_pending(conn: psycopg.Connection[Any], name: str) -> bool | None:
    """Whether the partition's detach is pending; None if it is no partition any more."""
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT i.inhdetachpending AS pending FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE c.relname = %s AND c.relnamespace = 'public'::regnamespace",
            (name,),
        )
        .fetchone()
    )
    return None if row is None else bool(row["pending"])


# A batch of a detached month's events: the blob keys they name, queued for the collector
# (which deletes those no event names: a detached month is in no query of events any more).
_QUEUE_KEYS = (
    """
WITH chunk AS (
    SELECT id, image_key, snapshot_key FROM {t} WHERE id > %(after)s ORDER BY id LIMIT %(batch)s
), """
    + queue_keys_of("chunk")
    + """
SELECT (SELECT max(id) FROM chunk) AS last, (SELECT count(*) FROM chunk) AS events,
       (SELECT count(*) FROM queued) AS queued
"""
)


def _queue_and_drop(run: _Run, table: str, batch: int) -> None:
    """Queue the blob keys a detached month of events names, batch by batch (each its own
    short transaction; a killed run queues them again, which changes nothing), then drop
    it. The drop locks homes and devices for an instant: their foreign keys' triggers go
    with it."""
    name = sql.Identifier(table)
    after, events = 0, 0
    while True:
        row = run.execute(sql.SQL(_QUEUE_KEYS).format(t=name), {"after": after, "batch": batch})
        events += int(row["events"])
        run.blobs_queued += int(row["queued"])
        if row["events"] < batch:
            break
        after = int(row["last"])
    run.with_lock_retries(lambda: run.execute(sql.SQL("DROP TABLE {}").format(name)))
    run.events += events
    run.months.append(table)


def _finish_detached(run: _Run, batch: int) -> None:
    """Drop the months a run killed after their detach left on disk (marked by this module
    before their detach: a table someone else detached stays)."""
    rows = run.conn.execute(
        """
        SELECT relname FROM pg_class
        WHERE relkind = 'r' AND NOT relispartition
          AND relnamespace = 'public'::regnamespace
          AND obj_description(oid, 'pg_class') = %s
        ORDER BY relname LIKE 'events%%', relname
        """,
        (EXPIRED_MARK,),
    ).fetchall()
    for row in rows:
        name = row["relname"]
        if name.startswith(DETECTIONS):
            run.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        else:
            _queue_and_drop(run, name, batch)


@dataclass(frozen=True)
class Maintained:
    created: tuple[str, ...]
    dropped: Dropped
    months_ahead: int

    def as_json(self) -> dict[str, Any]:
        return {
            "created": list(self.created),
            "dropped": list(self.dropped.months),
            "events": self.dropped.events,
            "blobs_queued": self.dropped.blobs_queued,
            "rows_deleted": self.dropped.rows_deleted,
            "max_lock_ms": round(self.dropped.max_lock_ms, 1),
            "months_ahead": self.months_ahead,
            "skipped": self.dropped.skipped,
            "stopped": self.dropped.stopped,
        }


def maintain(
    conn: psycopg.Connection[dict[str, Any]], keep_days: int, now: datetime | None = None
) -> Maintained:
    """Make the months ahead, then drop the expired ones. ``conn``: a ``ddl_connection``."""
    try:
        created = ensure_partitions(conn, now=now)
    except psycopg.errors.LockNotAvailable as exc:  # months of slack: the next run makes them
        log.warning("partitions not made ahead this time: %s", exc)
        created = []
    dropped = drop_expired_partitions(conn, keep_days, now)
    return Maintained(tuple(created), dropped, months_ahead(conn, now))


def main(argv: list[str] | None = None) -> int:
    """``python -m store.partitions``: what the hourly beat task does, once, now."""
    from store.retention import tier_days
    from vigil.settings import current

    parser = argparse.ArgumentParser(prog="python -m store.partitions", description=main.__doc__)
    parser.add_argument(
        "--keep-days",
        type=int,
        help="the longest retention, in days (default: the longest RETENTION_DAYS_*)",
    )
    parser.add_argument("--lock-timeout-ms", type=int, default=LOCK_TIMEOUT_MS)
    args = parser.parse_args(argv)
    settings = current()
    if not settings.database_url:
        parser.error("DATABASE_URL must be set")
    keep_days = max(tier_days(settings).values()) if args.keep_days is None else args.keep_days
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with ddl_connection(settings.database_url, args.lock_timeout_ms) as conn:
        done = maintain(conn, keep_days)
    print(json.dumps(done.as_json()), flush=True)
    return 0 if done.dropped.stopped is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
