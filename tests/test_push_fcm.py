"""FcmProvider against the local FCM server: real HTTP, real OAuth, real signatures."""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Iterator

import pyfcm
import pytest
from google.oauth2 import service_account
from pyfcm import FCMNotification

from devservers.fcm_server import FcmServer
from notify.fcm import FcmProvider, classify_response, payload_args
from notify.http_push import retry_after_s
from notify.providers import EmbeddedProvider, Providers, providers_from_settings
from notify.push import OWNER_ALERT_CATEGORY, Outcome, PushMessage
from vigil.settings import Settings
from vigil.vocabulary import NotificationKind, Platform, PushAction

pytestmark = pytest.mark.integration

TOKEN = "dXk2c3R1YjE6APA91bF-test_token"


def message(**overrides) -> PushMessage:
    fields = dict(
        delivery_id=7,
        push_id="0b6d1f0e-5a7c-4b1e-9d3a-2f4c6e8a0b1c",
        token=TOKEN,
        platform=Platform.ANDROID,
        kind=NotificationKind.ALERT,
        title="Person at the front door",
        body="Front door, 21:04",
        data={"event_id": "42", "home_id": "3", "kind": "alert", "deep_link": "vigil://e/42"},
        collapse_key="event:42",
        thread_id="home:3",
        image_url="https://cdn.example/snap/42.jpg",
        time_sensitive=True,
        ttl_s=600,
    )
    return PushMessage(**{**fields, **overrides})


def providers_for(environ: dict[str, str]) -> Providers:
    """The providers a process with this environment configures."""
    return providers_from_settings(Settings.from_environ(environ))


@pytest.fixture(scope="module")
def server() -> Iterator[FcmServer]:
    with FcmServer(project_id="vigil-test") as running:
        yield running


@pytest.fixture
def fcm(server: FcmServer) -> Iterator[FcmProvider]:
    server.reset()
    provider = FcmProvider(server.service_account_info(), endpoint=server.endpoint, timeout_s=3.0)
    yield provider
    provider.close()


def sends(server: FcmServer) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith("messages:send")]


def test_alert_carries_title_body_data_priority_ttl_and_collapse_tag(fcm, server):
    result = fcm.send(message())

    assert result.outcome is Outcome.SENT and result.status == 200
    (accepted,) = server.accepted
    assert result.provider_id == accepted["name"]
    sent = accepted["message"]
    assert sent["token"] == TOKEN
    assert sent["notification"] == {
        "title": "Person at the front door",
        "body": "Front door, 21:04",
        "image": "https://cdn.example/snap/42.jpg",
    }
    assert sent["data"] == message().data
    android = sent["android"]
    assert (android["priority"], android["ttl"], android["collapse_key"]) == (
        "high",
        "600s",
        "event:42",
    )
    assert android["notification"] == {"tag": "event:42", "channel_id": "alerts"}
    apns = sent["apns"]
    assert apns["headers"]["apns-priority"] == "10"
    assert apns["headers"]["apns-collapse-id"] == "event:42"
    assert apns["payload"]["aps"]["thread-id"] == "home:3"
    assert apns["payload"]["aps"]["interruption-level"] == "time-sensitive"


def test_summary_is_normal_priority_passive_on_the_summaries_channel(fcm, server):
    summary = message(kind="summary", time_sensitive=False, collapse_key="summary:3", ttl_s=7200)

    assert fcm.send(summary).outcome is Outcome.SENT
    sent = server.accepted[0]["message"]
    assert sent["android"]["priority"] == "normal" and sent["android"]["ttl"] == "7200s"
    assert sent["android"]["notification"] == {"tag": "summary:3", "channel_id": "summaries"}
    assert sent["apns"]["headers"]["apns-priority"] == "5"
    assert sent["apns"]["payload"]["aps"]["interruption-level"] == "passive"
    assert "sound" not in sent["apns"]["payload"]["aps"]


