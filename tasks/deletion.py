"""The deletion sweep: works through the deletion jobs of homes and accounts
(``store.deletion``).

Beat sends it every few seconds, and ``DELETE /homes/<id>`` and ``DELETE /users/me`` send
it the moment they write a job, so a deletion starts at once; beat's runs pick up whatever
a lost message, a killed worker or a full budget left. Each run works for at most
``SWEEP_BUDGET_S`` and hands the rest of a big job back for the next run, so the scheduler
queue it shares never waits long behind it.
"""

from __future__ import annotations

import logging

from celery import shared_task

from store.deletion import DerivedState, run_deletion_jobs
from tasks.context import context
from tasks.monitoring import HOUSEKEEPING
from tasks.queues import SCHEDULER_QUEUE

log = logging.getLogger(__name__)

QUEUE = SCHEDULER_QUEUE
# Events per transaction: each batch holds its rows' locks for as long as it runs.
BATCH = 500
# Jobs one run may take up, and the seconds it may work before handing the rest back.
JOBS_PER_SWEEP = 10
SWEEP_BUDGET_S = 20.0


@shared_task(**HOUSEKEEPING, acks_late=False, soft_time_limit=50, time_limit=60)
def sweep_deletions() -> dict:
    ctx = context()
    run = run_deletion_jobs(
        ctx.pool,
        ctx.blobs,
        BATCH,
        JOBS_PER_SWEEP,
        budget_s=SWEEP_BUDGET_S,
        derived=DerivedState(ctx.shards, ctx.redis),
    )
    if run.failed:
        log.error("deletion jobs failed: %s", list(run.failed))
    return {
        "done": list(run.done),
        "failed": list(run.failed),
        "later": list(run.later),
        "events_deleted": run.events_deleted,
    }
