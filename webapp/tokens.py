"""JWT setup: every token belongs to a login session kept in PostgreSQL; one JSON 401 per way
a token can be refused.

Login inserts a ``sessions`` row; its access and refresh tokens carry the row's id as the
``sid`` claim. A token is accepted only while its session is live: the row exists, is neither
revoked nor expired, and its user exists and is not disabled. PostgreSQL decides; Redis caches
the answer at ``auth:session:{sid}`` ("1" live, for ``AUTH_SESSION_CACHE_S``; "0" ended), so a
request with a token costs one Redis GET, and a cache miss one primary-key lookup. Losing
Redis's data costs only cache misses: nothing revoked comes back.

Ending a session writes PostgreSQL first, then overwrites the cache key with "0". A refill
after a miss only ever adds a key (SET NX), so a lookup that read the row just before a
revocation cannot put "1" back over the "0" the revocation wrote.

The refresh token is rotated: ``refresh_jti`` names the one refresh token of a session that
is currently valid, and presenting another one (an older, already rotated one) is reuse,
which revokes the whole session. See docs/auth.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from flask import Flask, Response, current_app
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jwt_identity,
)
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.exceptions import WrongTokenError
from psycopg.rows import scalar_row

from schedules.scripts import sync_reply
from store.db import transaction
from vigil.vocabulary import RevokedReason
from webapp.clients import get_pool, get_redis
from webapp.errors import ApiError, error_response

logger = logging.getLogger(__name__)

SESSION_KEY = "auth:session:{sid}"
LIVE, ENDED = "1", "0"
# After a Redis error, sessions are checked in PostgreSQL alone for this long, so a hung Redis
# costs a process one timeout, not one per request.
CACHE_PAUSE_S = 5.0
EXTENSION = "vigil.sessions"
_BEARER = (("WWW-Authenticate", "Bearer"),)

_LIVE_SQL = """
SELECT s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL AS live
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.id = %s AND s.user_id = %s
"""
# NULL lifetime (JWT_REFRESH_TOKEN_EXPIRES = False): the session never expires.
_EXPIRES_AT = "COALESCE(now() + %(lifetime)s::interval, 'infinity')"

jwt = JWTManager()


@dataclass(frozen=True)
class TokenPair:
    """A session's current access and refresh tokens."""

    access_token: str
    refresh_token: str


class _CacheState:
    """Per app: when Redis last failed, so the check can leave it alone for a while."""

    def __init__(self) -> None:
        self.paused_until = 0.0

    def usable(self) -> bool:
        return time.monotonic() >= self.paused_until

    def failed(self, what: str, exc: Exception) -> None:
        logger.warning("session cache: %s failed, checking PostgreSQL only: %r", what, exc)
        self.paused_until = time.monotonic() + CACHE_PAUSE_S


def _state() -> _CacheState:
    return current_app.extensions[EXTENSION]


def _unauthorized(code: str, message: str) -> Response:
    return error_response(code, 401, message, headers=_BEARER)


def _refused(code: str, message: str) -> ApiError:
    return ApiError(code, 401, message, headers=dict(_BEARER))


def current_user_id() -> int:
    """The id of the user whose access token authorised this request."""
    return int(get_jwt_identity())


def session_id(claims: Mapping[str, Any]) -> str | None:
    """The session a token belongs to, or None for a token without one (issued before
    sessions existed, so it cannot be revoked durably and is refused)."""
    try:
        return str(uuid.UUID(str(claims["sid"])))
    except (KeyError, ValueError):
        return None


def _lifetime(delta: Any) -> dt.timedelta | None:
    """A token lifetime setting as a timedelta; None when tokens never expire."""
    if delta is False:
        return None
    now = dt.datetime.now(dt.UTC)
    return (now + delta) - now  # also turns a relativedelta into a timedelta


def _cache_ttls() -> tuple[int, int]:
    """Seconds a "live" and an "ended" answer stay cached.

    A "live" answer is served for ``AUTH_SESSION_CACHE_S``: the longest a token can outlive
    a revocation that bypassed the app (a user row deleted with SQL) or whose cache write
    failed. An ended session never comes back, so its answer is kept until every access
    token of it has expired: afterwards only its refresh tokens can still be shown.
    """
    live = max(1, int(current_app.config["AUTH_SESSION_CACHE_S"]))
    access = _lifetime(jwt_config.access_expires)
    ended = int(access.total_seconds()) if access is not None else 24 * 3600
    return live, max(live, ended)


