"""Authentication: login (a new session), refresh (rotation), logout (the session ends),
and, when ``AUTH_REGISTRATION`` is on, self-service sign-up.

Failed logins are limited per account and per client address (``webapp.ratelimit``); the
account's count is the same whether or not the account exists, so the answers tell nobody
which emails have accounts. See docs/auth.md.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass

import psycopg
from flask import Blueprint, Flask, Response, current_app, request
from flask_jwt_extended import get_jwt, jwt_required
from psycopg.rows import class_row
from werkzeug.security import check_password_hash, generate_password_hash

from vigil.vocabulary import Tier
from webapp import tokens
from webapp.accounts import create_user
from webapp.clients import get_pool
from webapp.errors import ApiError
from webapp.ratelimit import Policy, rate_limits, too_many
from webapp.requests import json_body
from webapp.responses import LogoutResult, Tokens, respond
from webapp.schemas import LoginRequest, RegisterRequest

bp = Blueprint("auth", __name__, url_prefix="/auth")

# Checked when the email is unknown, so both failures take as long (no user enumeration).
_DUMMY_HASH = generate_password_hash("vigil-no-such-user")

# An IPv6 client usually holds a whole /64: counting its addresses one by one limits nothing.
_IPV6_PREFIX = 64


@dataclass(frozen=True)
class _Account:
    id: int
    password_hash: str


def find_user_id(email: str, password: str) -> int | None:
    """The id of the user with this email and password, or None.

    Takes as long for an unknown email as for a wrong password.
    """
    with get_pool().connection() as conn:
        account = (
            conn.cursor(row_factory=class_row(_Account))
            .execute("SELECT id, password_hash FROM users WHERE lower(email) = lower(%s)", (email,))
            .fetchone()
        )
    if account is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return account.id if check_password_hash(account.password_hash, password) else None


@functools.cache
def _policy(name: str, rates: str, message: str) -> Policy:
    # Fail open: while Redis is down each process counts in its own memory, which still
    # caps a guesser, and an outage locks nobody out (docs/auth.md).
    return Policy.parse(name, rates, fail_open=True, message=message)


# Failed logins: layered windows (e.g. "5/minute;20/hour"), so a guesser who keeps going
# waits longer and longer.
def account_policy() -> Policy:
    rates = current_app.config["LOGIN_LIMIT_ACCOUNT"]
    return _policy("login_account", rates, "Too many failed logins for this account; retry later.")


def address_policy() -> Policy:
    rates = current_app.config["LOGIN_LIMIT_ADDRESS"]
    return _policy("login_address", rates, "Too many failed logins from this address; retry later.")


def register_policy() -> Policy:
    rates = current_app.config["REGISTER_LIMIT_ADDRESS"]
    return _policy("register_address", rates, "Too many sign-ups from this address; retry later.")


def account_key(email: str) -> str:
    """The account's counter key: a digest of the lower-cased email, the same whether or
    not the account exists, and no email address written into Redis."""
    return hashlib.sha256(email.lower().encode()).hexdigest()[:32]


def client_address() -> str:
    """Who is asking: the peer address, or with ``TRUSTED_PROXIES`` = N reverse proxies in
    front, the address the outermost of them saw (the Nth X-Forwarded-For entry from the
    right). Anything further left was written by the client and is not trusted."""
    address = request.remote_addr or ""
    hops = int(current_app.config["TRUSTED_PROXIES"])
    if hops > 0:
        forwarded = [
            part.strip()
            for part in request.headers.get("X-Forwarded-For", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{_IPV6_PREFIX}", strict=False))
    return str(ip)


@bp.post("/login")
def login() -> Response:
    body = LoginRequest.model_validate(json_body())
    limits = rate_limits()
    account, address = account_policy(), address_policy()
    account_id, address_id = account_key(body.email), client_address()
    blocked = limits.peek(address, address_id)
    if not blocked.allowed:
        raise too_many(address, blocked)
    # The account's attempt is counted before the password is checked, so parallel guesses
    # cannot all slip in under the limit; a success clears the count, so only failures stay.
    # A locked account gets 429 even with the right password, for unknown emails alike.
    counted = limits.hit(account, account_id)
    if not counted.allowed:
        raise too_many(account, counted)
    user_id = find_user_id(body.email, body.password)
    if user_id is None:
        limits.hit(address, address_id)
        raise ApiError("invalid_credentials", 401, "Wrong email or password.")
    limits.clear(account, account_id)
    pair = tokens.start_session(user_id)
    if pair is None:  # only ever said to someone who knows the password
        raise ApiError("account_disabled", 403, "This account is disabled.")
    return _tokens_json(pair)


@bp.post("/register")
def register() -> Response:
    """A new user with their first home at the standard tier, and a session: off unless
    ``AUTH_REGISTRATION`` is on (operators create accounts with the CLI otherwise)."""
    if not current_app.config["AUTH_REGISTRATION"]:
        raise ApiError("not_found", 404, "Sign-up is not open on this server.")
    body = RegisterRequest.model_validate(json_body())
    policy, address_id = register_policy(), client_address()
    counted = rate_limits().hit(policy, address_id)  # every attempt counts, taken or not
    if not counted.allowed:
        raise too_many(policy, counted)
    try:
        user_id, _home_id = create_user(
            body.email, body.password, body.home_name, Tier.STANDARD, body.timezone
        )
    except psycopg.errors.UniqueViolation:
        raise ApiError(
            "email_taken", 409, "An account with this email already exists; log in instead."
        ) from None
    return session_response(user_id, 201)


def session_response(user_id: int, status: int) -> Response:
    """A new session's tokens for a user just created (sign-up, joining by invitation)."""
    pair = tokens.start_session(user_id)
    if pair is None:  # just created, enabled: a session always starts
        raise ApiError("account_disabled", 403, "This account is disabled.")
    return _tokens_json(pair, status)


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh() -> Response:
    """New access and refresh tokens; the refresh token sent stops working (rotation)."""
    return _tokens_json(tokens.rotate(get_jwt()))


def _tokens_json(pair: tokens.TokenPair, status: int = 200) -> Response:
    return respond(
        Tokens(
            access_token=pair.access_token, refresh_token=pair.refresh_token, token_type="Bearer"
        ),
        status,
    )


@bp.post("/logout")
# Idempotent: a token of a session that already ended is still answered 200, so a client
# that logs out with its access token and then its refresh token sees no error.
@jwt_required(verify_type=False, skip_revocation_check=True)
def logout() -> Response:
    """End the session of the presented token, access or refresh: both stop working."""
    claims = get_jwt()
    tokens.end_session(claims)
    return respond(LogoutResult(revoked=claims["type"], session="ended"))


def init_app(app: Flask) -> None:
    tokens.init_app(app)
    with app.app_context():  # a malformed limit fails at start-up, not at the first login
        account_policy()
        address_policy()
        register_policy()
    app.register_blueprint(bp)
