"""Worker half end to end: a real Celery worker process, the real broker and databases.

An event row and its candidate go in; the tick dispatches it to a deep worker, which reads
the frame from the blob store, runs the real detector on a real photo, stores detections and
its snapshot, clears the lease and chains the digest, which records the alert.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from notify.policy_store import save_policy
from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from store.blobs import BlobStore, blob_store
from tasks.app import app as celery_app
from tasks.context import WorkerContext
from tasks.scheduling import dispatch_deep
from tests.api_helpers import celery_worker, wait_for, worker_env
from tests.factories import make_home
from tests.photos import photo
from vigil.settings import current

pytestmark = pytest.mark.e2e

ALL_QUEUES = (
    "deep_processing_enterprise,deep_processing_premium,deep_processing_standard,"
    "lite,digest,scheduler"
)


class CameraHandler(BaseHTTPRequestHandler):
    """A camera's web server: /broken always answers 503, /flaky/<key> answers 503 twice
    and then the photo, /gone answers 404."""

    server: CameraServer

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        if self.path.startswith("/flaky/") and self.server.hits[self.path] > 2:
            body = photo("person").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404 if self.path == "/gone" else 503)

    def log_message(self, format: str, *args: object) -> None:
        pass


class CameraServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CameraHandler)
        self.hits: Counter[str] = Counter()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


@pytest.fixture(scope="module")
def camera() -> Iterator[CameraServer]:
    server = CameraServer()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fcm() -> Iterator[FcmServer]:
    with FcmServer() as server:
        yield server


@pytest.fixture(scope="module")
def worker(redis_url, database_url, fcm):
    env = dict(
        worker_env(redis_url, database_url),
        VIGIL_WORKER_ROLE="deep",
        VIGIL_DEVICE="cpu",
        VIGIL_FETCH_ALLOWED_NETWORKS="127.0.0.1/32",  # the camera server above
        FETCH_BACKOFF_BASE_S="0.05",
        FETCH_BACKOFF_MAX_S="0.2",
        **push_env(fcm, None),
    )
    celery_app.conf.broker_url = env["CELERY_BROKER_URL"]  # this process sends the batches
    with celery_worker(env, ALL_QUEUES, "e2e") as proc:
        env["__log__"] = proc.log_text  # type: ignore[assignment]
        yield env


def session_blobs() -> BlobStore:
    """The blob store the worker shares with this process (the session's ``BLOB_ROOT``)."""
    return blob_store(current())


def add_event(
    db,
    redis_client,
    home,
    camera,
    image: bytes | None,
    location="front_door",
    url=None,
    migrated=True,
) -> int:
    """A queued event: its upload in the blob store as the API puts it, or (``migrated``
    False) in the row, as written before the blob store."""
    key = session_blobs().put(image) if image is not None and migrated else None
    with db.connection() as conn:
        event = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score, image,"
            " image_key, image_url, priority)"
            " VALUES (%s, %s, %s, 'security', 0.9, %s, %s, %s, 0.9) RETURNING id",
            (home, camera, location, None if key else image, key, url),
        ).fetchone()["id"]
    CandidateStore(redis_client).add(home, event, "premium", 0.9)
    return event


def test_a_dispatched_photo_is_analysed_and_the_person_alerted(worker, db, redis_client):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away")
    event = add_event(db, redis_client, home, camera, photo("person").read_bytes())
    ctx = WorkerContext.from_environ(env_of(worker))
    report = dispatch_deep(ctx, SchedulerConfig())
    assert report.dispatched.get("premium") == 1

    def settled():
        with db.connection() as conn:
            row = conn.execute(
                "SELECT status, digest FROM events WHERE id = %s", (event,)
            ).fetchone()
        return row if row["digest"] else None

    row = wait_for(settled, timeout=90)
    assert row["status"] == "analyzed" and row["digest"] == "alert"
    with db.connection() as conn:
        labels = {
            r["label"]
            for r in conn.execute(
                "SELECT label FROM detections WHERE event_id = %s", (event,)
            ).fetchall()
        }
        alert = conn.execute(
            "SELECT kind, title FROM notifications WHERE event_id = %s", (event,)
        ).fetchone()
    assert {"person", "dog"} <= labels
    assert alert["kind"] == "alert" and alert["title"].startswith("Person")
    assert redis_client.zcard("inflight") == 0  # the lease was cleared
    with db.connection() as conn:
        row = conn.execute(
            "SELECT snapshot_key, snapshot FROM events WHERE id = %s", (event,)
        ).fetchone()
    assert row["snapshot"] is None  # in the blob store, named by its key
    snapshot = session_blobs().get(row["snapshot_key"])
    assert snapshot is not None
    with Image.open(io.BytesIO(snapshot)) as drawn:  # the annotated frame
        assert drawn.format == "JPEG" and drawn.size == (640, 424)


