"""The outbox sender against local servers that speak FCM HTTP v1 and APNs (HTTP/2):
payloads, retries with backoff, token pruning, and no second push under faults."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from devservers.apns_server import ApnsServer
from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from notify.digest import digest_events
from notify.links import Links
from notify.providers import Providers, providers_from_settings
from notify.sender import SenderConfig, claim, send_deliveries, send_one
from tests.factories import analysed_event, make_home
from vigil.settings import Settings

pytestmark = pytest.mark.integration

IOS_TOKEN = "ab" * 32
LINKS = Links(base_url="https://vigil.example", secret="s3cret")
# A long backoff: a retry is due only when a test makes it due.
FAST = SenderConfig(lease_s=30, backoff_base_s=60, max_attempts=3)


@pytest.fixture(scope="module")
def fcm():
    with FcmServer() as server:
        yield server


@pytest.fixture(scope="module")
def apns():
    with ApnsServer() as server:
        yield server


@pytest.fixture
def providers(fcm, apns):
    fcm.reset()
    apns.reset()
    settings = Settings.from_environ({**push_env(fcm, apns), "PUSH_TIMEOUT_S": "1"})
    providers = providers_from_settings(settings)
    yield providers
    providers.close()


def home_with_phones(db, android=1, ios=0) -> tuple[int, int]:
    with db.connection() as conn:
        home, camera = make_home(conn, phones=android)
        for i in range(ios):
            conn.execute(
                "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
                " SELECT id, owner_id, 'phone', 'ios', %s, %s FROM homes WHERE id = %s",
                (f"iphone{i}", IOS_TOKEN, home),
            )
    return home, camera


def alert(db, home, camera, location="front_door", snapshot=True) -> list[int]:
    """An analysed event with a person while armed away; returns its new deliveries."""
    event = analysed_event(
        db, home, camera, location, [("person", 0.9)], b"\xff\xd8jpeg" if snapshot else None
    )
    return digest_events(db, [event]).deliveries


def deliveries(db) -> list[dict]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT d.*, dev.push_token FROM deliveries d"
            " LEFT JOIN devices dev ON dev.id = d.device_id ORDER BY d.id"
        ).fetchall()


def sends(fcm) -> list[dict]:
    """FCM messages:send requests (the server also answers OAuth token requests)."""
    return [r for r in fcm.requests if r["path"].endswith(":send")]


def make_due(db) -> None:
    with db.connection() as conn:
        conn.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")


def test_an_alert_reaches_fcm_and_apns_once_each_with_its_picture_and_link(
    db, providers, fcm, apns
):
    home, camera = home_with_phones(db, android=1, ios=1)
    ids = alert(db, home, camera)
    report = send_deliveries(db, providers, LINKS, ids, FAST)
    assert report.outcomes == {"sent": 2} and report.by_provider == {"fcm": 1, "apns": 1}
    assert send_deliveries(db, providers, LINKS, ids, FAST).claimed == 0  # sent stays sent

    (android,) = fcm.accepted
    message = android["message"]
    assert message["notification"]["title"] == "Person at the front door"
    assert message["notification"]["image"].startswith("https://vigil.example/events/")
    data = message["data"]
    assert data["kind"] == "alert" and data["deep_link"] == f"vigil://events/{data['event_id']}"
    assert data["snapshot_url"] == message["notification"]["image"]
    assert message["android"]["priority"] == "high"
    assert message["android"]["collapse_key"] == f"event-{data['event_id']}"
    (ios,) = apns.accepted
    assert ios["headers"]["apns-priority"] == "10"
    assert ios["headers"]["apns-collapse-id"] == f"event-{data['event_id']}"
    aps = ios["payload"]["aps"]
    assert aps["alert"]["title"] == "Person at the front door"
    assert aps["thread-id"] == f"home-{home}" and aps["interruption-level"] == "time-sensitive"

    rows = deliveries(db)
    assert [(r["provider"], r["status"], r["attempts"]) for r in rows] == [
        ("fcm", "sent", 1),
        ("apns", "sent", 1),
    ]
    assert rows[0]["provider_id"] == android["name"]
    assert str(rows[1]["push_id"]) == ios["headers"]["apns-id"]


def test_without_credentials_the_embedded_provider_records_the_push(db):
    home, camera = home_with_phones(db, android=1, ios=1)
    ids = alert(db, home, camera)
    report = send_deliveries(db, Providers(), LINKS, ids, FAST)
    assert report.by_provider == {"embedded": 2}
    assert {(r["provider"], r["status"]) for r in deliveries(db)} == {("embedded", "sent")}


def test_a_provider_500_is_retried_after_a_backoff_and_delivered_once(db, providers, fcm):
    home, camera = home_with_phones(db)
    ids = alert(db, home, camera)
    fcm.fail_next(1, status=500)
    assert send_deliveries(db, providers, LINKS, ids, FAST).outcomes == {"pending": 1}
    (row,) = deliveries(db)
    assert (row["status"], row["attempts"], row["last_status"]) == ("pending", 1, 500)
    assert row["next_attempt_at"] - row["created_at"] >= timedelta(seconds=1)  # backed off
    assert send_deliveries(db, providers, LINKS, None, FAST).claimed == 0  # not due yet
    make_due(db)
    assert send_deliveries(db, providers, LINKS, None, FAST).outcomes == {"sent": 1}
    assert len(sends(fcm)) == 2 and len(fcm.accepted) == 1


def test_retry_after_is_honoured(db, providers, fcm):
    home, camera = home_with_phones(db)
    ids = alert(db, home, camera)
    fcm.fail_next(1, status=429, retry_after=120)
    send_deliveries(db, providers, LINKS, ids, FAST)
    (row,) = deliveries(db)
    with db.connection() as conn:
        wait = conn.execute("SELECT %s - now() AS w", (row["next_attempt_at"],)).fetchone()["w"]
    assert wait >= timedelta(seconds=115)


def test_a_timeout_is_retried_and_the_hung_request_was_never_delivered(db, providers, apns):
    home, camera = home_with_phones(db, android=0, ios=1)
    ids = alert(db, home, camera)
    apns.hang_next(1, seconds=3)  # past the 1 s client timeout
    assert send_deliveries(db, providers, LINKS, ids, FAST).outcomes == {"pending": 1}
    make_due(db)
    assert send_deliveries(db, providers, LINKS, None, FAST).outcomes == {"sent": 1}
    assert len(apns.accepted) == 1


def test_dead_tokens_are_pruned_and_not_tried_again(db, providers, fcm, apns):
    home, camera = home_with_phones(db, android=1, ios=1)
    fcm.unregister("fcm-token-0-0123456789")
    apns.unregister(IOS_TOKEN)
    ids = alert(db, home, camera)
    assert send_deliveries(db, providers, LINKS, ids, FAST).outcomes == {"invalid_token": 2}
    with db.connection() as conn:
        tokens = conn.execute("SELECT push_token FROM devices WHERE kind = 'phone'").fetchall()
    assert [t["push_token"] for t in tokens] == [None, None]
    requests_before = len(sends(fcm)) + len(apns.requests)
    later = alert(db, home, camera, location="back_door")
    assert send_deliveries(db, providers, LINKS, later, FAST).outcomes == {"invalid_token": 2}
    assert len(sends(fcm)) + len(apns.requests) == requests_before  # nothing sent to them


def test_it_gives_up_after_the_last_attempt_and_says_why(db, providers, fcm):
    home, camera = home_with_phones(db)
    ids = alert(db, home, camera)
    fcm.fail_next(3, status=503)
    for _ in range(3):
        make_due(db)
        send_deliveries(db, providers, LINKS, ids, FAST)
    (row,) = deliveries(db)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"].startswith("gave up after 3 attempts")


def test_concurrent_senders_never_claim_the_same_delivery(db):
    home, camera = home_with_phones(db, android=4)
    for location in ("front_door", "back_door", "side_door", "garage_door", "door"):
        alert(db, home, camera, location=location)
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def sender():
        barrier.wait()
        claimed.append([r.id for r in claim(db, FAST, limit=20)])

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == 20 and len(set(every)) == 20


def test_a_sender_that_lost_its_lease_cannot_overwrite_the_newer_attempt(db, providers):
    home, camera = home_with_phones(db)
    ids = alert(db, home, camera)
    (stale,) = claim(db, FAST, ids)
    with db.connection() as conn:  # its lease ran out while it was stuck
        conn.execute("UPDATE deliveries SET claimed_until = now() - interval '1 s'")
    (fresh,) = claim(db, FAST, ids)
    assert fresh.attempts == 2 and fresh.reclaimed and not stale.reclaimed
    sent, lost = (send_one(db, providers, LINKS, FAST, row) for row in (fresh, stale))
    assert (sent.provider, sent.status, lost.provider, lost.status) == (
        "fcm",
        "sent",
        "fcm",
        "lost_lease",
    )
    assert sent.request_s is not None and sent.request_s > 0
    (row,) = deliveries(db)
    assert (row["status"], row["attempts"]) == ("sent", 2)


@pytest.mark.unit
def test_the_settings_configure_the_sender_and_the_links_pushes_carry():
    settings = Settings.from_environ(
        {
            "PUSH_LEASE_S": "12",
            "PUSH_MAX_ATTEMPTS": "3",
            "PUSH_THREADS": "2",
            "PUBLIC_BASE_URL": "https://vigil.example/",
            "JWT_SECRET_KEY": "jwt-secret",
        }
    )
    assert SenderConfig.from_settings(settings) == SenderConfig(
        lease_s=12.0, max_attempts=3, threads=2
    )
    links = Links.from_settings(settings)
    assert (links.base_url, links.secret) == ("https://vigil.example", "jwt-secret")
    signed = Links.from_settings(settings.replace(snapshot_url_secret="snapshots"))
    assert signed.secret == "snapshots"
    assert Links.from_settings(Settings()).snapshot_url(7) is None  # no secret, no link