def test_oauth_token_comes_from_token_uri_once_and_is_reused_across_threads(fcm, server):
    threads = [threading.Thread(target=fcm.send, args=(message(),)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fcm.send(message())

    assert len(server.accepted) == 7
    assert server.token_requests == 1
    assert len({r["authorization"] for r in sends(server)}) == 1


def test_expired_access_token_is_fetched_again_and_the_send_repeated_once(fcm, server):
    fcm.send(message())
    server.expire_access_tokens()

    assert fcm.send(message()).outcome is Outcome.SENT
    assert server.token_requests == 2
    assert [r["status"] for r in sends(server)] == [200, 401, 200]


def test_unregistered_token_is_invalid(fcm, server):
    server.unregister(TOKEN)

    result = fcm.send(message())

    assert (result.outcome, result.status, result.reason) == (
        Outcome.INVALID_TOKEN,
        404,
        "UNREGISTERED",
    )


def test_malformed_token_is_invalid_not_failed(fcm, server):
    result = fcm.send(message(token="not a token"))

    assert result.outcome is Outcome.INVALID_TOKEN and result.status == 400
    assert server.accepted == []


def test_payload_google_rejects_is_failed(fcm, server):
    result = fcm.send(message(data={"event_id": 42}))  # FCM data values must be strings

    assert result.outcome is Outcome.FAILED and result.status == 400
    assert "message.data" in result.reason or "strings" in result.reason


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_answers_retry_after_exactly_one_request(fcm, server, status):
    fcm.send(message())  # warm up: the token fetch and the connection
    server.fail_next(1, status=status, retry_after=30)

    started = time.monotonic()
    result = fcm.send(message())

    assert (result.outcome, result.status, result.retry_after_s) == (Outcome.RETRY, status, 30.0)
    assert time.monotonic() - started < 1.0  # pyfcm would have slept 30 s and resent
    assert [r["status"] for r in sends(server)] == [200, status]


def test_503_without_retry_after_is_not_retried_by_the_adapter(fcm, server):
    server.fail_next(3, status=503)

    assert fcm.send(message()).outcome is Outcome.RETRY
    assert len(sends(server)) == 1


def test_hang_past_the_timeout_is_a_quick_retry_and_never_accepted(server):
    server.reset()
    fcm = FcmProvider(server.service_account_info(), endpoint=server.endpoint, timeout_s=1.0)
    fcm.send(message())
    server.hang_next(1, seconds=4)

    started = time.monotonic()
    result = fcm.send(message())

    assert result.outcome is Outcome.RETRY and "Timeout" in result.reason
    assert time.monotonic() - started < 3  # the provider's timeout, not the server's hold
    deadline = time.monotonic() + 10
    while not any(r.get("hung") for r in server.requests) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(server.accepted) == 1  # only the warm-up
    assert fcm.send(message()).outcome is Outcome.SENT  # the pool recovers
    fcm.close()


def test_connection_refused_and_unreachable_token_uri_are_retries(server):
    info = server.service_account_info() | {"token_uri": "http://127.0.0.1:9/token"}
    provider = FcmProvider(info, endpoint=server.endpoint, timeout_s=0.3)
    result = provider.send(message())
    assert result.outcome is Outcome.RETRY and "oauth" in result.reason
    provider.close()

    provider = FcmProvider(
        server.service_account_info(), endpoint="http://127.0.0.1:9/v1/projects", timeout_s=0.3
    )
    result = provider.send(message())
    assert result.outcome is Outcome.RETRY and "ConnectionError" in result.reason
    provider.close()


def test_service_account_refused_by_the_token_endpoint_is_failed(server):
    info = server.service_account_info() | {"client_email": "someone@else.example"}
    provider = FcmProvider(info, endpoint=server.endpoint, timeout_s=0.3)

    result = provider.send(message())

    assert result.outcome is Outcome.FAILED and "invalid_grant" in result.reason
    provider.close()


def test_malformed_service_account_is_a_value_error(server):
    info = server.service_account_info()
    with pytest.raises(ValueError):
        FcmProvider({k: v for k, v in info.items() if k != "private_key"})
    with pytest.raises(ValueError, match="project"):
        FcmProvider({k: v for k, v in info.items() if k != "project_id"})
    with pytest.raises(ValueError):
        providers_for({"FCM_CREDENTIALS_JSON": "{not json"})


def test_env_with_fcm_only_sends_every_platform_through_fcm(server, tmp_path):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(server.service_account_info()))
    providers = providers_for(
        {"FCM_CREDENTIALS_FILE": str(path), "FCM_ENDPOINT": server.endpoint, "PUSH_TIMEOUT_S": "2"}
    )
    try:
        assert {providers.for_platform(p).name for p in ("ios", "android", "web")} == {"fcm"}
        assert providers.for_platform("android").timeout_s == 2.0
        assert providers.for_platform("web").send(message(platform="web")).outcome is Outcome.SENT
        assert server.accepted[-1]["message"]["webpush"]["headers"]["Urgency"] == "high"
    finally:
        providers.close()


@pytest.mark.unit
def test_empty_env_uses_the_embedded_provider():
    providers = providers_for({})
    provider = providers.for_platform("android")

    assert isinstance(provider, EmbeddedProvider)
    assert provider.send(message()).provider_id == "embedded:7"
    with pytest.raises(ValueError):
        providers.for_platform("blackberry")


@pytest.mark.unit
def test_retry_after_accepts_seconds_and_http_dates():
    assert retry_after_s("12") == 12.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def google_error(status: int, code: str, field: str = "") -> bytes:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    if field:
        violation = {"field": field, "description": "bad"}
        details.append(
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        )
    return json.dumps({"error": {"code": status, "message": "x", "details": details}}).encode()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (403, google_error(403, "SENDER_ID_MISMATCH"), Outcome.INVALID_TOKEN),
        (400, google_error(400, "INVALID_ARGUMENT", "message.token"), Outcome.INVALID_TOKEN),
        (400, google_error(400, "INVALID_ARGUMENT", "message.android.ttl"), Outcome.FAILED),
        (401, google_error(401, "THIRD_PARTY_AUTH_ERROR"), Outcome.FAILED),
        (502, b"<html>Bad Gateway</html>", Outcome.RETRY),
    ],
)
def test_error_bodies_classify_like_the_fcm_docs_say(status, body, outcome):
    assert classify_response(status, {}, body).outcome is outcome


