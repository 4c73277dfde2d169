"""What a push says: one delivery row (notification + phone) → a provider-neutral message."""

from __future__ import annotations

from typing import Any

from notify.links import Links, deep_link
from notify.push import PushMessage

ALERT_TTL_S = 3600  # an alert an hour late is noise: the summary and the app have it
SUMMARY_TTL_S = 6 * 3600


def collapse_key(row: dict[str, Any]) -> str:
    """Summaries of a home replace each other on the phone; an alert replaces only itself."""
    if row["kind"] == "summary":
        return f"summary-{row['home_id']}"
    return f"event-{row['event_id']}"


def build_message(row: dict[str, Any], links: Links) -> PushMessage:
    """``row``: a claimed delivery joined with its notification, device and event."""
    event_id = row["event_id"]
    snapshot = links.snapshot_url(event_id) if event_id and row["has_snapshot"] else None
    data = {
        "kind": row["kind"],
        "notification_id": str(row["notification_id"]),
        "home_id": str(row["home_id"]),
        "push_id": str(row["push_id"]),
        "deep_link": deep_link(event_id, row["notification_id"]),
    }
    if event_id is not None:
        data["event_id"] = str(event_id)
    if snapshot:
        data["snapshot_url"] = snapshot
    data.update({k: str(v) for k, v in (row.get("data") or {}).items()})
    alert = row["kind"] == "alert"
    return PushMessage(
        delivery_id=row["id"],
        push_id=str(row["push_id"]),
        token=row["push_token"] or "",
        platform=row["platform"],
        kind=row["kind"],
        title=row["title"],
        body=row["body"],
        data=data,
        collapse_key=collapse_key(row),
        thread_id=f"home-{row['home_id']}",
        image_url=snapshot,
        time_sensitive=alert,
        ttl_s=ALERT_TTL_S if alert else SUMMARY_TTL_S,
    )
