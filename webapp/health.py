"""Liveness of what the API needs: Redis answers PING, Postgres answers SELECT 1.

Worker liveness (are deep queues being consumed?) joins this check when the workers land.
"""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from webapp.clients import get_pool, get_redis

bp = Blueprint("health", __name__)
logger = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 2.0


def _check_redis() -> str:
    return "ok" if get_redis().ping() else "no PONG"


def _check_postgres() -> str:
    with get_pool().connection(timeout=CHECK_TIMEOUT_S) as conn:
        value = conn.execute("SELECT 1 AS ok").fetchone()["ok"]
    return "ok" if value == 1 else f"unexpected answer {value!r}"


@bp.get("/health")
def health():
    checks: dict[str, str] = {}
    for name, check in (("redis", _check_redis), ("postgres", _check_postgres)):
        try:
            checks[name] = check()
        except Exception as exc:  # any failure is a failed check, reported, not a 500
            logger.warning("health check %s failed: %r", name, exc)
            checks[name] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", checks=checks), (
        200 if healthy else 503
    )
