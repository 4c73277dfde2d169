"""What a push says: one delivery (notification + phone) → a provider-neutral message."""

from __future__ import annotations

from notify.links import Links, deep_link
from notify.outbox import PushContent
from notify.push import PushMessage
from vigil.vocabulary import NotificationKind, Platform

ALERT_TTL_S = 3600  # an alert an hour late is noise: the summary and the app have it
SUMMARY_TTL_S = 6 * 3600


def ttl_s(kind: str) -> int:
    """How long a push of this kind is worth delivering."""
    return ALERT_TTL_S if kind == NotificationKind.ALERT else SUMMARY_TTL_S


def collapse_key(row: PushContent) -> str:
    """Summaries of a home replace each other on the phone; an alert replaces only itself."""
    if row.kind == NotificationKind.SUMMARY:
        return f"summary-{row.home_id}"
    return f"event-{row.event_id}"


def build_message(row: PushContent, links: Links) -> PushMessage:
    """The push for a delivery whose phone is still there."""
    if row.platform is None:
        raise ValueError(f"delivery {row.id} has no phone to push to")
    event_id = row.event_id
    snapshot = links.snapshot_url(event_id) if event_id and row.has_snapshot else None
    data = {
        "kind": row.kind,
        "notification_id": str(row.notification_id),
        "home_id": str(row.home_id),
        "push_id": str(row.push_id),
        "deep_link": deep_link(event_id, row.notification_id),
    }
    if event_id is not None:
        data["event_id"] = str(event_id)
    if snapshot:
        data["snapshot_url"] = snapshot
    data.update({k: str(v) for k, v in row.data.items()})
    kind = NotificationKind(row.kind)
    return PushMessage(
        delivery_id=row.id,
        push_id=str(row.push_id),
        token=row.push_token or "",
        platform=Platform(row.platform),
        kind=kind,
        title=row.title,
        body=row.body,
        data=data,
        collapse_key=collapse_key(row),
        thread_id=f"home-{row.home_id}",
        image_url=snapshot,
        time_sensitive=kind == NotificationKind.ALERT,
        ttl_s=ttl_s(kind),
        critical=row.critical,
    )