def _cache_get(sid: str) -> str | None:
    state = _state()
    if not state.usable():
        return None
    try:
        cached: str | None = sync_reply(get_redis().get(SESSION_KEY.format(sid=sid)))
    except redis.RedisError as exc:
        state.failed("read", exc)
        return None
    return cached


def _cache_fill(sid: str, live: bool) -> None:
    """Cache what PostgreSQL said; never overwrites an answer already there."""
    state = _state()
    if not state.usable():
        return
    live_s, ended_s = _cache_ttls()
    try:
        get_redis().set(
            SESSION_KEY.format(sid=sid),
            LIVE if live else ENDED,
            ex=live_s if live else ended_s,
            nx=True,
        )
    except redis.RedisError as exc:
        state.failed("refill", exc)


def mark_ended(sids: Iterable[str]) -> bool:
    """Overwrite the cache of ``sids`` with "ended", after their end is committed.

    Tried even while reads are paused: this write is what makes a revocation immediate.
    False when Redis could not be told (the sessions then end within the cache's TTL).
    """
    sids = list(sids)
    if not sids:
        return True
    _live_s, ended_s = _cache_ttls()
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.set(SESSION_KEY.format(sid=sid), ENDED, ex=ended_s)
            pipe.execute()
    except redis.RedisError as exc:
        logger.warning("session cache: could not mark %d session(s) ended: %r", len(sids), exc)
        return False
    return True


def session_live(sid: str, user_id: int) -> bool:
    """Whether session ``sid`` of ``user_id`` may still be used: Redis, else PostgreSQL.

    PostgreSQL being unreachable too raises, which answers 503: never accept blindly.
    """
    cached = _cache_get(sid)
    if cached is not None:
        return cached == LIVE
    try:
        uuid.UUID(sid)
    except ValueError:
        return False  # not a session id this app wrote: nothing to look up
    with get_pool().connection() as conn:
        # Autocommit: one round trip, instead of BEGIN, SELECT and COMMIT.
        conn.autocommit = True
        try:
            cursor = conn.cursor(row_factory=scalar_row)
            live = bool(cursor.execute(_LIVE_SQL, (sid, user_id)).fetchone())
        finally:
            conn.autocommit = False  # the pool's other users expect transactions
    _cache_fill(sid, live)
    return live


def _new_jti() -> str:
    return str(uuid.uuid4())


def _token_pair(user_id: int, sid: str, refresh_jti: str) -> TokenPair:
    identity = str(user_id)
    return TokenPair(
        access_token=create_access_token(identity=identity, additional_claims={"sid": sid}),
        refresh_token=create_refresh_token(
            identity=identity, additional_claims={"sid": sid, "jti": refresh_jti}
        ),
    )


def start_session(user_id: int) -> TokenPair | None:
    """A new session for ``user_id`` and its first access and refresh tokens; None if the
    user is disabled or gone.

    The user row is read ``FOR SHARE``: a concurrent ``users disable`` or ``delete`` (which
    lock it ``FOR UPDATE``) either waits for this session and then ends it too, or commits
    first and is seen here.
    """
    sid, refresh_jti = str(uuid.uuid4()), _new_jti()
    lifetime = _lifetime(jwt_config.refresh_expires)
    with transaction(get_pool()) as conn:
        enabled = (
            conn.cursor(row_factory=scalar_row)
            .execute(
                "SELECT disabled_at IS NULL FROM users WHERE id = %s FOR SHARE",
                (user_id,),
            )
            .fetchone()
        )
        if not enabled:  # disabled, or no such user
            return None
        conn.execute(
            "INSERT INTO sessions (id, user_id, refresh_jti, expires_at) "
            f"VALUES (%(sid)s, %(user_id)s, %(jti)s, {_EXPIRES_AT})",
            {"sid": sid, "user_id": user_id, "jti": refresh_jti, "lifetime": lifetime},
        )
    _cache_fill(sid, True)  # the first request with these tokens then needs no lookup
    return _token_pair(user_id, sid, refresh_jti)


