"""Digest tasks: decide each analysed event; fold held events into summaries."""

from __future__ import annotations

from celery import shared_task

from notify.digest import digest_events, flush_summaries
from tasks.context import context


@shared_task(name="notify.digest", acks_late=True, soft_time_limit=60, time_limit=90)
def digest(event_ids: list[int]) -> dict:
    report = digest_events(context().pool, event_ids)
    return {"alerts": report.alerts, "held": report.held, "pushes": report.pushes}


@shared_task(name="notify.flush_summaries", acks_late=True, soft_time_limit=60, time_limit=90)
def summaries() -> int:
    return flush_summaries(context().pool)
