"""Which provider sends to which platform, configured from the environment (Heroku style).

FCM_CREDENTIALS_JSON (the service-account JSON) or FCM_CREDENTIALS_FILE, FCM_PROJECT_ID
and FCM_ENDPOINT (optional) configure FCM. APNS_KEY (the .p8 PEM) or APNS_KEY_FILE,
APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC configure APNs, all or none; APNS_ENDPOINT is
optional. PUSH_TIMEOUT_S bounds each request. Without credentials every platform gets the
embedded provider, whose pushes live only in PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from notify.apns import APNS_PRODUCTION, ApnsProvider
from notify.fcm import DEFAULT_FCM_ENDPOINT, DEFAULT_TIMEOUT_S, FcmProvider
from notify.push import Outcome, PushMessage, PushProvider, SendResult

PLATFORMS = ("ios", "android", "web")
_APNS_VARS = ("APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC")


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
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}; expected one of {PLATFORMS}")
        if platform == "ios" and self.apns is not None:
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


def _get(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def _text_or_file(environ: Mapping[str, str], name: str, file_name: str) -> str:
    """The variable ``name`` itself, or the contents of the file ``file_name`` names."""
    text, path = _get(environ, name), _get(environ, file_name)
    if text and path:
        raise ValueError(f"set {name} or {file_name}, not both")
    if path:
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{file_name}: cannot read {path}: {exc}") from exc
    return text


def _timeout(environ: Mapping[str, str]) -> float:
    raw = _get(environ, "PUSH_TIMEOUT_S")
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"PUSH_TIMEOUT_S must be a number of seconds, not {raw!r}") from None
    if not 0 < timeout <= 300:
        raise ValueError("PUSH_TIMEOUT_S must be in (0, 300]")
    return timeout


def fcm_from_env(environ: Mapping[str, str], timeout_s: float) -> FcmProvider | None:
    """The FCM provider, or None when no credentials are set."""
    text = _text_or_file(environ, "FCM_CREDENTIALS_JSON", "FCM_CREDENTIALS_FILE")
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
        project_id=_get(environ, "FCM_PROJECT_ID") or None,
        endpoint=_get(environ, "FCM_ENDPOINT") or DEFAULT_FCM_ENDPOINT,
        timeout_s=timeout_s,
    )


def apns_from_env(environ: Mapping[str, str], timeout_s: float) -> ApnsProvider | None:
    """The APNs provider, or None when none of its variables is set."""
    key = _text_or_file(environ, "APNS_KEY", "APNS_KEY_FILE")
    if not key and not any(_get(environ, name) for name in _APNS_VARS):
        return None
    missing = [name for name in _APNS_VARS if not _get(environ, name)]
    if not key:
        missing.insert(0, "APNS_KEY (or APNS_KEY_FILE)")
    if missing:
        raise ValueError(f"APNs is partly configured; missing {', '.join(missing)}")
    if "\\n" in key and "\n" not in key.strip():
        key = key.replace("\\n", "\n")  # a PEM pasted into a one-line config var
    return ApnsProvider(
        key_pem=key,
        key_id=_get(environ, "APNS_KEY_ID"),
        team_id=_get(environ, "APNS_TEAM_ID"),
        topic=_get(environ, "APNS_TOPIC"),
        endpoint=_get(environ, "APNS_ENDPOINT") or APNS_PRODUCTION,
        timeout_s=timeout_s,
    )


def providers_from_env(environ: Mapping[str, str]) -> Providers:
    """Providers for what the environment configures; ValueError for a broken config."""
    timeout_s = _timeout(environ)
    fcm = fcm_from_env(environ, timeout_s)
    return Providers(fcm=fcm, apns=apns_from_env(environ, timeout_s))
