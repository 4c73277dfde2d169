"""ApnsProvider against the local HTTP/2 APNs: real h2 frames, real ES256 signatures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devservers.apns_server import APS_KEYS, ApnsServer
from devservers.fcm_server import FcmServer
from notify.apns import ApnsProvider
from notify.providers import EmbeddedProvider, Providers, providers_from_settings
from notify.push import ALERT_CATEGORY, OWNER_ALERT_CATEGORY, Outcome, PushMessage
from vigil.settings import Settings
from vigil.vocabulary import NotificationKind, Platform, PushAction

pytestmark = pytest.mark.integration

TOKEN = "a3f1" * 16  # 32 bytes in hex, like a device token
PUSH_ID = "0b6d1f0e-5a7c-4b1e-9d3a-2f4c6e8a0b1c"


def message(**overrides) -> PushMessage:
    fields = dict(
        delivery_id=9,
        push_id=PUSH_ID,
        token=TOKEN,
        platform=Platform.IOS,
        kind=NotificationKind.ALERT,
        title="Person at the front door",
        body="Front door, 21:04",
        data={"event_id": "42", "home_id": "3", "deep_link": "vigil://e/42"},
        collapse_key="event:42",
        thread_id="home:3",
        image_url="https://cdn.example/snap/42.jpg",
        time_sensitive=True,
        ttl_s=600,
    )
    return PushMessage(**{**fields, **overrides})


@pytest.fixture(scope="module")
def server() -> Iterator[ApnsServer]:
    with ApnsServer(topic="com.vigil.app") as running:
        yield running


def provider_for(server: ApnsServer, **options) -> ApnsProvider:
    return ApnsProvider(
        key_pem=server.key_pem(),
        key_id=server.key_id,
        team_id=server.team_id,
        topic=server.topic,
        endpoint=server.endpoint,
        **{"timeout_s": 3.0, **options},
    )


@pytest.fixture
def apns(server: ApnsServer) -> Iterator[ApnsProvider]:
    server.reset()
    provider = provider_for(server)
    yield provider
    provider.close()


def test_alert_headers_and_payload_are_what_apns_expects(apns, server):
    before = int(time.time())
    result = apns.send(message())

    assert (result.outcome, result.status, result.provider_id) == (Outcome.SENT, 200, PUSH_ID)
    (accepted,) = server.accepted
    assert accepted["token"] == TOKEN
    headers = accepted["headers"]
    assert headers[":path"] == f"/3/device/{TOKEN}"
    assert headers["apns-topic"] == "com.vigil.app"
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "event:42"
    assert headers["apns-id"] == PUSH_ID
    assert before + 600 <= int(headers["apns-expiration"]) <= int(time.time()) + 600
    assert accepted["payload"] == {
        "aps": {
            "alert": {"title": "Person at the front door", "body": "Front door, 21:04"},
            "sound": "default",
            "thread-id": "home:3",
            "mutable-content": 1,
            "interruption-level": "time-sensitive",
        },
        "event_id": "42",
        "home_id": "3",
        "deep_link": "vigil://e/42",
        "image_url": "https://cdn.example/snap/42.jpg",
    }


def test_summary_is_priority_5_passive_and_silent(apns, server):
    summary = message(kind="summary", time_sensitive=False, image_url=None, collapse_key="s:3")

    assert apns.send(summary).outcome is Outcome.SENT
    accepted = server.accepted[0]
    assert accepted["headers"]["apns-priority"] == "5"
    aps = accepted["payload"]["aps"]
    assert aps["interruption-level"] == "passive"
    assert "sound" not in aps and "mutable-content" not in aps


def test_long_collapse_key_is_shortened_to_a_stable_64_byte_id(apns, server):
    long_key = "summary:" + "x" * 100

    assert apns.send(message(collapse_key=long_key)).outcome is Outcome.SENT
    assert apns.send(message(collapse_key=long_key)).outcome is Outcome.SENT
    ids = {a["headers"]["apns-collapse-id"] for a in server.accepted}
    assert len(ids) == 1 and len(ids.pop()) == 64


def test_provider_jwt_is_verified_and_reused_across_threads(apns, server):
    threads = [threading.Thread(target=apns.send, args=(message(),)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(server.accepted) == 20
    assert len(server.provider_tokens) == 1


def test_provider_jwt_is_renewed_after_50_minutes(server):
    server.reset()
    now = [time.time() - 55 * 60]  # a clock we move; Apple checks iat against real time
    provider = provider_for(server, clock=lambda: now[0])
    try:
        provider.send(message())
        now[0] += 49 * 60
        provider.send(message())
        assert len(server.provider_tokens) == 1
        now[0] += 2 * 60
        assert provider.send(message()).outcome is Outcome.SENT
        assert len(server.provider_tokens) == 2
    finally:
        provider.close()


def test_expired_provider_token_is_a_retry_and_the_next_send_signs_anew(apns, server):
    apns.send(message())
    server.expire_provider_tokens()

    result = apns.send(message())
    assert (result.outcome, result.status, result.reason) == (
        Outcome.RETRY,
        403,
        "ExpiredProviderToken",
    )
    assert apns.send(message()).outcome is Outcome.SENT
    assert len(server.provider_tokens) == 2


def test_unregistered_token_is_invalid(apns, server):
    server.unregister(TOKEN)

    result = apns.send(message())

    assert (result.outcome, result.status, result.reason) == (
        Outcome.INVALID_TOKEN,
        410,
        "Unregistered",
    )


def test_bad_device_token_is_invalid(apns, server):
    result = apns.send(message(token="not/hex token"))

    assert (result.outcome, result.reason) == (Outcome.INVALID_TOKEN, "BadDeviceToken")
    assert server.accepted == []


def test_wrong_topic_is_failed(server):
    provider = ApnsProvider(
        key_pem=server.key_pem(),
        key_id=server.key_id,
        team_id=server.team_id,
        topic="com.other.app",
        endpoint=server.endpoint,
        timeout_s=3.0,
    )
    result = provider.send(message())
    provider.close()

    assert (result.outcome, result.reason) == (Outcome.FAILED, "TopicDisallowed")


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_answers_retry_after_exactly_one_request(apns, server, status):
    server.fail_next(1, status=status, retry_after=30)

    result = apns.send(message())

    assert (result.outcome, result.status, result.retry_after_s) == (Outcome.RETRY, status, 30.0)
    assert len(server.requests) == 1 and server.accepted == []


def test_hang_past_the_timeout_is_a_quick_retry_and_never_accepted(server):
    server.reset()
    apns = provider_for(server, timeout_s=1.0)
    server.hang_next(1, seconds=4)

    started = time.monotonic()
    result = apns.send(message())

    assert result.outcome is Outcome.RETRY and "Timeout" in result.reason
    assert time.monotonic() - started < 3  # the provider's timeout, not the server's hold
    assert apns.send(message(push_id="1b6d1f0e-5a7c-4b1e-9d3a-2f4c6e8a0b1c")).outcome is (
        Outcome.SENT
    )  # other streams are not held up by the hanging one
    apns.close()
    assert [a["apns_id"] for a in server.accepted] == ["1b6d1f0e-5a7c-4b1e-9d3a-2f4c6e8a0b1c"]


def test_many_concurrent_sends_each_arrive_once_or_retry(server):
    server.reset()
    apns = provider_for(server, timeout_s=5)  # a loaded test machine must not time out here
    server.fault_rate(0.2, statuses=(500, 503), seed=1)
    results: list[Outcome] = []

    def worker(n: int) -> None:
        for i in range(25):
            token = f"{n:02x}{i:02x}" * 16
            results.append(apns.send(message(token=token, push_id=PUSH_ID)).outcome)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    apns.close()

    assert len(results) == 200 and set(results) == {Outcome.SENT, Outcome.RETRY}
    assert len(server.accepted) == results.count(Outcome.SENT)
    assert len(server.requests) == 200


def test_server_multiplexes_streams_on_one_connection_past_a_held_one(apns, server):
    server.hang_next(1, seconds=0.5)
    headers = {**apns.headers(message()), "authorization": f"bearer {apns.provider_token()}"}
    body = json.dumps({"aps": {"alert": "hi"}}).encode()

    async def burst() -> list[int | None]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=5) as client:

            async def one(i: int) -> int | None:
                await asyncio.sleep(0.05 if i else 0)  # the first stream is the held one
                url = f"{server.endpoint}/3/device/{i:064x}"
                try:
                    return (await client.post(url, headers=headers, content=body)).status_code
                except httpx.HTTPError:
                    return None

            return await asyncio.gather(*(one(i) for i in range(40)))

    started = time.monotonic()
    statuses = asyncio.run(burst())

    assert statuses == [None] + [200] * 39  # the held stream is reset, never answered
    assert len(server.accepted) == 39 and len(server.provider_tokens) == 1
    assert time.monotonic() - started < 4


def test_unreachable_endpoint_is_a_retry():
    key = ApnsServer().key_pem()
    provider = ApnsProvider(
        key_pem=key, key_id="K", team_id="T", topic="t", endpoint="http://127.0.0.1:9"
    )
    result = provider.send(message())
    provider.close()

    assert result.outcome is Outcome.RETRY and "ConnectError" in result.reason


def test_bad_key_is_a_value_error(server):
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="P-256"):
        ApnsProvider(key_pem=rsa_pem, key_id="K", team_id="T", topic="t")
    with pytest.raises(ValueError, match="PEM"):
        ApnsProvider(key_pem="garbage", key_id="K", team_id="T", topic="t")
    with pytest.raises(ValueError, match="team_id"):
        ApnsProvider(key_pem=server.key_pem(), key_id="K", team_id="", topic="t")


def providers_for(environ: dict[str, str]) -> Providers:
    """The providers a process with this environment configures."""
    return providers_from_settings(Settings.from_environ(environ))


def test_partial_apns_env_names_what_is_missing(server):
    with pytest.raises(ValueError, match="APNS_TEAM_ID") as raised:
        providers_for({"APNS_KEY": server.key_pem(), "APNS_KEY_ID": "K"})
    assert "APNS_TOPIC" in str(raised.value) and "APNS_KEY " not in str(raised.value)
    with pytest.raises(ValueError, match=r"missing APNS_KEY \(or APNS_KEY_FILE\)$"):
        providers_for({"APNS_KEY_ID": "K", "APNS_TEAM_ID": "T", "APNS_TOPIC": "t"})
    with pytest.raises(ValueError, match="PUSH_TIMEOUT_S"):
        providers_for({"PUSH_TIMEOUT_S": "fast"})
    with pytest.raises(ValueError, match="APNS_KEY_FILE"):
        providers_for({"APNS_KEY_FILE": "/nonexistent/AuthKey.p8", "APNS_KEY_ID": "K"})


def test_env_picks_apns_for_ios_and_fcm_for_android_and_web(server, tmp_path):
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text(server.key_pem())
    with FcmServer() as fcm_server:
        env = {
            "FCM_CREDENTIALS_JSON": json.dumps(fcm_server.service_account_info()),
            "FCM_ENDPOINT": fcm_server.endpoint,
            "APNS_KEY_FILE": str(key_file),
            "APNS_KEY_ID": server.key_id,
            "APNS_TEAM_ID": server.team_id,
            "APNS_TOPIC": server.topic,
            "APNS_ENDPOINT": server.endpoint,
            "PUSH_TIMEOUT_S": "1.5",
        }
        providers = providers_for(env)
        try:
            assert [providers.for_platform(p).name for p in ("ios", "android", "web")] == [
                "apns",
                "fcm",
                "fcm",
            ]
            assert providers.for_platform("ios").timeout_s == 1.5
            assert providers.for_platform("ios").send(message()).outcome is Outcome.SENT
            android = message(platform="android", token="fcm:token-1")
            assert providers.for_platform("android").send(android).outcome is Outcome.SENT
            assert len(fcm_server.accepted) == 1
        finally:
            providers.close()


def test_apns_only_env_leaves_android_on_the_embedded_provider(server):
    escaped = server.key_pem().replace("\n", "\\n")  # a PEM pasted into one config line
    providers = providers_for(
        {
            "APNS_KEY": escaped,
            "APNS_KEY_ID": server.key_id,
            "APNS_TEAM_ID": server.team_id,
            "APNS_TOPIC": server.topic,
        }
    )
    assert providers.for_platform("ios").name == "apns"
    assert isinstance(providers.for_platform("android"), EmbeddedProvider)
    providers.close()


def test_warm_signs_the_provider_token_the_first_send_uses(apns, server):
    apns.warm()
    token = apns.provider_token()
    assert apns.send(message()).outcome is Outcome.SENT
    assert server.provider_tokens == [token]


CRITICAL_SOUND = {"critical": 1, "name": "default", "volume": 1.0}


def test_a_critical_push_is_a_critical_alert_where_the_app_is_entitled(server):
    server.reset()
    entitled = provider_for(server, critical_alerts=True)
    try:
        assert entitled.send(message(critical=True)).outcome is Outcome.SENT
        assert entitled.send(message(push_id="1" * 32)).outcome is Outcome.SENT  # not critical
    finally:
        entitled.close()
    critical, plain = server.accepted
    assert critical["headers"]["apns-priority"] == "10"
    aps = critical["payload"]["aps"]
    assert (aps["interruption-level"], aps["sound"]) == ("critical", CRITICAL_SOUND)
    assert aps["alert"] == {"title": "Person at the front door", "body": "Front door, 21:04"}
    aps = plain["payload"]["aps"]  # an alert that did not escalate stays time-sensitive
    assert (aps["interruption-level"], aps["sound"]) == ("time-sensitive", "default")


def test_a_critical_push_stays_time_sensitive_without_the_entitlement(apns, server):
    assert apns.critical_alerts is False  # APNS_CRITICAL_ALERTS is off by default
    assert apns.send(message(critical=True, time_sensitive=False)).outcome is Outcome.SENT
    (accepted,) = server.accepted
    assert accepted["headers"]["apns-priority"] == "10"
    aps = accepted["payload"]["aps"]
    assert (aps["interruption-level"], aps["sound"]) == ("time-sensitive", "default")


def test_the_critical_alerts_setting_reaches_both_providers_of_ios(server):
    with FcmServer() as fcm_server:
        env = {
            "FCM_CREDENTIALS_JSON": json.dumps(fcm_server.service_account_info()),
            "FCM_ENDPOINT": fcm_server.endpoint,
            "APNS_KEY": server.key_pem(),
            "APNS_KEY_ID": server.key_id,
            "APNS_TEAM_ID": server.team_id,
            "APNS_TOPIC": server.topic,
        }
        for value, entitled in (("", False), ("false", False), ("on", True)):
            providers = providers_for({**env, "APNS_CRITICAL_ALERTS": value})
            try:
                assert providers.for_platform("ios").critical_alerts is entitled
                assert providers.for_platform("android").critical_alerts is entitled
            finally:
                providers.close()
    with pytest.raises(ValueError, match="APNS_CRITICAL_ALERTS"):
        providers_for({"APNS_CRITICAL_ALERTS": "maybe"})


ACTION_DATA = {
    "action_token": "va_1.9.1748782800.2kJ0cYpTqzq3Hq6m4Zb8yWvXo1sR5tU7aB9dE0fG1hI",
    "action_url": "https://vigil.example/notifications/7/actions",
    "actions": "snooze_camera,mute_object,mark_seen,acknowledge",
}


def test_an_alert_with_actions_names_its_category_and_keeps_its_keys_beside_aps(apns, server):
    offered = (
        PushAction.SNOOZE_CAMERA,
        PushAction.MUTE_OBJECT,
        PushAction.MARK_SEEN,
        PushAction.ACKNOWLEDGE,
    )
    owner = message(
        data={**message().data, **ACTION_DATA}, actions=offered, category=OWNER_ALERT_CATEGORY
    )
    member = message(actions=offered[::2], category=ALERT_CATEGORY)

    assert apns.send(owner).outcome is Outcome.SENT
    assert apns.send(member).outcome is Outcome.SENT
    owner_payload, member_payload = (a["payload"] for a in server.accepted)
    assert owner_payload["aps"]["category"] == "VIGIL_ALERT_OWNER"
    assert member_payload["aps"]["category"] == "VIGIL_ALERT"
    # Custom data goes beside aps, where the app's notification delegate reads it.
    for key, value in ACTION_DATA.items():
        assert owner_payload[key] == value and key not in owner_payload["aps"]
    assert set(owner_payload["aps"]) <= APS_KEYS


def test_a_push_without_actions_names_no_category(apns, server):
    assert apns.send(message(kind="summary", time_sensitive=False)).outcome is Outcome.SENT
    assert "category" not in server.accepted[0]["payload"]["aps"]
