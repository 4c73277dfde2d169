"""``GET /health``: Redis and Postgres answer, and the Celery queues are being consumed.

- ``ok`` (200): both stores answer; every non-empty queue has a live worker and moves.
- ``degraded`` (200, ``reasons``): a non-empty queue has no live worker, or its oldest
  message has waited ``HEALTH_QUEUE_STALL_S`` with nothing consumed for as long.
- ``down`` (503): Redis or Postgres fails; the API cannot accept events.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify

from webapp.clients import clients, get_pool, get_redis
from webapp.queue_health import check_workers

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
    if not all(value == "ok" for value in checks.values()):
        return jsonify(status="down", checks=checks), 503

    workers, reasons = None, []
    try:
        report = check_workers(
            get_redis(),
            clients().broker_redis,
            float(current_app.config["HEALTH_WORKER_FRESH_S"]),
            float(current_app.config["HEALTH_QUEUE_STALL_S"]),
        )
        workers, reasons = report.as_json(), report.reasons
    except Exception as exc:  # e.g. a broker on its own Redis is away
        logger.warning("health check workers failed: %r", exc)
        reasons = [f"workers: error: {type(exc).__name__}"]
    checks["workers"] = "degraded" if reasons else "ok"
    status = "degraded" if reasons else "ok"
    return jsonify(status=status, checks=checks, workers=workers, reasons=reasons), 200
