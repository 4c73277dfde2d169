"""Which provider sends to which platform, configured by the settings (``vigil.settings``).

FCM_CREDENTIALS_JSON (the service-account JSON) or FCM_CREDENTIALS_FILE, FCM_PROJECT_ID
and FCM_ENDPOINT (optional) configure FCM. APNS_KEY (the .p8 PEM) or APNS_KEY_FILE,
APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC configure APNs, all or none; APNS_ENDPOINT is
optional. PUSH_TIMEOUT_S bounds each request. APNS_CRITICAL_ALERTS lets escalated
life-safety alerts reach iPhones as critical alerts (through APNs, or FCM's ``apns``
block). Without credentials every platform gets the embedded provider, whose pushes live
only in PostgreSQL.
"""

from __future__ import annotations

import json

from notify.apns import ApnsProvider
from notify.fcm import FcmProvider
from notify.push import Outcome, PushMessage, PushProvider, SendResult
from vigil.settings import Settings
from vigil.vocabulary import PUSH_PLATFORMS, Platform


class EmbeddedProvider:
    """No push service: the outbox row in PostgreSQL is the delivery, so this always sends."""

    name = "embedded"

    def send(self, message: PushMessage) -> SendResult:
        return SendResult(Outcome.SENT, provider_id=f"embedded:{message.delivery_id}")

    def warm(self) -> None:
        pass

    def close(self) -> None:
        pass


class Providers:
    """The configured providers, and the choice among them per device platform."""

    def __init__(
        self,
        *,
        fcm: PushProvider | None = None,
        apns: PushProvider | None = None,
        embedded: PushProvider | None = None,
    ) -> None:
        self.fcm, self.apns = fcm, apns
        self.embedded = embedded or EmbeddedProvider()

    def for_platform(self, platform: str) -> PushProvider:
        """ios: APNs, else FCM (which relays to APNs); android and web: FCM; else embedded."""
        if platform not in PUSH_PLATFORMS:
            expected = ", ".join(PUSH_PLATFORMS)
            raise ValueError(f"no pushes to platform {platform!r}; expected one of {expected}")
        if platform == Platform.IOS and self.apns is not None:
            return self.apns
        return self.fcm or self.embedded

    def warm(self) -> None:
        """Fetch the FCM OAuth token and sign the APNs provider token now, so the first
        alert a fresh worker sends does not wait for them."""
        for provider in self._each():
            provider.warm()

    def close(self) -> None:
        for provider in self._each():
            provider.close()

    def _each(self) -> list[PushProvider]:
        return list({id(p): p for p in (self.fcm, self.apns, self.embedded) if p}.values())


def fcm_from_settings(settings: Settings) -> FcmProvider | None:
    """The FCM provider, or None when no credentials are set."""
    text = settings.fcm_credentials
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"FCM credentials are not JSON: {exc}") from exc
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError("FCM credentials must be a service-account JSON object")
    return FcmProvider(
        info,
        project_id=settings.fcm_project_id,
        endpoint=settings.fcm_endpoint,
        timeout_s=settings.push_timeout_s,
        critical_alerts=settings.apns_critical_alerts,
    )


def apns_from_settings(settings: Settings) -> ApnsProvider | None:
    """The APNs provider, or None when none of its variables is set."""
    key = settings.apns_private_key
    key_id, team_id, topic = settings.apns_key_id, settings.apns_team_id, settings.apns_topic
    if not (key or key_id or team_id or topic):
        return None
    if not (key and key_id and team_id and topic):
        named = {
            "APNS_KEY (or APNS_KEY_FILE)": key,
            "APNS_KEY_ID": key_id,
            "APNS_TEAM_ID": team_id,
            "APNS_TOPIC": topic,
        }
        missing = ", ".join(name for name, value in named.items() if not value)
        raise ValueError(f"APNs is partly configured; missing {missing}")
    if "\\n" in key and "\n" not in key.strip():
        key = key.replace("\\n", "\n")  # a PEM pasted into a one-line config var
    return ApnsProvider(
        key_pem=key,
        key_id=key_id,
        team_id=team_id,
        topic=topic,
        endpoint=settings.apns_endpoint,
        timeout_s=settings.push_timeout_s,
        critical_alerts=settings.apns_critical_alerts,
    )


def providers_from_settings(settings: Settings) -> Providers:
    """Providers for what the settings configure; ValueError for a broken configuration."""
    return Providers(fcm=fcm_from_settings(settings), apns=apns_from_settings(settings))
