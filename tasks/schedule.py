"""The Celery beat schedule, built from the task objects in one place.

Every entry expires before its next run, so a beat that fell behind, or a second beat,
never piles up stale runs: a late message is dropped and the next one follows. A second
beat is harmless anyway: the tick holds a lock, and every step is atomic.

Each task named here is declared with ``tasks.monitoring.HOUSEKEEPING``: it sends Flower no
task event unless it fails (tests/test_task_registry.py holds the two lists equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Task

from schedules.config import SchedulerConfig
from tasks import deletion, digest, maintenance, scheduling

EXPIRES_FRACTION = 0.9
# Sweeps with fixed periods; the triage periods are settings (SCHEDULER_*_INTERVAL_S).
RECONCILE_EVERY_S = 30.0
FLUSH_SUMMARIES_EVERY_S = 10.0
# Settled events whose digest message was lost still get their decision.
DIGEST_UNDIGESTED_EVERY_S = 30.0
# Outbox retries and expired send leases: due times live in the rows, not in countdowns.
SEND_DUE_EVERY_S = 2.0
# Unacknowledged life-safety alerts climb their escalation chain: due times live in rows.
ESCALATE_DUE_EVERY_S = 2.0
# Ended snoozes are deleted; an ended one already means nothing, so this is only tidying.
PRUNE_SNOOZES_EVERY_S = 60.0
# History kept per plan: each run deletes what expired since, in short bounded batches.
RETENTION_EVERY_S = 600.0
# Blobs queued by retention, evictions and deletions go once no event names them.
COLLECT_BLOB_GARBAGE_EVERY_S = 60.0
# A filling disk is noticed within a minute, before ingest can fail.
GUARD_DISK_EVERY_S = 60.0
# Months of events made ahead and expired months dropped: both have months of slack.
MAINTAIN_PARTITIONS_EVERY_S = 3600.0
# Blobs a killed writer left unnamed cost only space: a bounded slice of the store a run.
SWEEP_ORPHAN_BLOBS_EVERY_S = 3 * 3600.0
# Deletion jobs a lost message or a killed worker left; a request also sends the sweep.
SWEEP_DELETIONS_EVERY_S = 5.0


@dataclass(frozen=True)
class Periodic:
    task: Task
    every_s: float

    def entry(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "schedule": self.every_s,
            "options": {"expires": self.every_s * EXPIRES_FRACTION},
        }


def periodic_tasks(config: SchedulerConfig) -> list[Periodic]:
    return [
        Periodic(scheduling.tick, config.tick_interval_s),
        Periodic(scheduling.feed_lite, config.lite_interval_s),
        Periodic(scheduling.reap, config.reap_interval_s),
        Periodic(scheduling.expire, config.expire_interval_s),
        Periodic(scheduling.reconcile, RECONCILE_EVERY_S),
        Periodic(digest.flush_summaries, FLUSH_SUMMARIES_EVERY_S),
        Periodic(digest.digest_undigested, DIGEST_UNDIGESTED_EVERY_S),
        Periodic(digest.send_due, SEND_DUE_EVERY_S),
        Periodic(digest.escalate_due, ESCALATE_DUE_EVERY_S),
        Periodic(digest.prune_snoozes, PRUNE_SNOOZES_EVERY_S),
        Periodic(maintenance.retention, RETENTION_EVERY_S),
        Periodic(maintenance.collect_blob_garbage, COLLECT_BLOB_GARBAGE_EVERY_S),
        Periodic(maintenance.guard_disk_space, GUARD_DISK_EVERY_S),
        Periodic(maintenance.maintain_partitions, MAINTAIN_PARTITIONS_EVERY_S),
        Periodic(maintenance.sweep_orphan_blobs, SWEEP_ORPHAN_BLOBS_EVERY_S),
        Periodic(deletion.sweep_deletions, SWEEP_DELETIONS_EVERY_S),
    ]


def beat_schedule(config: SchedulerConfig) -> dict[str, dict[str, Any]]:
    """``app.conf.beat_schedule``: one entry per periodic task, keyed by its name."""
    return {p.task.name: p.entry() for p in periodic_tasks(config)}
