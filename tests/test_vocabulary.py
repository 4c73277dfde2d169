"""The domain's words: every CHECK constraint that lists a column's values matches its enum."""

from __future__ import annotations

import re
from enum import StrEnum

import pytest

from vigil import vocabulary

pytestmark = pytest.mark.integration

COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("events", "status"): vocabulary.EventStatus,
    ("events", "digest"): vocabulary.DecisionKind,
    ("homes", "tier"): vocabulary.Tier,
    ("homes", "arm_mode"): vocabulary.ArmMode,
    ("devices", "kind"): vocabulary.DeviceKind,
    ("devices", "platform"): vocabulary.Platform,
    ("notifications", "kind"): vocabulary.NotificationKind,
    ("deliveries", "status"): vocabulary.DeliveryStatus,
    ("sessions", "revoked_reason"): vocabulary.RevokedReason,
    ("home_members", "role"): vocabulary.Role,
    ("invitations", "role"): vocabulary.Role,
    ("audit", "action"): vocabulary.AuditAction,
    ("escalations", "stopped_reason"): vocabulary.EscalationStop,
    ("zones", "kind"): vocabulary.ZoneKind,
    ("snoozes", "label"): vocabulary.PresenceGroup,
    ("deliveries", "action_taken"): vocabulary.PushAction,
    ("deletion_jobs", "kind"): vocabulary.DeletionKind,
    ("deletion_jobs", "state"): vocabulary.JobState,
}

CHECKS = """
SELECT c.conrelid::regclass::text AS table_name, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
JOIN pg_class t ON t.oid = c.conrelid
WHERE c.contype = 'c' AND n.nspname = 'public'
  AND NOT t.relispartition  -- a partition's checks are its table's
"""
# PostgreSQL writes `col IN ('a', 'b')` back as `(col = ANY (ARRAY['a'::text, 'b'::text]))`.
VALUE_LIST = re.compile(r"\(+(\w+)\s*=\s*ANY\s*\(+ARRAY\[([^\]]*)\]")
LITERAL = re.compile(r"'([^']*)'::text")


def value_lists(db) -> dict[tuple[str, str], set[str]]:
    with db.connection() as conn:
        rows = conn.execute(CHECKS).fetchall()
    found: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        for column, values in VALUE_LIST.findall(row["definition"]):
            found[(row["table_name"], column)] = set(LITERAL.findall(values))
    return found


def test_every_listed_value_check_is_an_enum_of_the_vocabulary(db):
    found = value_lists(db)
    assert set(found) == set(COLUMNS), "a CHECK lists values no enum names (or one was dropped)"
    for column, values in found.items():
        assert values == {m.value for m in COLUMNS[column]}, column


def test_a_value_outside_the_enum_is_refused_by_the_database(db):
    import psycopg

    with db.connection() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO users (email, password_hash) VALUES ('a@b.c', 'x') RETURNING id")
        conn.execute(
            "INSERT INTO homes (owner_id, name, tier) SELECT id, 'Home', %s FROM users",
            ("platinum",),
        )
