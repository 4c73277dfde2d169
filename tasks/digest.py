"""Digest and push tasks: decide analysed events, fold summaries, send the outbox.

Alerts are sent by the digest task itself right after its decisions commit (no extra
broker hop between "analysed" and the provider call); whatever that attempt leaves
pending — a provider 500, a timeout, a worker that died — is picked up by the
``tasks.digest.send_due`` sweep that beat runs every few seconds. Life-safety alerts nobody
acknowledged climb their home's escalation chain through the ``tasks.digest.escalate_due``
sweep (``notify.escalation``), whose steps are due times in rows, never countdowns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import shared_task

from notify import escalation, live, snoozes
from notify import summaries as summary_fold
from notify.digest import DigestReport, digest_events, undigested
from notify.outbox import ClaimedDelivery
from notify.sender import LOST_LEASE, OnSettled, SendReport, Sent, send_deliveries
from tasks import metrics as worker_metrics
from tasks.context import WorkerContext, context
from tasks.monitoring import HOUSEKEEPING, BatchTask
from tasks.queues import DIGEST_QUEUE
from vigil.vocabulary import DeliveryStatus

log = logging.getLogger(__name__)

# The queue this module's tasks run on (tasks/routes.py).
QUEUE = DIGEST_QUEUE

SWEEP_LIMIT = 200
# A settled event normally reaches the digest within a second (chained to its batch); one
# still undecided after this long lost its message, and the sweep decides it.
UNDIGESTED_AFTER_S = 60.0


def _on_settled(ctx: WorkerContext) -> OnSettled:
    """Each answer, once committed: counted in the workers' metrics and, when final,
    published on the home's live log."""

    def settled(row: ClaimedDelivery, sent: Sent) -> None:
        worker_metrics.record_push(sent.provider, sent.status, sent.request_s)
        if sent.status in (DeliveryStatus.PENDING, LOST_LEASE):
            return  # retried later, or another attempt owns it: published when final
        kind = "push.delivered" if sent.status == DeliveryStatus.SENT else "push.failed"
        fields = {
            "notification_id": row.notification_id,
            "device_id": row.device_id,
            "provider": sent.provider,
            "status": sent.status,
            "kind": row.kind,
        }
        live.publish(ctx.redis, row.home_id, kind, fields)

    return settled


def push(ctx: WorkerContext, ids: Sequence[int] | None) -> SendReport:
    """Send these deliveries (None: whatever is due) and publish each final outcome."""
    config, on_settled = ctx.sender_config, _on_settled(ctx)
    return send_deliveries(
        ctx.pool,
        ctx.providers,
        ctx.links,
        ids=ids,
        config=config,
        limit=SWEEP_LIMIT,
        on_settled=on_settled,
    )


def publish_alerts(ctx: WorkerContext, report: DigestReport) -> None:
    """An ``alert`` entry on each alerted home's live log."""
    for alert in report.alerts:
        fields = {
            "event_id": alert.event_id,
            "notification_id": alert.notification_id,
            "title": alert.title,
        }
        live.publish(ctx.redis, alert.home_id, "alert", fields)


def publish_escalations(ctx: WorkerContext, steps: Sequence[escalation.Step]) -> None:
    """An ``escalation`` entry on the home's live log per step taken or stop."""
    entries = [
        (
            step.home_id,
            "escalation",
            {
                "notification_id": step.notification_id,
                "step": step.step,
                "members": step.members,  # null: everyone, or a stop
                "pushes": len(step.deliveries),
                "stopped_reason": step.stopped,
                "stopped_by": step.stopped_by,
            },
        )
        for step in steps
    ]
    if entries:
        live.publish_all(ctx.redis, entries)


def _summary(report: SendReport) -> dict:
    return {"claimed": report.claimed, **dict(report.outcomes)}


# ``tier``: the tier of the deep batch that settled these events, for operators (Flower's
# kwargs column); the decision never depends on it.
@shared_task(base=BatchTask, acks_late=True, soft_time_limit=60, time_limit=90)
def digest(event_ids: list[int], tier: str | None = None) -> dict:
    ctx = context()
    report = digest_events(ctx.pool, event_ids, ctx.stationary)
    publish_alerts(ctx, report)
    publish_escalations(ctx, report.escalations)
    pushed = push(ctx, report.deliveries) if report.deliveries else SendReport()
    return {
        "alerts": [a.event_id for a in report.alerts],
        "held": report.held,
        "pushes": _summary(pushed),
    }


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=60, time_limit=90)
def flush_summaries() -> int:
    """Fold held events whose window closed into summaries, and send them."""
    ctx = context()
    report = summary_fold.flush_summaries(ctx.pool)
    for home_id, notification_id in report.summaries:
        live.publish(ctx.redis, home_id, "summary", {"notification_id": notification_id})
    if report.deliveries:
        push(ctx, report.deliveries)
    return len(report.summaries)


@shared_task(base=BatchTask, acks_late=True, soft_time_limit=60, time_limit=90)
def send(delivery_ids: list[int]) -> dict:
    """Send these deliveries now (alerts queued outside the digest, e.g. provisional)."""
    return _summary(push(context(), delivery_ids))


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=50, time_limit=60)
def send_due() -> dict:
    """The sweep: retries whose backoff ended, and leases of senders that vanished."""
    report = push(context(), None)
    if report.resent_after_lease:
        log.warning("resent %d deliveries whose sender vanished", report.resent_after_lease)
    return _summary(report)


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=50, time_limit=60)
def digest_undigested() -> list[int]:
    """The sweep behind the chain: settled events nobody decided get their decision (and
    their alert) now, so a lost message never leaves a household unaware."""
    ctx = context()
    pending = undigested(ctx.pool, UNDIGESTED_AFTER_S, SWEEP_LIMIT)
    report = digest_events(ctx.pool, pending, ctx.stationary)
    decided = [a.event_id for a in report.alerts] + report.held + report.suppressed
    if decided:
        log.warning("decided %d settled events whose digest message was lost", len(decided))
    publish_alerts(ctx, report)
    publish_escalations(ctx, report.escalations)
    if report.deliveries:
        push(ctx, report.deliveries)
    return decided


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=50, time_limit=60)
def escalate_due() -> dict:
    """The escalation sweep: each life-safety alert nobody acknowledged or read within its
    home's delay reaches the next member of the chain (critical pushes), then everyone."""
    ctx = context()
    report = escalation.advance_due(ctx.pool, SWEEP_LIMIT)
    pushed = push(ctx, report.deliveries) if report.deliveries else SendReport()
    publish_escalations(ctx, report.steps)
    return {"steps": len(report.steps), "pushes": _summary(pushed)}


@shared_task(**HOUSEKEEPING, acks_late=True, soft_time_limit=20, time_limit=30)
def prune_snoozes() -> int:
    """Snoozes that ended mean nothing: a bounded batch of them is deleted each run."""
    return snoozes.prune_expired(context().pool)
