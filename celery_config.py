"""Celery settings (lowercase Celery 5 names). ``tasks.app.create_celery`` loads them.

The queues are declared in ``tasks/queues.py``; each task names its own queue where it is
defined, and the beat schedule is built from the task objects in ``tasks/schedule.py``.
"""

from __future__ import annotations

from kombu import Queue

from tasks.queues import QUEUES, SCHEDULER_QUEUE
from vigil.settings import current

# The broker may live on its own Redis database (CELERY_BROKER_URL); by default it shares
# REDIS_URL with the candidate store.
broker_url = current().broker_url or "redis://127.0.0.1:6379/0"
# Results are not read back: chains pass them worker to worker, Postgres holds outcomes.
result_backend = None
task_ignore_result = True

task_queues = [Queue(name) for name in QUEUES]
task_default_queue = SCHEDULER_QUEUE

# A message is acknowledged only after its task ran, and one whose worker died is
# redelivered; each worker process reserves one message at a time, so priority stays in
# the candidate ZSETs rather than in messages a busy worker holds.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# visibility_timeout: longer than any task may run (deep batches are limited to 240 s), so
# a slow batch is never redelivered while still running.
# socket_connect_timeout: a reconnection attempt to a host that does not answer gives up
# after 5 s rather than the kernel's minutes; socket_timeout: a command on a half-open socket
# (an ack, a publish) fails after 10 s instead of hanging the worker's event loop. Both are
# far above a healthy Redis's answer times; BRPOP itself waits 1 s (kombu's brpop_timeout).
# retry_on_timeout stays off: it would replay writes and turn off kombu's batched publishing.
broker_transport_options = {
    "visibility_timeout": 3600,
    "socket_connect_timeout": 5.0,
    "socket_timeout": 10.0,
}
# A worker outlives any broker outage: it keeps reconnecting (Celery's default gives up and
# exits after 100 attempts), with the short backoff of tasks.app.BrokerConnection.
broker_connection_retry = True
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
# Tasks running when the broker connection drops run to the end. Their ack is lost with the
# connection, so Redis redelivers the message after visibility_timeout, which is harmless: a
# redelivered deep or lite batch skips settled events and the digest is idempotent. Stated
# here because Celery 6 will cancel them by default.
worker_cancel_long_running_tasks_on_connection_loss = False

task_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True
# Task events, for Flower. The beat's tasks send none unless they fail, and each batch
# shows its size (tasks/monitoring.py): Flower shows the work, not the housekeeping.
worker_send_task_events = True
# No "task-sent" event from producers: it doubled the broker work of every task sent
# (measured 3.4 -> 2.0 ms per send); Flower still sees each task from the workers' events.
task_send_sent_event = False

# Beat keeps its schedule in memory: every entry is a short interval that expires before its
# next run, so there is nothing worth persisting, and a platform's filesystem may be
# ephemeral or read-only (PersistentScheduler needs a writable schedule file at start).
beat_scheduler = "celery.beat:Scheduler"
