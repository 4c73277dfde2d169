"""The demo's push side: local FCM and APNs servers, the end-of-run summary flush, and what
each server received (so the report shows pushes per provider and that none came twice)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from psycopg_pool import ConnectionPool

from devservers.apns_server import ApnsServer
from devservers.fcm_server import FcmServer
from devservers.push_env import push_env
from notify.links import Links
from notify.providers import providers_from_settings
from notify.sender import send_deliveries
from notify.summaries import SummaryReport, flush_summaries
from vigil.settings import Settings

fcm: FcmServer | None = None
apns: ApnsServer | None = None


def server_env() -> dict[str, str]:
    """Start both local servers; the environment that points the providers at them."""
    global fcm, apns
    fcm, apns = FcmServer().start(), ApnsServer().start()
    return push_env(fcm, apns)


def stop() -> None:
    for server in (fcm, apns):
        if server is not None:
            server.stop()


def flush_and_send(pool: ConnectionPool, env: dict[str, str]) -> SummaryReport:
    """Close every summary window now and push the summaries, as the beat's sweep would."""
    report = flush_summaries(pool, now=datetime.now(UTC) + timedelta(days=1))
    settings = Settings.from_environ(env)
    providers = providers_from_settings(settings)
    try:
        send_deliveries(pool, providers, Links.from_settings(settings), report.deliveries)
    finally:
        providers.close()
    return report


def wait_outbox_drained(pool: ConnectionPool, timeout: float) -> int:
    """Wait for the workers' sender to settle every delivery; returns how many are left."""
    deadline = time.monotonic() + timeout
    while True:
        with pool.connection() as conn:
            left = conn.execute(
                "SELECT count(*) AS n FROM deliveries WHERE status IN ('pending', 'sending')"
            ).fetchone()["n"]
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def server_lines(undelivered: int) -> list[str]:
    """What the local provider servers accepted, and whether any push arrived twice."""
    lines = []
    for name, accepted, push_id in (
        ("FCM ", fcm.accepted if fcm else [], lambda a: a["message"]["data"]["push_id"]),
        ("APNs", apns.accepted if apns else [], lambda a: a["headers"]["apns-id"]),
    ):
        kinds = Counter(_kind(name, a) for a in accepted)
        twice = len(accepted) - len({push_id(a) for a in accepted})
        lines.append(
            f"  {name} server accepted {len(accepted)} pushes ({kinds['alert']} alerts, "
            f"{kinds['summary']} summaries), {twice} twice"
        )
    lines.append(f"  outbox: {undelivered} deliveries still pending at the end")
    return lines


def _kind(name: str, accepted: dict) -> str:
    if name.startswith("FCM"):
        return accepted["message"]["data"].get("kind", "?")
    return accepted["payload"].get("kind", "?")
