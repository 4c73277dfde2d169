"""Creating an account: a user and their first home, in one transaction (the operators'
``flask users create`` / ``vigil users create`` and, when enabled, ``POST /auth/register``)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import scalar_row
from werkzeug.security import generate_password_hash

from store.db import transaction
from vigil.vocabulary import Tier
from webapp.clients import get_pool


def hash_password(password: str) -> str:
    """werkzeug's default: scrypt with a random salt."""
    return generate_password_hash(password)


def _returned_id(conn: psycopg.Connection[Any], insert: str, params: tuple[Any, ...]) -> int:
    """The id an ``INSERT ... RETURNING id`` gave its row."""
    (new_id,) = conn.cursor(row_factory=scalar_row).execute(insert, params).fetchall()
    return int(new_id)


def create_user(email: str, password: str, home: str, tier: Tier, timezone: str) -> tuple[int, int]:
    """Insert a user and their first home; returns (user_id, home_id). A taken email
    raises psycopg's UniqueViolation and writes nothing."""
    with transaction(get_pool()) as conn:
        user_id = _returned_id(
            conn,
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id",
            (email, hash_password(password)),
        )
        home_id = _returned_id(
            conn,
            "INSERT INTO homes (owner_id, name, tier, timezone) VALUES (%s, %s, %s, %s) "
            "RETURNING id",
            (user_id, home, tier, timezone),
        )
    return user_id, home_id
