"""The outbox sender: claim due deliveries, send each once, record the answer, back off.

A delivery moves ``pending → sending → sent | invalid_token | failed``, or back to
``pending`` with a later ``next_attempt_at`` after a transient error. Why a delivery is
not pushed twice:

* Claiming is one UPDATE over ``FOR UPDATE SKIP LOCKED`` rows that are due, so two senders
  (a redelivered task, the periodic sweep, a second worker) never hold the same row.
* A claim is a lease (``claimed_until``) stamped with the attempt number; recording an
  answer only succeeds while that attempt still holds the lease, so a stale sender can
  never overwrite a newer attempt's answer, and a sent row is never claimed again.
* Retries are rows with a due time, swept by beat, not Celery countdowns: nothing waits
  in the broker longer than its visibility timeout.
* The one window no provider API closes is a worker killed after the provider accepted a
  push and before the answer was committed. Its lease expires and the row is sent again
  with the same ``push_id`` (the APNs ``apns-id``), ``apns-collapse-id`` and FCM tag, so
  the phone replaces the first copy instead of showing a second one.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from notify.links import Links
from notify.payload import ALERT_TTL_S, SUMMARY_TTL_S, build_message
from notify.push import Outcome, PushProvider, SendResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SenderConfig:
    lease_s: float = 30.0  # above the providers' request timeout
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    threads: int = 8  # concurrent provider requests per sender

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SenderConfig:
        """PUSH_LEASE_S, PUSH_MAX_ATTEMPTS, PUSH_BACKOFF_BASE_S, PUSH_BACKOFF_MAX_S,
        PUSH_THREADS; unset ones keep their defaults."""
        names = {
            "lease_s": ("PUSH_LEASE_S", float),
            "max_attempts": ("PUSH_MAX_ATTEMPTS", int),
            "backoff_base_s": ("PUSH_BACKOFF_BASE_S", float),
            "backoff_max_s": ("PUSH_BACKOFF_MAX_S", float),
            "threads": ("PUSH_THREADS", int),
        }
        values = {
            field_name: kind(environ[env])
            for field_name, (env, kind) in names.items()
            if environ.get(env)
        }
        return cls(**values)


@dataclass
class SendReport:
    claimed: int = 0
    outcomes: Counter = field(default_factory=Counter)  # final status → count
    by_provider: Counter = field(default_factory=Counter)  # provider → sent
    resent_after_lease: int = 0  # reclaimed from a sender that vanished mid-send


_DUE = (
    "((d.status = 'pending' AND d.next_attempt_at <= now())"
    " OR (d.status = 'sending' AND d.claimed_until < now()))"
)

_CLAIM = f"""
WITH due AS (
    SELECT d.id, d.status AS was FROM deliveries d
    WHERE {_DUE} {{only}}
    ORDER BY d.next_attempt_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries d
SET status = 'sending', attempts = d.attempts + 1,
    claimed_until = now() + make_interval(secs => %(lease_s)s)
FROM due WHERE d.id = due.id
RETURNING d.id, d.attempts, due.was
"""

_DETAILS = """
SELECT d.id, d.attempts, d.push_id, d.device_id, d.created_at, d.notification_id,
       n.home_id, n.event_id, n.kind, n.title, n.body, n.data,
       dev.push_token, dev.platform,
       (e.snapshot IS NOT NULL) AS has_snapshot,
       now() AS now
FROM deliveries d
JOIN notifications n ON n.id = d.notification_id
LEFT JOIN devices dev ON dev.id = d.device_id
LEFT JOIN events e ON e.id = n.event_id
WHERE d.id = ANY(%s)
ORDER BY d.id
"""


def claim(
    pool: ConnectionPool,
    config: SenderConfig,
    ids: Sequence[int] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Lease due deliveries (only ``ids`` when given) and return them with what to send."""
    only = "AND d.id = ANY(%(ids)s)" if ids is not None else ""
    params = {"limit": limit, "lease_s": config.lease_s, "ids": list(ids or [])}
    with pool.connection() as conn:
        with conn.transaction():
            leased = conn.execute(_CLAIM.format(only=only), params).fetchall()
        if not leased:
            return []
        was = {row["id"]: row["was"] for row in leased}
        rows = conn.execute(_DETAILS, (list(was),)).fetchall()
    for row in rows:
        row["reclaimed"] = was[row["id"]] == "sending"
    return rows


def backoff_s(attempts: int, config: SenderConfig, retry_after_s: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    delay = min(config.backoff_max_s, config.backoff_base_s * 2 ** max(0, attempts - 1))
    delay *= random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, config.backoff_max_s))
    return delay


