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
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, Literal

from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from notify.actions import HAS_BOX, LABEL_PARAMS
from notify.links import Links
from notify.outbox import ClaimedDelivery
from notify.payload import build_message, ttl_s
from notify.push import Outcome, PlatformProviders, SendResult
from vigil.settings import Settings
from vigil.vocabulary import DeliveryStatus

log = logging.getLogger(__name__)

# What became of one claimed delivery: its new status, or lost_lease when another attempt
# took it over meanwhile and this one's answer was not recorded.
LOST_LEASE: Final = "lost_lease"
SendStatus = DeliveryStatus | Literal["lost_lease"]
NO_PROVIDER = "none"  # recorded when no provider was asked (phone removed, push expired)

_FINAL = {
    Outcome.SENT: DeliveryStatus.SENT,
    Outcome.INVALID_TOKEN: DeliveryStatus.INVALID_TOKEN,
    Outcome.FAILED: DeliveryStatus.FAILED,
}


@dataclass(frozen=True)
class SenderConfig:
    lease_s: float = 30.0  # above the providers' request timeout
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    threads: int = 8  # concurrent provider requests per sender

    @classmethod
    def from_settings(cls, settings: Settings) -> SenderConfig:
        """PUSH_LEASE_S, PUSH_MAX_ATTEMPTS, PUSH_BACKOFF_BASE_S, PUSH_BACKOFF_MAX_S and
        PUSH_THREADS."""
        return cls(
            lease_s=settings.push_lease_s,
            max_attempts=settings.push_max_attempts,
            backoff_base_s=settings.push_backoff_base_s,
            backoff_max_s=settings.push_backoff_max_s,
            threads=settings.push_threads,
        )


@dataclass
class SendReport:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # final status → count
    by_provider: Counter[str] = field(default_factory=Counter)  # provider → sent
    resent_after_lease: int = 0  # reclaimed from a sender that vanished mid-send


@dataclass(frozen=True)
class Sent:
    """How one claimed delivery ended: its provider, final status, and how long the
    provider's request took (None when no request was made: no device, expired, no token)."""

    provider: str
    status: SendStatus
    request_s: float | None = None


# Runs after each answer is committed: the live stream, the workers' metrics.
OnSettled = Callable[[ClaimedDelivery, Sent], None]


@dataclass(frozen=True)
class _Lease:
    id: int
    reclaimed: bool


@dataclass(frozen=True)
class _Settlement:
    """What to record for one attempt."""

    provider: str
    status: DeliveryStatus
    result: SendResult
    next_in_s: float | None = None  # pending again after this long


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
RETURNING d.id, due.was = 'sending' AS reclaimed
"""

# With what decides the push's actions: the phone's member's role, and whether the alert
# has a box to mute (a detection of its labels, on a frame of known size, of a camera).
_HAS_BOX = HAS_BOX.format(event="e.id", groups="n.labels")
_DETAILS = f"""
SELECT d.id, d.attempts, d.push_id, d.device_id, d.created_at, d.notification_id,
       d.critical, n.home_id, n.event_id, n.kind, n.title, n.body, n.data,
       dev.push_token, dev.platform,
       (e.snapshot_key IS NOT NULL OR e.snapshot IS NOT NULL) AS has_snapshot,
       m.role AS member_role, n.life_safety,
       coalesce(e.device_id IS NOT NULL AND e.frame_width IS NOT NULL
                AND e.frame_height IS NOT NULL AND {_HAS_BOX}, false) AS has_box,
       now() AS now,
       d.id = ANY(%(reclaimed)s) AS reclaimed
FROM deliveries d
JOIN notifications n ON n.id = d.notification_id
LEFT JOIN devices dev ON dev.id = d.device_id
LEFT JOIN home_members m ON m.home_id = dev.home_id AND m.user_id = dev.user_id
LEFT JOIN events e ON e.id = n.event_id
WHERE d.id = ANY(%(ids)s)
ORDER BY d.id
"""

_SETTLE = """
UPDATE deliveries SET
    status = %(status)s, provider = %(provider)s,
    provider_id = coalesce(%(provider_id)s, provider_id),
    last_status = %(http)s, last_error = %(error)s, claimed_until = NULL,
    sent_at = CASE WHEN %(status)s = 'sent' THEN now() END,
    next_attempt_at = CASE WHEN %(next_in_s)s::float8 IS NULL
        THEN next_attempt_at
        ELSE now() + make_interval(secs => %(next_in_s)s::float8) END
