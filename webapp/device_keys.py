"""Device keys: made, stored (hashed), issued, rotated, revoked and looked up.

A key reads ``vk_<id>_<secret>``: ``vk_`` tells it from a JWT at a glance, ``<id>`` (16 hex
digits) is public and names its ``device_keys`` row, ``<secret>`` is 256 random bits
(base64url). Only SHA-256 of the whole key is stored; a key of 256 random bits cannot be
guessed, so a fast hash is enough, and a copy of the table does not let anyone post.

A device has at most one live key. Issuing a key revokes the live one in the same
transaction (rotation); revoking or deleting the device ends it. Nothing caches a key's
state: every request with a key reads its row, so a revocation holds from the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row

PREFIX = "vk_"
ID_HEX_DIGITS = 16
SECRET_BYTES = 32
KEY_PATTERN = re.compile(r"^vk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A key as issued: ``key`` is shown to the owner once and never stored."""

    key_id: str
    key: str
    device_id: int
    created_at: dt.datetime
    replaced_key_id: str | None


@dataclass(frozen=True)
class KeyRow:
    """A presented key's row with the device, home and owner it speaks for."""

    key_id: str
    secret_hash: bytes
    revoked: bool
    device_id: int
    device_name: str
    home_id: int
    owner_id: int
    owner_disabled: bool


def make_key() -> tuple[str, str]:
    """A new (key id, key)."""
    key_id = secrets.token_hex(ID_HEX_DIGITS // 2)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key_id(key: str) -> str | None:
    """The id of a well-formed key, or None."""
    match = KEY_PATTERN.match(key)
    return None if match is None else match["id"]


def looks_like_key(token: str) -> bool:
    """A credential meant as a device key (well-formed or not), never a JWT."""
    return token.startswith(PREFIX)


def issue(conn: psycopg.Connection[Any], device_id: int) -> NewKey:
    """A new live key for ``device_id``, revoking the live one (in ``conn``'s transaction,
    with the device row locked by the caller)."""
    key_id, key = make_key()
    cursor = conn.cursor(row_factory=scalar_row)
    # Revoked first: the index allows one live key per device.
    replaced = cursor.execute(
        "UPDATE device_keys SET revoked_at = now() "
        "WHERE device_id = %s AND revoked_at IS NULL RETURNING id",
        (device_id,),
    ).fetchone()
    (created,) = cursor.execute(
        "INSERT INTO device_keys (id, device_id, secret_hash) VALUES (%s, %s, %s) "
        "RETURNING created_at",
        (key_id, device_id, key_hash(key)),
    ).fetchall()
    if replaced is not None:
        cursor.execute("UPDATE device_keys SET replaced_by = %s WHERE id = %s", (key_id, replaced))
    return NewKey(key_id, key, device_id, created, replaced)


def revoke(conn: psycopg.Connection[Any], device_id: int) -> str | None:
    """Revoke the device's live key; its id, or None when it had none."""
    revoked: str | None = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "UPDATE device_keys SET revoked_at = now() "
            "WHERE device_id = %s AND revoked_at IS NULL RETURNING id",
            (device_id,),
        )
        .fetchone()
    )
    return revoked


_FIND = """
SELECT k.id AS key_id, k.secret_hash, k.revoked_at IS NOT NULL AS revoked,
       d.id AS device_id, d.name AS device_name, d.home_id, h.owner_id,
       u.disabled_at IS NOT NULL AS owner_disabled
FROM device_keys k
JOIN devices d ON d.id = k.device_id
JOIN homes h ON h.id = d.home_id
JOIN users u ON u.id = h.owner_id
WHERE k.id = %s
"""


def find(conn: psycopg.Connection[Any], key: str) -> KeyRow | None:
    """The row of ``key`` if it is well formed and its secret matches; None otherwise
    (revoked keys included: the caller tells them apart)."""
    key_id = parse_key_id(key)
    if key_id is None:
        return None
    row = conn.cursor(row_factory=class_row(KeyRow)).execute(_FIND, (key_id,)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row.secret_hash), key_hash(key)):
        return None
    return row
