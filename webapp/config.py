"""The app's configuration: Flask config keys filled once from a ``Settings`` object.

Every value comes from ``vigil.settings`` (its defaults, then the environment). The keys keep
their Flask names, so ``create_app(test_config)`` overrides them by name, and the blueprints
read ``current_app.config[NAME]``. Values derived from several settings (the snapshot links'
secret, the scheduler's config) come from ``app_settings()``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask, current_app

from vigil.settings import Settings

EXTENSION = "vigil.settings"
# Room for the form fields and multipart framing around the largest allowed image.
UPLOAD_OVERHEAD_BYTES = 64 * 1024


def flask_config(settings: Settings) -> dict[str, Any]:
    """The Flask config of an app running with ``settings``."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "CELERY_BROKER_URL": settings.celery_broker_url,  # REDIS_URL when unset
        "CANDIDATE_SHARD_URLS": settings.candidate_shard_urls,  # REDIS_URL alone when empty
        "CANDIDATE_KEY_NAMESPACE": settings.candidate_key_namespace,
        "DB_POOL_MAX_SIZE": settings.db_pool_max_size,
        "JWT_SECRET_KEY": settings.jwt_secret_key,
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ACCESS_TOKEN_EXPIRES": dt.timedelta(seconds=settings.jwt_access_token_expires_s),
        "JWT_REFRESH_TOKEN_EXPIRES": dt.timedelta(seconds=settings.jwt_refresh_token_expires_s),
        "AUTH_SESSION_CACHE_S": settings.auth_session_cache_s,
        "LOGIN_LIMIT_ACCOUNT": settings.login_limit_account,
        "LOGIN_LIMIT_ADDRESS": settings.login_limit_address,
        "AUTH_REGISTRATION": settings.auth_registration,
        "REGISTER_LIMIT_ADDRESS": settings.register_limit_address,
        "TRUSTED_PROXIES": settings.trusted_proxies,
        "UPLOAD_MAX_BYTES": settings.upload_max_bytes,
        "INGEST_DEVICE_RATE_PER_MIN": settings.ingest_device_rate_per_min,
        "INGEST_DEVICE_BURST": settings.ingest_device_burst,
        "INGEST_HOME_RATE_PER_MIN": settings.ingest_home_rate_per_min,
        "INGEST_HOME_BURST": settings.ingest_home_burst,
        "STREAM_MAX_S": settings.stream_max_s,
        "STREAM_KEEPALIVE_S": settings.stream_keepalive_s,
        "STREAM_MAX_PER_PROCESS": settings.stream_max_per_process,
        "STREAM_MAX_PER_USER": settings.stream_max_per_user,
        "METRICS_TOKEN": settings.metrics_token,  # when set, /metrics wants it as a Bearer
        "HEALTH_WORKER_FRESH_S": settings.health_worker_fresh_s,
        "HEALTH_QUEUE_STALL_S": settings.health_queue_stall_s,
        "SNAPSHOT_URL_SECRET": settings.snapshot_url_secret,
    }


def settings_in_use(settings: Settings, app: Flask) -> Settings:
    """``settings`` with the secrets ``app`` really signs with (a test config may set them,
    and a testing app without one has a fixed key), so values derived from them agree."""
    return settings.replace(
        jwt_secret_key=app.config["JWT_SECRET_KEY"],
        snapshot_url_secret=app.config["SNAPSHOT_URL_SECRET"],
    )


def app_settings(app: Flask | None = None) -> Settings:
    """The settings ``app`` (default: the current app) was built with."""
    settings: Settings = (app or current_app).extensions[EXTENSION]
    return settings