WHERE id = %(id)s AND status = 'sending' AND attempts = %(attempts)s
"""


def claim(
    pool: ConnectionPool,
    config: SenderConfig,
    ids: Sequence[int] | None = None,
    limit: int = 100,
) -> list[ClaimedDelivery]:
    """Lease due deliveries (only ``ids`` when given) and return them with what to send."""
    only = "AND d.id = ANY(%(ids)s)" if ids is not None else ""
    params = {"limit": limit, "lease_s": config.lease_s, "ids": list(ids or [])}
    with pool.connection() as conn:
        with conn.transaction():
            leases = (
                conn.cursor(row_factory=class_row(_Lease))
                .execute(_CLAIM.format(only=only), params)
                .fetchall()
            )
        if not leases:
            return []
        leased = {
            "ids": [lease.id for lease in leases],
            "reclaimed": [lease.id for lease in leases if lease.reclaimed],
            **LABEL_PARAMS,
        }
        details = conn.cursor(row_factory=class_row(ClaimedDelivery))
        return details.execute(_DETAILS, leased).fetchall()


def backoff_s(attempts: int, config: SenderConfig, retry_after_s: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    delay = min(config.backoff_max_s, config.backoff_base_s * 2 ** max(0, attempts - 1))
    delay *= random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, config.backoff_max_s))
    return delay


def _age_s(row: ClaimedDelivery) -> float:
    return (row.now - row.created_at).total_seconds()


def _attempt(
    providers: PlatformProviders, links: Links, row: ClaimedDelivery
) -> tuple[str, SendResult, float | None]:
    """Ask the phone's provider once: (the provider's name, its answer, the request's
    duration in seconds, or None when no request was made)."""
    if row.device_id is None or row.platform is None:
        return NO_PROVIDER, SendResult(Outcome.FAILED, reason="device removed"), None
    if _age_s(row) > ttl_s(row.kind):
        return NO_PROVIDER, SendResult(Outcome.FAILED, reason="expired"), None
    provider = providers.for_platform(row.platform)
    if not row.push_token and provider.name != "embedded":
        return provider.name, SendResult(Outcome.INVALID_TOKEN, reason="no push token"), None
    message = build_message(row, links)
    started = time.perf_counter()
    try:
        result = provider.send(message)
    except Exception as error:  # a provider bug must not strand the lease
        log.exception("push provider %s raised", provider.name)
        result = SendResult(Outcome.RETRY, reason=f"{type(error).__name__}: {error}")
    return provider.name, result, time.perf_counter() - started


def _settlement(
    row: ClaimedDelivery, config: SenderConfig, provider: str, result: SendResult
) -> _Settlement:
    """Final, or pending again after a backoff while attempts and the push's ttl allow."""
    if result.outcome is not Outcome.RETRY:
        return _Settlement(provider, _FINAL[result.outcome], result)
    delay = backoff_s(row.attempts, config, result.retry_after_s)
    if row.attempts < config.max_attempts and _age_s(row) + delay <= ttl_s(row.kind):
        return _Settlement(provider, DeliveryStatus.PENDING, result, next_in_s=delay)
    reason = f"gave up after {row.attempts} attempts: {result.reason}"
    gave_up = SendResult(Outcome.FAILED, status=result.status, reason=reason)
    return _Settlement(provider, DeliveryStatus.FAILED, gave_up)


def _settle(pool: ConnectionPool, row: ClaimedDelivery, settlement: _Settlement) -> bool:
    """Write the answer, fenced by the attempt that holds the lease; False if it lost it."""
    result = settlement.result
    params = {
        "status": settlement.status,
        "provider": settlement.provider,
        "provider_id": result.provider_id,
        "http": result.status,
        "error": result.reason,
        "next_in_s": settlement.next_in_s,
        "id": row.id,
        "attempts": row.attempts,
    }
    with pool.connection() as conn, conn.transaction():
        recorded = conn.execute(_SETTLE, params).rowcount > 0
        dead_token = settlement.status is DeliveryStatus.INVALID_TOKEN and bool(row.push_token)
        if recorded and dead_token:
            # Prune the token, unless the phone registered a new one meanwhile.
            conn.execute(
                "UPDATE devices SET push_token = NULL WHERE id = %s AND push_token = %s",
                (row.device_id, row.push_token),
            )
    return recorded


def send_one(
    pool: ConnectionPool,
    providers: PlatformProviders,
    links: Links,
    config: SenderConfig,
    row: ClaimedDelivery,
) -> Sent:
    """Send one claimed delivery and record the answer."""
    provider, result, request_s = _attempt(providers, links, row)
    settlement = _settlement(row, config, provider, result)
    if not _settle(pool, row, settlement):
        return Sent(provider, LOST_LEASE, request_s)
    return Sent(provider, settlement.status, request_s)


def send_claimed(
    pool: ConnectionPool,
    providers: PlatformProviders,
    links: Links,
    rows: Sequence[ClaimedDelivery],
    config: SenderConfig = SenderConfig(),
    on_settled: OnSettled | None = None,
) -> SendReport:
    """Send claimed rows concurrently (one request each); ``on_settled(row, sent)`` runs
    after each answer is committed."""
    report = SendReport(claimed=len(rows))
    report.resent_after_lease = sum(1 for row in rows if row.reclaimed)

    def work(row: ClaimedDelivery) -> tuple[ClaimedDelivery, Sent]:
        return row, send_one(pool, providers, links, config, row)

    if len(rows) <= 1:
        results = [work(row) for row in rows]
    else:
        with ThreadPoolExecutor(max_workers=min(config.threads, len(rows))) as executor:
            results = list(executor.map(work, rows))
    for row, sent in results:
        report.outcomes[sent.status] += 1
        if sent.status == DeliveryStatus.SENT:
            report.by_provider[sent.provider] += 1
        if on_settled is not None:
            on_settled(row, sent)
    return report


def send_deliveries(
    pool: ConnectionPool,
    providers: PlatformProviders,
    links: Links,
    ids: Sequence[int] | None = None,
    config: SenderConfig = SenderConfig(),
    limit: int = 100,
    on_settled: OnSettled | None = None,
) -> SendReport:
    """Claim and send due deliveries: ``ids`` right after a digest, or any (the sweep)."""
    rows = claim(pool, config, ids=ids, limit=limit)
    return send_claimed(pool, providers, links, rows, config, on_settled)
