"""Operator commands: ``flask users create`` and ``flask db migrate``.

    FLASK_APP=webapp flask users create ana@example.com --password ... --home Home --tier premium

The tier is set here (or by billing), never by an API client.
"""

from __future__ import annotations

import click
import psycopg
from flask import Flask, current_app
from flask.cli import AppGroup

from celery_config import TIERS
from store.db import transaction
from store.migrate import MigrationError, migrate
from webapp.auth import hash_password
from webapp.clients import get_pool
from webapp.schemas import check_timezone

users_cli = AppGroup("users", help="Manage user accounts.")
db_cli = AppGroup("db", help="Database schema.")


def create_user(email: str, password: str, home: str, tier: str, timezone: str) -> tuple[int, int]:
    """Insert a user and their first home; returns (user_id, home_id)."""
    with transaction(get_pool()) as conn:
        user = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, %s) RETURNING id",
            (email, hash_password(password)),
        ).fetchone()
        home_row = conn.execute(
            "INSERT INTO homes (owner_id, name, tier, timezone) VALUES (%s, %s, %s, %s) "
            "RETURNING id",
            (user["id"], home, tier, timezone),
        ).fetchone()
    return user["id"], home_row["id"]


@users_cli.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--home", "home", required=True, help="Name of the user's first home.")
@click.option("--tier", type=click.Choice(TIERS), default="standard", show_default=True)
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
        user_id, home_id = create_user(email, password, home, tier, timezone)
    except psycopg.errors.UniqueViolation:
        raise click.ClickException(f"a user with email {email!r} already exists") from None
    except psycopg.errors.CheckViolation as exc:
        raise click.ClickException(f"refused by the database: {exc.diag.message_primary}") from None
    click.echo(f"created user {user_id} ({email}) with home {home_id} ({home!r}, {tier})")


@db_cli.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations to DATABASE_URL."""
    url = current_app.config.get("DATABASE_URL")
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
