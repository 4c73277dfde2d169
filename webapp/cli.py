"""Operator commands: ``flask users create|disable|enable|delete``, ``flask db migrate`` and
``flask db prune-sessions``.

    FLASK_APP=webapp flask users create ana@example.com --password ... --home Home --tier premium
    FLASK_APP=webapp flask users disable ana@example.com     # refused at once, data kept
    FLASK_APP=webapp flask users delete ana@example.com --yes

The tier is set here (or by billing), never by an API client. Disabling or deleting a user
ends their sessions in PostgreSQL and then in the Redis cache, so the user's tokens are
refused from the very next request (docs/auth.md).
"""

from __future__ import annotations

from typing import Any

import click
import psycopg
from flask import Flask, current_app
from flask.cli import AppGroup
from psycopg.rows import scalar_row

from store.db import transaction
from store.migrate import MigrationError, migrate
from vigil.vocabulary import RevokedReason, Tier
from webapp import tokens
from webapp.accounts import create_user
from webapp.clients import get_pool
from webapp.schemas import check_timezone

users_cli = AppGroup("users", help="Manage user accounts.")
db_cli = AppGroup("db", help="Database schema and housekeeping.")
# The tiers a subscription sells; the command line takes their values.
TIER_CHOICE = click.Choice([tier.value for tier in Tier])
# Expired sessions are kept this long before prune-sessions deletes them (a trail to audit).
KEEP_EXPIRED_SESSIONS_DAYS = 7


@users_cli.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--home", "home", required=True, help="Name of the user's first home.")
@click.option("--tier", type=TIER_CHOICE, default=Tier.STANDARD.value, show_default=True)
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone of the home.")
def users_create(email: str, password: str, home: str, tier: str, timezone: str) -> None:
    """Create a user EMAIL with a home."""
    try:
        check_timezone(timezone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timezone") from None
    if not password:
        raise click.BadParameter("must not be empty", param_hint="--password")
    try:
        user_id, home_id = create_user(email, password, home, Tier(tier), timezone)
    except psycopg.errors.UniqueViolation:
        raise click.ClickException(f"a user with email {email!r} already exists") from None
    except psycopg.errors.CheckViolation as exc:
        raise click.ClickException(f"refused by the database: {exc.diag.message_primary}") from None
    click.echo(f"created user {user_id} ({email}) with home {home_id} ({home!r}, {tier})")


def _user_id(conn: psycopg.Connection[Any], email: str) -> int:
    """The user's id, locked: a login that is creating a session waits, then sees the change."""
    user_id = (
        conn.cursor(row_factory=scalar_row)
        .execute("SELECT id FROM users WHERE lower(email) = lower(%s) FOR UPDATE", (email,))
        .fetchone()
    )
    if user_id is None:
        raise click.ClickException(f"no user with email {email!r}")
    return int(user_id)


def _end_in_cache(sids: list[str]) -> None:
    """Tell the cache, after the commit; if Redis is unreachable, say what that means."""
    if not tokens.mark_ended(sids):
        ttl = current_app.config["AUTH_SESSION_CACHE_S"]
        click.echo(
            f"warning: Redis unreachable; {len(sids)} session(s) are ended in PostgreSQL and "
            f"their tokens stop working within {ttl} s",
            err=True,
        )


def disable_user(email: str) -> tuple[int, list[str]]:
    """Disable the user and revoke their sessions; (user_id, sessions to end in the cache)."""
    with transaction(get_pool()) as conn:
        user_id = _user_id(conn, email)
        conn.execute(
            "UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE id = %s",
            (user_id,),
        )
        # Revoked rather than only refused while disabled: enabling the user again must not
        # bring back the tokens they held.
        tokens.revoke_user_sessions(conn, user_id, RevokedReason.USER_DISABLED)
        sids = tokens.user_session_ids(conn, user_id)
    return user_id, sids


def delete_user(email: str) -> tuple[int, list[str]]:
    """Delete the user, their homes and everything under them, and their sessions."""
    with transaction(get_pool()) as conn:
        user_id = _user_id(conn, email)
        sids = tokens.user_session_ids(conn, user_id)  # before the cascade removes them
        conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    return user_id, sids


@users_cli.command("disable")
@click.argument("email")
def users_disable(email: str) -> None:
    """Refuse EMAIL's logins and end their sessions now; their data stays."""
    user_id, sids = disable_user(email)
    _end_in_cache(sids)
    click.echo(f"disabled user {user_id} ({email}); {len(sids)} session(s) ended")


@users_cli.command("enable")
@click.argument("email")
def users_enable(email: str) -> None:
    """Let a disabled EMAIL log in again (sessions ended by disabling stay ended)."""
    with transaction(get_pool()) as conn:
        user_id = _user_id(conn, email)
        conn.execute("UPDATE users SET disabled_at = NULL WHERE id = %s", (user_id,))
    click.echo(f"enabled user {user_id} ({email})")


@users_cli.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_delete(email: str, yes: bool) -> None:
    """Delete EMAIL with their homes, devices, events and sessions."""
    if not yes:
        click.confirm(f"Delete {email} and all of their homes, devices and events?", abort=True)
    user_id, sids = delete_user(email)
    _end_in_cache(sids)
    click.echo(f"deleted user {user_id} ({email}); {len(sids)} session(s) ended")


@db_cli.command("prune-sessions")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=0),
    default=KEEP_EXPIRED_SESSIONS_DAYS,
    show_default=True,
    help="Keep sessions that expired more recently than this.",
)
def db_prune_sessions(older_than_days: int) -> None:
    """Delete sessions that expired long ago (their tokens have expired too)."""
    with transaction(get_pool()) as conn:
        deleted = conn.execute(
            "DELETE FROM sessions WHERE expires_at < now() - make_interval(days => %s)",
            (older_than_days,),
        ).rowcount
    click.echo(f"deleted {deleted} expired session(s)")


@db_cli.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations to DATABASE_URL."""
    url = current_app.config["DATABASE_URL"]
    if not url:
        raise click.ClickException("DATABASE_URL is not set")
    try:
        applied = migrate(url)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"applied {', '.join(applied)}" if applied else "up to date")


def init_app(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(db_cli)