def rotate(claims: Mapping[str, Any]) -> TokenPair:
    """New access and refresh tokens for the refresh token ``claims``, which stops working.

    The swap of ``refresh_jti`` is one conditional UPDATE, so of two requests with the same
    refresh token exactly one rotates; the other is reuse. Reuse revokes the session: its
    current tokens die with it, since either the client or a thief holds a copy.
    """
    sid = session_id(claims)
    if sid is None:
        raise _refused("token_revoked", "The token has no session; log in again.")
    params = {
        "sid": sid,
        "old": claims["jti"],
        "new": _new_jti(),
        "lifetime": _lifetime(jwt_config.refresh_expires),
    }
    with transaction(get_pool()) as conn:
        cursor = conn.cursor(row_factory=scalar_row)
        rotated_user = cursor.execute(
            f"""
            UPDATE sessions s
            SET refresh_jti = %(new)s, refreshed_at = now(), expires_at = {_EXPIRES_AT}
            FROM users u
            WHERE s.id = %(sid)s AND s.refresh_jti = %(old)s
              AND s.revoked_at IS NULL AND s.expires_at > now()
              AND u.id = s.user_id AND u.disabled_at IS NULL
            RETURNING s.user_id
            """,
            params,
        ).fetchone()
        reused = None
        if rotated_user is None:
            reused = cursor.execute(
                "UPDATE sessions SET revoked_at = now(), revoked_reason = %(reason)s "
                "WHERE id = %(sid)s AND revoked_at IS NULL AND refresh_jti <> %(old)s "
                "RETURNING id",
                {**params, "reason": RevokedReason.REFRESH_REUSED},
            ).fetchone()
    if rotated_user is not None:
        return _token_pair(rotated_user, sid, params["new"])
    mark_ended([sid])  # the cache may still say "live" for up to its TTL
    if reused is not None:
        logger.warning("refresh token reuse: session %s revoked", sid)
        raise _refused(
            "token_reused",
            "This refresh token was already used; the session is revoked. Log in again.",
        )
    raise _refused("token_revoked", "The session of this token has ended; log in again.")


def end_session(claims: Mapping[str, Any]) -> None:
    """Revoke the session of ``claims`` (logout): every token of it stops working."""
    sid = session_id(claims)
    if sid is None:
        return
    with get_pool().connection() as conn:
        conn.execute(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = %s "
            "WHERE id = %s AND revoked_at IS NULL",
            (RevokedReason.LOGOUT, sid),
        )
    mark_ended([sid])


def user_session_ids(conn: psycopg.Connection[Any], user_id: int) -> list[str]:
    """The sessions of ``user_id`` whose tokens may still be shown (not yet expired)."""
    ids = (
        conn.cursor(row_factory=scalar_row)
        .execute("SELECT id FROM sessions WHERE user_id = %s AND expires_at > now()", (user_id,))
        .fetchall()
    )
    return [str(sid) for sid in ids]


def revoke_user_sessions(
    conn: psycopg.Connection[Any], user_id: int, reason: RevokedReason
) -> None:
    """Revoke every session of ``user_id`` in ``conn``'s transaction; call ``mark_ended``
    with ``user_session_ids`` once it is committed."""
    conn.execute(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = %s "
        "WHERE user_id = %s AND revoked_at IS NULL",
        (reason, user_id),
    )


@jwt.token_in_blocklist_loader
def _session_ended(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    # Checked for every request with a token (access or refresh), by every @jwt_required.
    sid = payload.get("sid")  # parsed as a UUID only on a cache miss: this path is hot
    try:
        user_id = int(payload["sub"])
    except (KeyError, ValueError):
        return True
    return not isinstance(sid, str) or not session_live(sid, user_id)


@jwt.unauthorized_loader
def _missing(reason: str) -> Response:
    return _unauthorized("token_missing", f"Authentication required: {reason}.")


@jwt.expired_token_loader
def _expired(_header: dict[str, Any], payload: dict[str, Any]) -> Response:
    kind = payload.get("type", "access")
    return _unauthorized("token_expired", f"The {kind} token has expired.")


@jwt.invalid_token_loader
def _invalid(reason: str) -> Response:
    return _unauthorized("token_invalid", f"The token is invalid: {reason}.")


@jwt.revoked_token_loader
def _revoked(_header: dict[str, Any], payload: dict[str, Any]) -> Response:
    return _unauthorized(
        "token_revoked",
        "The session of this token has ended (logged out, revoked, or the account is gone).",
    )


def _wrong_type(exc: WrongTokenError) -> Response:
    return _unauthorized("token_wrong_type", str(exc))


def init_app(app: Flask) -> None:
    jwt.init_app(app)
    app.extensions[EXTENSION] = _CacheState()
    # The extension maps a wrong token type to the "invalid" callback; ours has its own code.
    app.register_error_handler(WrongTokenError, _wrong_type)
