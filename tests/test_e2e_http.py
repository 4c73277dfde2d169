"""End to end over real HTTP: gunicorn on a free port, a real Celery worker (deep, lite and
digest queues, on CPU), the tick run by the test, the real broker and databases.

A phone app logs in, registers its devices and posts events — a multipart upload and the
source's JSON body with an ``image_url`` on a local static server (the worker is allowed
127.0.0.1/32, which it refuses by default) — then polls ``GET /events/<id>`` until the
detector's labels are there. The worker pushes the alert to the local APNs server (HTTP/2,
token auth), whose payload carries a signed snapshot link the phone fetches without a token;
the live stream saw it all.
"""

from __future__ import annotations

import os
import secrets
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import redis

from demo.client import ApiClient
from demo.processes import Child, stop_all, venv_env
from demo.stack import start_web
from demo.static import LOOPBACK_NETWORK, StaticServer
from devservers.apns_server import ApnsServer
from devservers.push_env import push_env
from notify import live
from notify.summaries import flush_summaries
from schedules.config import SchedulerConfig
from tasks.app import app as celery_app
from tasks.app import worker_argv
from tasks.context import WorkerContext
from tasks.scheduling import dispatch_deep
from tests.api_helpers import PASSWORD, TEST_WORKER_FLAGS, api_app, broker_url, wait_for
from tests.photos import PHOTOS, photo
from webapp.cli import create_user

pytestmark = pytest.mark.e2e

QUEUES = "deep_processing_enterprise,deep_processing_premium,deep_processing_standard,lite,digest"
SETTLED = ("analyzed", "skipped", "failed")


IOS_TOKEN = "a1" * 32


@pytest.fixture(scope="module")
def apns():
    with ApnsServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(redis_url, database_url, tmp_path_factory, apns):
    """gunicorn + one Celery worker as real processes, a static image server, local APNs."""
    broker = broker_url(redis_url)
    redis.Redis.from_url(broker).flushdb()  # no batches left over from another module
    env = venv_env(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker,
        JWT_SECRET_KEY=secrets.token_urlsafe(32),
        VIGIL_WORKER_ROLE="deep",
        VIGIL_DEVICE="cpu",
        VIGIL_FETCH_ALLOWED_NETWORKS=LOOPBACK_NETWORK,
        **push_env(None, apns),
    )
    celery_app.conf.broker_url = broker  # this process sends the tick's batches
    log_dir = tmp_path_factory.mktemp("e2e-http-logs")
    children: list[Child] = []
    try:
        web, base_url = start_web(env, log_dir, workers=1, threads=4)
        children.append(web)
        env["PUBLIC_BASE_URL"] = base_url  # the links pushes carry point at this server
        worker_cmd = worker_argv(QUEUES, "e2e-http", 1, *TEST_WORKER_FLAGS)
        worker = Child("worker", worker_cmd, env=env, log_dir=log_dir)
        children.append(worker)
        worker.wait_for_log("ready.", 90)
        worker.wait_for_log("deep model", 90)
        with StaticServer(PHOTOS) as static:
            client = redis.Redis.from_url(redis_url, decode_responses=True)
            yield {"base_url": base_url, "env": env, "static": static, "redis": client}
    finally:
        stop_all(children)


@pytest.fixture
def phone_app(stack, db, redis_client):
    """A premium user's phone app, logged in over HTTP, with a camera and a phone."""
    for app in api_app(stack["env"]["DATABASE_URL"], stack["env"]["REDIS_URL"]):
        with app.app_context():
            _, home_id = create_user("ana@example.com", PASSWORD, "Home", "premium", "UTC")
    api = ApiClient(stack["base_url"])
    api.login("ana@example.com", PASSWORD)
    api.call(
        "POST",
        "/devices",
        {"home_id": home_id, "kind": "camera", "platform": "camera", "name": "test_device_001"},
        expect=(201,),
    )
    api.call(
        "POST",
        "/devices",
        {
            "home_id": home_id,
            "kind": "phone",
            "platform": "ios",
            "name": "ana",
            "push_token": IOS_TOKEN,
        },
        expect=(201,),
    )
    api.home_id = home_id
    yield api
    api.close()


