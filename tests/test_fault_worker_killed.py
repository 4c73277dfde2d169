"""A deep worker SIGKILLed mid-batch loses nothing: the lease expires, the reaper returns
the events to the candidates, and a new worker analyses them."""

from __future__ import annotations

import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from schedules.leases import reap
from store.analysis import requeue
from tasks.app import app as celery_app
from tasks.context import WorkerContext
from tasks.gpu_workers import worker_command
from tasks.queues import DEEP_QUEUES
from tasks.scheduling import dispatch_deep
from tests.api_helpers import kill_group, start_killable_worker, wait_for, worker_env
from tests.clock import at
from tests.factories import make_home
from tests.photos import photo

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


class FrameServer:
    """Serves a photo; while ``hold`` is set, requests hang (a worker stuck mid-batch)."""

    def __init__(self):
        self.hold = threading.Event()
        self.requests = 0
        server = self
        body = photo("person").read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                while server.hold.is_set():
                    if server.hold.wait(0.05) and not server.hold.is_set():
                        break
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the killed worker's connection is gone
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/frame.jpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.hold.clear()
        self.httpd.shutdown()


def start_worker(env: dict[str, str], name: str) -> subprocess.Popen:
    """The deep worker as production runs it: one process, tasks as threads sharing the
    device batcher (tasks/gpu_workers.py)."""
    return start_killable_worker(env, DEEP_QUEUES, name, argv=worker_command(name, 4))


@pytest.fixture
def frames():
    server = FrameServer()
    yield server
    server.close()


def test_events_of_a_killed_worker_are_reaped_and_analysed_by_another(
    db, redis_client, redis_url, database_url, frames
):
    env = dict(
        worker_env(redis_url, database_url),
        VIGIL_WORKER_ROLE="deep",
        VIGIL_DEVICE="cpu",
        VIGIL_FETCH_ALLOWED_NETWORKS="127.0.0.1/32",
    )
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]
    with db.connection() as conn:
        home, camera = make_home(conn)
        events = [
            conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score,"
                " image_url, priority) VALUES (%s, %s, 'front_door', 'security', 0.9, %s, 0.9)"
                " RETURNING id",
                (home, camera, frames.url),
            ).fetchone()["id"]
            for _ in range(2)  # within the home's cap for both dispatches
        ]
    for event in events:
        CandidateStore(redis_client).add(home, event, "premium", 0.9)
    config = SchedulerConfig()
    ctx = WorkerContext.from_environ(env)

    frames.hold.set()  # the first worker will hang fetching its batch
    first = start_worker(env, "doomed")
    try:
        assert sum(dispatch_deep(ctx, config).dispatched.values()) == 2
        wait_for(lambda: frames.requests > 0, timeout=90)  # mid-batch now
    finally:
        kill_group(first, signal.SIGKILL)
    with db.connection() as conn:
        statuses = {
            r["status"]
            for r in conn.execute(
                "SELECT status FROM events WHERE id = ANY(%s)", (events,)
            ).fetchall()
        }
    assert statuses == {"processing"}  # claimed, never finished

    # Past the lease deadline the reaper hands them back (one attempt counted).
    expired = config.processing_timeout_s * 1000 + 1000
    report = reap(at(redis_client, expired), config)
    assert sorted(int(r.event_id) for r in report.returned) == events and not report.failed
    requeue(ctx.pool, events)

    frames.hold.clear()
    second = start_worker(env, "rescuer")
    try:
        assert sum(dispatch_deep(ctx, config).dispatched.values()) == 2

        def analysed():
            with db.connection() as conn:
                rows = conn.execute(
                    "SELECT status, attempts FROM events WHERE id = ANY(%s)", (events,)
                ).fetchall()
            done = all(r["status"] == "analyzed" for r in rows)
            # The lease ends just after Postgres commits the outcome, so wait for both.
            return rows if done and redis_client.zcard("inflight") == 0 else None

        rows = wait_for(analysed, timeout=90)
    finally:
        kill_group(second, signal.SIGTERM)
    assert [r["attempts"] for r in rows] == [2, 2]
    with db.connection() as conn:
        labels = conn.execute(
            "SELECT count(DISTINCT event_id) AS n FROM detections WHERE label = 'person'"
        ).fetchone()["n"]
    assert labels == 2