def test_warm_fetches_the_oauth_token_before_the_first_send(fcm, server):
    fcm.warm()
    assert server.token_requests == 1 and sends(server) == []
    assert fcm.send(message()).outcome is Outcome.SENT
    assert server.token_requests == 1  # the send used the warm token


def test_pyfcm_parse_payload_writes_the_message_the_provider_sends(server):
    """The provider uses pyfcm for ``parse_payload`` alone (notify/fcm.py says why); an
    upgrade of pyfcm must pass this before the provider trusts it."""
    assert pyfcm.__version__ == "2.1.1"
    web = message(platform=Platform.WEB)
    args = payload_args(web)
    assert set(args) <= set(inspect.signature(FCMNotification.parse_payload).parameters)
    credentials = service_account.Credentials.from_service_account_info(
        server.service_account_info()
    )

    written = json.loads(FCMNotification(credentials=credentials).parse_payload(**args))

    assert written["validate_only"] is False
    sent = written["message"]
    assert sent["token"] == TOKEN
    assert sent["notification"] == {
        "title": web.title,
        "body": web.body,
        "image": web.image_url,
    }
    assert sent["data"] == web.data
    assert (sent["android"], sent["apns"], sent["webpush"]) == (
        args["android_config"],
        args["apns_config"],
        args["webpush_config"],
    )


def test_pyfcm_own_sending_sleeps_on_retry_after_and_sends_again(server):
    """Why the provider posts itself: pyfcm's ``send_request`` waits out Retry-After inside
    the call and resends, where a worker must hand the answer to the outbox's backoff."""
    server.reset()

    class LocalFCM(FCMNotification):
        FCM_END_POINT_BASE = server.endpoint

    credentials = service_account.Credentials.from_service_account_info(
        server.service_account_info(), scopes=["https://www.googleapis.com/auth/firebase.messaging"]
    )
    client = LocalFCM(credentials=credentials)
    body = client.parse_payload(**payload_args(message()))
    assert client.send_request(body, timeout=3).status_code == 200  # token fetched, warm
    server.fail_next(1, status=429, retry_after=1)

    started = time.monotonic()
    response = client.send_request(body, timeout=3)

    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in sends(server)] == [200, 429, 200]