def arm(api: ApiClient, mode: str) -> None:
    api.call("PATCH", f"/homes/{api.home_id}", {"arm_mode": mode})


def poll_until_settled(api: ApiClient, stack, event_id: int, timeout: float = 90.0) -> dict:
    """Run the tick (beat's job) and read the event back over HTTP until it is settled."""
    ctx, config = WorkerContext.from_environ(stack["env"]), SchedulerConfig()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatch_deep(ctx, config)
        event = api.call("GET", f"/events/{event_id}")
        if event["status"] in SETTLED:
            return event
        time.sleep(0.25)
    raise AssertionError(f"event {event_id} not settled after {timeout}s: {event['status']}")


def digest_of(db, event_id: int) -> str | None:
    with db.connection() as conn:
        return conn.execute("SELECT digest FROM events WHERE id = %s", (event_id,)).fetchone()[
            "digest"
        ]


def test_an_uploaded_photo_is_analysed_over_http_and_the_owner_alerted(stack, phone_app, db, apns):
    arm(phone_app, "away")
    fields = {
        "device_id": "test_device_001",
        "location": "front_door",
        "mode": "security",
        "motion_score": 0.9,
    }
    status, body = phone_app.post_event_upload(fields, photo("person").read_bytes())
    assert status == 202, body

    event = poll_until_settled(phone_app, stack, body["event_id"])

    assert event["status"] == "analyzed" and event["has_image"]
    assert {"person", "dog"} <= {d["label"] for d in event["detections"]}
    assert wait_for(lambda: digest_of(db, event["id"])) == "alert"
    (push,) = wait_for(lambda: [a for a in apns.accepted if a["token"] == IOS_TOKEN])
    aps = push["payload"]["aps"]
    assert aps["alert"]["title"] == "Person at the front door"
    assert push["payload"]["event_id"] == str(event["id"])
    # The phone fetches the annotated snapshot through the signed link, without a token.
    with urllib.request.urlopen(push["payload"]["snapshot_url"], timeout=10) as response:
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.read(2) == b"\xff\xd8"

    # APNs records the push before it answers; the worker then settles the row and
    # publishes push.delivered, so both are waited for.
    def delivered():
        notes = phone_app.call("GET", f"/notifications?event_id={event['id']}")["notifications"]
        sent = notes and all(d["status"] == "sent" for d in notes[0]["deliveries"])
        return notes if sent else None

    (alert,) = wait_for(delivered)
    assert alert["kind"] == "alert" and alert["title"].startswith("Person")
    (delivery,) = alert["deliveries"]  # pushed to the registered phone, through APNs
    assert (delivery["provider"], delivery["status"], delivery["attempts"]) == ("apns", "sent", 1)

    def live_kinds():
        read = live.read(stack["redis"], phone_app.home_id, "0-0", None, 100)
        kinds = [kind for _, kind, _ in read]
        return kinds if "push.delivered" in kinds else None

    assert wait_for(live_kinds)[:3] == ["event.analyzed", "alert", "push.delivered"]


def test_the_source_json_body_with_an_image_url_is_analysed_and_summarised(stack, phone_app, db):
    arm(phone_app, "home")
    source_body = {
        "image_url": stack["static"].url("dog.jpg"),
        "device_id": "test_device_001",
        "location": "backyard",
        "mode": "security",
        "motion_score": 0.8,
    }
    status, body = phone_app.post_event_json(source_body)
    assert status == 202, body

    event = poll_until_settled(phone_app, stack, body["event_id"])

    assert event["status"] == "analyzed", event["error"]
    assert event["image_url"] == source_body["image_url"] and not event["has_image"]
    assert {"dog", "bicycle"} <= {d["label"] for d in event["detections"]}
    assert wait_for(lambda: digest_of(db, event["id"])) == "summary"
    later = datetime.now(UTC) + timedelta(hours=1)
    assert len(flush_summaries(db, now=later).summaries) == 1  # the beat's sweep, sooner
    with db.connection() as conn:
        summary = conn.execute(
            "SELECT kind, body FROM notifications WHERE home_id = %s", (phone_app.home_id,)
        ).fetchone()
    assert summary["kind"] == "summary" and "dog" in summary["body"]
