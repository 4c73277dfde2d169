"""The environment that points Vigil's push providers at the local FCM and APNs servers."""

from __future__ import annotations

import json

from devservers.apns_server import ApnsServer
from devservers.fcm_server import FcmServer


def push_env(fcm: FcmServer | None, apns: ApnsServer | None) -> dict[str, str]:
    """FCM_* and APNS_* variables for the servers given (``notify.providers`` reads them)."""
    env: dict[str, str] = {}
    if fcm is not None:
        env.update(
            FCM_CREDENTIALS_JSON=json.dumps(fcm.service_account_info()),
            FCM_ENDPOINT=fcm.endpoint,
        )
    if apns is not None:
        env.update(
            APNS_KEY=apns.key_pem(),
            APNS_KEY_ID=apns.key_id,
            APNS_TEAM_ID=apns.team_id,
            APNS_TOPIC=apns.topic,
            APNS_ENDPOINT=apns.endpoint,
        )
    return env