def test_a_critical_push_is_high_priority_on_every_platform(server):
    server.reset()
    provider = FcmProvider(server.service_account_info(), endpoint=server.endpoint, timeout_s=3.0)
    try:
        # Not time-sensitive on its own: critical alone makes it urgent.
        for platform in (Platform.ANDROID, Platform.WEB, Platform.IOS):
            sent = provider.send(message(platform=platform, critical=True, time_sensitive=False))
            assert sent.outcome is Outcome.SENT
    finally:
        provider.close()
    android, web, ios = (a["message"] for a in server.accepted)
    assert android["android"]["priority"] == "high"
    assert web["webpush"]["headers"]["Urgency"] == "high"
    assert ios["apns"]["headers"]["apns-priority"] == "10"
    # Without APNS_CRITICAL_ALERTS the iOS app is not entitled: time-sensitive, usual sound.
    aps = ios["apns"]["payload"]["aps"]
    assert (aps["interruption-level"], aps["sound"]) == ("time-sensitive", "default")


def test_a_critical_push_is_a_critical_alert_on_an_entitled_iphone(server):
    server.reset()
    provider = FcmProvider(
        server.service_account_info(),
        endpoint=server.endpoint,
        timeout_s=3.0,
        critical_alerts=True,
    )
    try:
        assert provider.send(message(platform=Platform.IOS, critical=True)).outcome is Outcome.SENT
        assert provider.send(message(platform=Platform.IOS)).outcome is Outcome.SENT
    finally:
        provider.close()
    critical, plain = (a["message"]["apns"]["payload"]["aps"] for a in server.accepted)
    assert critical["interruption-level"] == "critical"
    assert critical["sound"] == {"critical": 1, "name": "default", "volume": 1.0}
    assert (plain["interruption-level"], plain["sound"]) == ("time-sensitive", "default")


@pytest.mark.unit
def test_a_summary_is_never_urgent_and_a_critical_push_always_is():
    summary = payload_args(message(kind="summary", time_sensitive=False, platform=Platform.WEB))
    assert summary["android_config"]["priority"] == "normal"
    assert summary["webpush_config"]["headers"]["Urgency"] == "normal"
    assert summary["apns_config"]["payload"]["aps"]["interruption-level"] == "passive"
    critical = payload_args(message(critical=True, time_sensitive=False, platform=Platform.WEB))
    assert critical["android_config"]["priority"] == "high"
    assert critical["webpush_config"]["headers"]["Urgency"] == "high"
    assert critical["apns_config"]["headers"]["apns-priority"] == "10"


ACTIONS = (PushAction.SNOOZE_CAMERA, PushAction.MUTE_OBJECT, PushAction.MARK_SEEN)
ACTION_DATA = {
    "action_token": "va_1.7.1748782800.2kJ0cYpTqzq3Hq6m4Zb8yWvXo1sR5tU7aB9dE0fG1hI",
    "action_url": "https://vigil.example/notifications/7/actions",
    "actions": "snooze_camera,mute_object,mark_seen",
}


def test_an_alert_with_actions_reaches_every_platform_in_its_own_words(fcm, server):
    for platform in (Platform.ANDROID, Platform.IOS, Platform.WEB):
        offered = message(
            platform=platform,
            data={**message().data, **ACTION_DATA},
            actions=ACTIONS,
            category=OWNER_ALERT_CATEGORY,
        )
        assert fcm.send(offered).outcome is Outcome.SENT, platform
    android, ios, web = (a["message"] for a in server.accepted)
    for sent in (android, ios, web):
        assert {k: sent["data"][k] for k in ACTION_DATA} == ACTION_DATA  # strings, as FCM takes
        assert all(isinstance(value, str) for value in sent["data"].values())
        assert sent["android"]["notification"]["click_action"] == "VIGIL_ALERT_OWNER"
        assert sent["apns"]["payload"]["aps"]["category"] == "VIGIL_ALERT_OWNER"
    assert web["webpush"]["notification"] == {
        "actions": [
            {"action": "snooze_camera", "title": "Snooze camera 1 h"},
            {"action": "mute_object", "title": "Mute this object"},
            {"action": "mark_seen", "title": "Mark as seen"},
        ]
    }
    assert "notification" not in android.get("webpush", {})


@pytest.mark.unit
def test_a_push_without_actions_names_no_category_anywhere():
    args = payload_args(message(platform=Platform.WEB))
    assert "click_action" not in args["android_config"]["notification"]
    assert "category" not in args["apns_config"]["payload"]["aps"]
    assert "notification" not in args["webpush_config"]
    assert not {"action_token", "action_url", "actions"} & set(args["data_payload"])
