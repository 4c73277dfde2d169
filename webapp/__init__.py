"""Vigil's HTTP API: the app factory.

    flask --app webapp run               # FLASK_APP=webapp works too
    gunicorn -c python:webapp.gunicorn_conf webapp.wsgi:app   # as the Procfile runs it

Config comes from ``vigil.settings`` (this process's unless ``settings`` is given), then
``test_config`` (Flask key names, see ``webapp.config``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from vigil.settings import Settings, current
from webapp.config import EXTENSION, UPLOAD_OVERHEAD_BYTES, flask_config, settings_in_use

_TESTING_SECRET = "vigil-testing-only-secret-key-0123456789abcdef"


class ApiJSONProvider(DefaultJSONProvider):
    """ISO 8601 dates (Flask's default is the RFC 822 HTTP date format)."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, dt.datetime | dt.date | dt.time):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


def _require_jwt_secret(app: Flask) -> None:
    """Tokens need a secret; only a testing app may run on a fixed, public one."""
    if app.config["JWT_SECRET_KEY"]:
        return
    if not app.config.get("TESTING"):
        raise RuntimeError("JWT_SECRET_KEY must be set (environment) outside testing")
    app.config["JWT_SECRET_KEY"] = _TESTING_SECRET


def create_app(
    test_config: Mapping[str, Any] | None = None, settings: Settings | None = None
) -> Flask:
    """Build the API app. Connects to nothing: clients are made on first use."""
    settings = settings or current()
    app = Flask(__name__, static_folder=None)
    app.json = ApiJSONProvider(app)
    app.config.from_mapping(flask_config(settings))
    if test_config is not None:
        app.config.update(test_config)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = (
            int(app.config["UPLOAD_MAX_BYTES"]) + UPLOAD_OVERHEAD_BYTES
        )
    _require_jwt_secret(app)
    app.extensions[EXTENSION] = settings_in_use(settings, app)

    from webapp import (
        actions,
        auth,
        cli,
        clients,
        deletions,
        device_auth,
        devices,
        docs_ui,
        errors,
        escalation,
        events,
        export,
        health,
        homes,
        invitations,
        members,
        metrics,
        notifications,
        openapi,
        preferences,
        ratelimit,
        snoozes,
        stream,
        zones,
    )

    errors.init_app(app)  # first: the JWT extension's handlers then override by class
    device_auth.init_app(app)  # a device key is refused outside POST /events, before all
    clients.init_app(app)
    ratelimit.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    for module in (
        homes,
        members,
        invitations,
        preferences,
        snoozes,
        escalation,
        devices,
        zones,
        events,
        notifications,
        actions,
        stream,
        deletions,
        export,
        health,
        openapi,
    ):
        app.register_blueprint(module.bp)
    app.register_blueprint(docs_ui.blueprint())
    cli.init_app(app)
    return app