def test_a_refused_image_fails_visibly_and_the_rest_of_the_batch_is_analysed(
    worker, db, redis_client
):
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="home")
    good = add_event(db, redis_client, home, camera, photo("dog").read_bytes(), "backyard")
    # Written before the blob store: the worker reads it from the row.
    bad = add_event(
        db, redis_client, home, camera, b"\xff\xd8\xff\xe0 truncated", "backyard", migrated=False
    )
    dispatch_deep(WorkerContext.from_environ(env_of(worker)), SchedulerConfig())

    def statuses():
        with db.connection() as conn:
            rows = conn.execute(
                "SELECT id, status, error FROM events WHERE id = ANY(%s)", ([good, bad],)
            ).fetchall()
        by_id = {r["id"]: r for r in rows}
        return by_id if all(r["status"] in ("analyzed", "failed") for r in rows) else None

    by_id = wait_for(statuses, timeout=90)
    assert by_id[good]["status"] == "analyzed"
    assert by_id[bad]["status"] == "failed" and by_id[bad]["error"].startswith("image_corrupt")


def env_of(worker: dict) -> dict[str, str]:
    return {k: v for k, v in worker.items() if not k.startswith("__")}


def settled_rows(db, event_ids: list[int]):
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, status, digest, digest_reason, error_code, attempts FROM events"
            " WHERE id = ANY(%s)",
            (event_ids,),
        ).fetchall()
    return {r["id"]: r for r in rows} if all(r["digest"] for r in rows) else None


def test_an_armed_home_is_alerted_once_when_its_camera_image_cannot_be_fetched(
    worker, db, redis_client, camera, fcm
):
    with db.connection() as conn:
        armed, armed_cam = make_home(conn, arm_mode="away", email="armed@e.x")
        calm, calm_cam = make_home(conn, arm_mode="disarmed", email="calm@e.x")
    fcm.reset()
    broken = add_event(db, redis_client, armed, armed_cam, None, "garage", camera.url("/broken"))
    ignored = add_event(db, redis_client, calm, calm_cam, None, "garage", camera.url("/broken"))
    dispatch_deep(WorkerContext.from_environ(env_of(worker)), SchedulerConfig())
    rows = wait_for(lambda: settled_rows(db, [broken, ignored]), timeout=90)
    # Retried (503 is transient) up to the configured 3 attempts, then failed by name.
    assert camera.hits["/broken"] == 6
    assert [rows[e]["status"] for e in (broken, ignored)] == ["failed", "failed"]
    assert rows[broken]["error_code"] == "fetch_http_status"
    assert (rows[broken]["digest"], rows[ignored]["digest"]) == ("failsafe", "summary")
    assert rows[ignored]["digest_reason"] == "not_armed"

    def pushed():
        return fcm.accepted or None

    (push,) = wait_for(pushed, timeout=30)
    message = push["message"]
    assert message["token"] == "fcm-token-0-0123456789"
    assert message["notification"]["title"] == (
        "Motion at the garage — the picture could not be analysed"
    )
    assert message["data"]["event_id"] == str(broken)
    assert message["data"]["failsafe"] == "fetch_http_status"
    # A wholly failed batch is a failed task (Flower shows it), and each failure is logged.
    log = wait_for(lambda: (t := worker["__log__"]()) and "BatchFailed" in t and t, timeout=30)
    assert f"analysis failed: event {broken} home {armed} code fetch_http_status" in log
    time.sleep(3)  # nothing else arrives: one alert, no second push
    assert len(fcm.accepted) == 1


def test_a_flaky_camera_is_retried_and_its_event_analysed(worker, db, redis_client, camera):
    with db.connection() as conn:
        home, cam = make_home(conn, arm_mode="home", email="flaky@e.x")
    event = add_event(db, redis_client, home, cam, None, "porch", camera.url("/flaky/1"))
    gone = add_event(db, redis_client, home, cam, None, "porch", camera.url("/gone"))
    dispatch_deep(WorkerContext.from_environ(env_of(worker)), SchedulerConfig())
    rows = wait_for(lambda: settled_rows(db, [event, gone]), timeout=90)
    assert rows[event]["status"] == "analyzed" and camera.hits["/flaky/1"] == 3
    assert rows[gone]["status"] == "failed" and rows[gone]["error_code"] == "fetch_http_status"
    assert camera.hits["/gone"] == 1  # a 404 is final: never retried


def test_a_parked_car_alerts_once_and_again_when_it_moves(worker, db, redis_client):
    """Three pictures of the same parked car (and bicycle) on the drive, then the scene
    mirrored, as if the car had left one side of the drive for the other: the real
    detector, the real digest, one event at a time."""
    with db.connection() as conn:
        home, camera = make_home(conn, arm_mode="away", email="parked@e.x")
        save_policy(conn, home, {"cooldown_s": 0})  # only the memory may hold the car back
    parked = photo("dog").read_bytes()
    with Image.open(io.BytesIO(parked)) as image:
        out = io.BytesIO()
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, "JPEG", quality=90)
    moved = out.getvalue()
    ctx = WorkerContext.from_environ(env_of(worker))
    decided = []
    for picture in (parked, parked, parked, moved):
        event = add_event(db, redis_client, home, camera, picture, "driveway")
        dispatch_deep(ctx, SchedulerConfig())
        rows = wait_for(lambda event=event: settled_rows(db, [event]), timeout=90)
        decided.append((rows[event]["digest"], rows[event]["digest_reason"]))
    assert decided == [
        ("alert", "armed"),
        ("summary", "stationary"),
        ("summary", "stationary"),
        ("alert", "armed"),
    ]