def _settle(
    pool: ConnectionPool, row: dict[str, Any], provider: str, result: SendResult, status: str,
    next_in_s: float | None = None,
) -> bool:  # fmt: skip
    """Write the answer, fenced by the attempt that holds the lease; False if it lost it."""
    with pool.connection() as conn:
        with conn.transaction():
            cur = conn.execute(
                """
                UPDATE deliveries SET
                    status = %(status)s, provider = %(provider)s,
                    provider_id = coalesce(%(provider_id)s, provider_id),
                    last_status = %(http)s, last_error = %(error)s, claimed_until = NULL,
                    sent_at = CASE WHEN %(status)s = 'sent' THEN now() END,
                    next_attempt_at = CASE WHEN %(next_in_s)s::float8 IS NULL
                        THEN next_attempt_at
                        ELSE now() + make_interval(secs => %(next_in_s)s::float8) END
                WHERE id = %(id)s AND status = 'sending' AND attempts = %(attempts)s
                """,
                {
                    "status": status, "provider": provider, "provider_id": result.provider_id,
                    "http": result.status, "error": result.reason, "next_in_s": next_in_s,
                    "id": row["id"], "attempts": row["attempts"],
                },
            )  # fmt: skip
            if cur.rowcount and status == "invalid_token" and row["push_token"]:
                # Prune the token, unless the phone registered a new one meanwhile.
                conn.execute(
                    "UPDATE devices SET push_token = NULL WHERE id = %s AND push_token = %s",
                    (row["device_id"], row["push_token"]),
                )
    return bool(cur.rowcount)


def _ttl_s(row: dict[str, Any]) -> float:
    return ALERT_TTL_S if row["kind"] == "alert" else SUMMARY_TTL_S


def send_one(
    pool: ConnectionPool,
    providers: Any,
    links: Links,
    config: SenderConfig,
    row: dict[str, Any],
) -> tuple[str, str]:
    """Send one claimed delivery and record the answer; returns (provider, final status)."""
    age_s = (row["now"] - row["created_at"]).total_seconds()
    if row["device_id"] is None:
        result, provider_name = SendResult(Outcome.FAILED, reason="device removed"), "none"
    elif age_s > _ttl_s(row):
        result, provider_name = SendResult(Outcome.FAILED, reason="expired"), "none"
    else:
        provider: PushProvider = providers.for_platform(row["platform"])
        provider_name = provider.name
        if not row["push_token"] and provider_name != "embedded":
            result = SendResult(Outcome.INVALID_TOKEN, reason="no push token")
        else:
            try:
                result = provider.send(build_message(row, links))
            except Exception as error:  # a provider bug must not strand the lease
                log.exception("push provider %s raised", provider_name)
                result = SendResult(Outcome.RETRY, reason=f"{type(error).__name__}: {error}")
    status = result.outcome.value
    next_in_s = None
    if result.outcome is Outcome.RETRY:
        delay = backoff_s(row["attempts"], config, result.retry_after_s)
        if row["attempts"] >= config.max_attempts or age_s + delay > _ttl_s(row):
            status = "failed"
            result = SendResult(
                Outcome.FAILED, status=result.status,
                reason=f"gave up after {row['attempts']} attempts: {result.reason}",
            )  # fmt: skip
        else:
            status, next_in_s = "pending", delay
    if not _settle(pool, row, provider_name, result, status, next_in_s):
        return provider_name, "lost_lease"
    return provider_name, status


def send_claimed(
    pool: ConnectionPool,
    providers: Any,
    links: Links,
    rows: Sequence[dict[str, Any]],
    config: SenderConfig = SenderConfig(),
    on_settled: Callable[[dict[str, Any], str, str], None] | None = None,
) -> SendReport:
    """Send claimed rows concurrently (one request each); ``on_settled(row, provider,
    status)`` runs after each answer is committed (live stream, metrics)."""
    report = SendReport(claimed=len(rows))
    report.resent_after_lease = sum(1 for row in rows if row["reclaimed"])

    def work(row: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        return (row, *send_one(pool, providers, links, config, row))

    if len(rows) <= 1:
        results = [work(row) for row in rows]
    else:
        with ThreadPoolExecutor(max_workers=min(config.threads, len(rows))) as executor:
            results = list(executor.map(work, rows))
    for row, provider_name, status in results:
        report.outcomes[status] += 1
        if status == "sent":
            report.by_provider[provider_name] += 1
        if on_settled is not None:
            on_settled(row, provider_name, status)
    return report


def send_deliveries(
    pool: ConnectionPool,
    providers: Any,
    links: Links,
    ids: Sequence[int] | None = None,
    config: SenderConfig = SenderConfig(),
    limit: int = 100,
    on_settled: Callable[[dict[str, Any], str, str], None] | None = None,
) -> SendReport:
    """Claim and send due deliveries: ``ids`` right after a digest, or any (the sweep)."""
    rows = claim(pool, config, ids=ids, limit=limit)
    return send_claimed(pool, providers, links, rows, config, on_settled)
