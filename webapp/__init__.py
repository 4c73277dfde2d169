"""Vigil's HTTP API: the app factory.

    flask --app webapp run               # FLASK_APP=webapp works too
    gunicorn -c python:webapp.gunicorn_conf webapp.wsgi:app   # as the Procfile runs it

Config comes from defaults, then the environment (Heroku style), then ``test_config``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

DEFAULT_ACCESS_TOKEN_EXPIRES = dt.timedelta(minutes=15)
DEFAULT_REFRESH_TOKEN_EXPIRES = dt.timedelta(days=30)
DEFAULT_UPLOAD_MAX_BYTES = 10 * 1024 * 1024
# Room for the form fields and multipart framing around the largest allowed image.
UPLOAD_OVERHEAD_BYTES = 64 * 1024
# A worker is live while its heartbeat is younger than this (workers beat every ~10 s).
DEFAULT_HEALTH_WORKER_FRESH_S = 60
# A queue is stalled when its oldest message waited this long and nothing was consumed from
# it for as long. Above the deep batch time limit (240 s), so one slow batch is not a stall.
DEFAULT_HEALTH_QUEUE_STALL_S = 300
# An SSE response ends after this long; the client reconnects with Last-Event-ID.
DEFAULT_STREAM_MAX_S = 300
# Ingest limits, token buckets in Redis taken in the candidate step: a device may burst
# 20 events (a camera's motion sequence) and sustain 60 a minute; a home 100 and 300.
DEFAULT_INGEST_DEVICE_RATE_PER_MIN = 60
DEFAULT_INGEST_DEVICE_BURST = 20
DEFAULT_INGEST_HOME_RATE_PER_MIN = 300
DEFAULT_INGEST_HOME_BURST = 100
_TESTING_SECRET = "vigil-testing-only-secret-key-0123456789abcdef"


class ApiJSONProvider(DefaultJSONProvider):
    """ISO 8601 dates (Flask's default is the RFC 822 HTTP date format)."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, dt.datetime | dt.date | dt.time):
            return o.isoformat()
        return DefaultJSONProvider.default(o)


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    urls = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    for name in (*urls, "JWT_SECRET_KEY", "METRICS_TOKEN", "SNAPSHOT_URL_SECRET"):
        if environ.get(name):
            config[name] = environ[name]
    seconds = {
        "JWT_ACCESS_TOKEN_EXPIRES": "JWT_ACCESS_TOKEN_EXPIRES_S",
        "JWT_REFRESH_TOKEN_EXPIRES": "JWT_REFRESH_TOKEN_EXPIRES_S",
    }
    for key, env_name in seconds.items():
        if environ.get(env_name):
            config[key] = dt.timedelta(seconds=int(environ[env_name]))
    for key in (
        "UPLOAD_MAX_BYTES",
        "DB_POOL_MAX_SIZE",
        "HEALTH_WORKER_FRESH_S",
        "HEALTH_QUEUE_STALL_S",
        "STREAM_MAX_S",
        "INGEST_DEVICE_RATE_PER_MIN",
        "INGEST_DEVICE_BURST",
        "INGEST_HOME_RATE_PER_MIN",
        "INGEST_HOME_BURST",
        "STREAM_MAX_PER_PROCESS",
        "STREAM_MAX_PER_USER",
        "AUTH_SESSION_CACHE_S",
        "TRUSTED_PROXIES",
    ):
        if environ.get(key):
            config[key] = int(environ[key])
    for key in ("LOGIN_LIMIT_ACCOUNT", "LOGIN_LIMIT_ADDRESS"):
        if environ.get(key):
            config[key] = environ[key]
    return config


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API app. Connects to nothing: clients are made on first use."""
    app = Flask(__name__, static_folder=None)
    app.json = ApiJSONProvider(app)
    app.config.from_mapping(
        DATABASE_URL=None,
        REDIS_URL=None,
        CELERY_BROKER_URL=None,  # defaults to REDIS_URL, as in celery_config
        JWT_SECRET_KEY=None,
        SNAPSHOT_URL_SECRET=None,  # signs alerts' snapshot links; JWT_SECRET_KEY if unset
        METRICS_TOKEN=None,  # when set, GET /metrics wants "Authorization: Bearer <it>"
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=DEFAULT_ACCESS_TOKEN_EXPIRES,
        JWT_REFRESH_TOKEN_EXPIRES=DEFAULT_REFRESH_TOKEN_EXPIRES,
        UPLOAD_MAX_BYTES=DEFAULT_UPLOAD_MAX_BYTES,
        DB_POOL_MAX_SIZE=10,
        HEALTH_WORKER_FRESH_S=DEFAULT_HEALTH_WORKER_FRESH_S,
        HEALTH_QUEUE_STALL_S=DEFAULT_HEALTH_QUEUE_STALL_S,
        STREAM_MAX_S=DEFAULT_STREAM_MAX_S,
        INGEST_DEVICE_RATE_PER_MIN=DEFAULT_INGEST_DEVICE_RATE_PER_MIN,
        INGEST_DEVICE_BURST=DEFAULT_INGEST_DEVICE_BURST,
        INGEST_HOME_RATE_PER_MIN=DEFAULT_INGEST_HOME_RATE_PER_MIN,
        INGEST_HOME_BURST=DEFAULT_INGEST_HOME_BURST,
    )
    app.config.update(_from_environment(os.environ))
    if test_config is not None:
        app.config.update(test_config)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = (
            int(app.config["UPLOAD_MAX_BYTES"]) + UPLOAD_OVERHEAD_BYTES
        )
    if not app.config["JWT_SECRET_KEY"]:
        if not app.config.get("TESTING"):
            raise RuntimeError("JWT_SECRET_KEY must be set (environment) outside testing")
        app.config["JWT_SECRET_KEY"] = _TESTING_SECRET

    from webapp import (
        auth,
        cli,
        clients,
        devices,
        errors,
        events,
        health,
        homes,
        metrics,
        notifications,
        openapi,
        ratelimit,
        stream,
    )

    errors.init_app(app)  # first: the JWT extension's handlers then override by class
    clients.init_app(app)
    ratelimit.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    for module in (homes, devices, events, notifications, stream, health, openapi):
        app.register_blueprint(module.bp)
    cli.init_app(app)
    return app
