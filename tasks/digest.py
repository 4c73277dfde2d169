"""Digest and push tasks: decide analysed events, fold summaries, send the outbox.

Alerts are sent by the digest task itself right after its decisions commit (no extra
broker hop between "analysed" and the provider call); whatever that attempt leaves
pending — a provider 500, a timeout, a worker that died — is picked up by the
``notify.send_due`` sweep that beat runs every few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import shared_task

from notify import live
from notify.digest import DigestReport, digest_events, undigested
from notify.sender import SendReport, send_deliveries
from notify.summaries import flush_summaries
from tasks.context import WorkerContext, context

log = logging.getLogger(__name__)

SWEEP_LIMIT = 200
# A settled event normally reaches the digest within a second (chained to its batch); one
# still undecided after this long lost its message, and the sweep decides it.
UNDIGESTED_AFTER_S = 60.0


def _publisher(ctx: WorkerContext):
    def settled(row: dict[str, Any], provider: str, status: str) -> None:
        if status in ("pending", "lost_lease"):
            return  # retried later, or another attempt owns it: published when final
        kind = "push.delivered" if status == "sent" else "push.failed"
        live.publish(
            ctx.redis, row["home_id"], kind,
            {"notification_id": row["notification_id"], "device_id": row["device_id"],
             "provider": provider, "status": status, "kind": row["kind"]},
        )  # fmt: skip

    return settled


def send(ctx: WorkerContext, ids: Sequence[int] | None) -> SendReport:
    return send_deliveries(
        ctx.pool, ctx.providers, ctx.links, ids=ids, config=ctx.sender_config,
        limit=SWEEP_LIMIT, on_settled=_publisher(ctx),
    )  # fmt: skip


def publish_alerts(ctx: WorkerContext, report: DigestReport) -> None:
    """An ``alert`` entry on each alerted home's live log."""
    for alert in report.alerts:
        live.publish(
            ctx.redis, alert.home_id, "alert",
            {"event_id": alert.event_id, "notification_id": alert.notification_id,
             "title": alert.title},
        )  # fmt: skip


def _summary(report: SendReport) -> dict:
    return {"claimed": report.claimed, **dict(report.outcomes)}


@shared_task(name="notify.digest", acks_late=True, soft_time_limit=60, time_limit=90)
def digest(event_ids: list[int]) -> dict:
    ctx = context()
    report = digest_events(ctx.pool, event_ids)
    publish_alerts(ctx, report)
    pushed = send(ctx, report.deliveries) if report.deliveries else SendReport()
    return {
        "alerts": [a.event_id for a in report.alerts],
        "held": report.held,
        "pushes": _summary(pushed),
    }


@shared_task(name="notify.flush_summaries", acks_late=True, soft_time_limit=60, time_limit=90)
def summaries() -> int:
    ctx = context()
    report = flush_summaries(ctx.pool)
    for home_id, notification_id in report.summaries:
        live.publish(ctx.redis, home_id, "summary", {"notification_id": notification_id})
    if report.deliveries:
        send(ctx, report.deliveries)
    return len(report.summaries)


@shared_task(name="notify.send", acks_late=True, soft_time_limit=60, time_limit=90)
def send_task(delivery_ids: list[int]) -> dict:
    """Send these deliveries now (alerts queued outside the digest, e.g. provisional)."""
    return _summary(send(context(), delivery_ids))


@shared_task(name="notify.send_due", acks_late=True, soft_time_limit=50, time_limit=60)
def send_due() -> dict:
    """The sweep: retries whose backoff ended, and leases of senders that vanished."""
    report = send(context(), None)
    if report.resent_after_lease:
        log.warning("resent %d deliveries whose sender vanished", report.resent_after_lease)
    return _summary(report)


@shared_task(name="notify.digest_undigested", acks_late=True, soft_time_limit=50, time_limit=60)
def digest_undigested() -> list[int]:
    """The sweep behind the chain: settled events nobody decided get their decision (and
    their alert) now, so a lost message never leaves a household unaware."""
    ctx = context()
    report = digest_events(ctx.pool, undigested(ctx.pool, UNDIGESTED_AFTER_S, SWEEP_LIMIT))
    decided = [a.event_id for a in report.alerts] + report.held + report.suppressed
    if decided:
        log.warning("decided %d settled events whose digest message was lost", len(decided))
    publish_alerts(ctx, report)
    if report.deliveries:
        send(ctx, report.deliveries)
    return decided
