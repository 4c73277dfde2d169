"""What a push says: one delivery (notification + phone) → a provider-neutral message."""

from __future__ import annotations

import time

from notify import actions
from notify.links import Links, deep_link
from notify.outbox import PushContent
from notify.push import ALERT_CATEGORY, OWNER_ALERT_CATEGORY, PushMessage
from vigil.vocabulary import NotificationKind, Platform, PushAction

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


def category(offered: tuple[PushAction, ...]) -> str | None:
    """The notification category naming this set of buttons, which the apps register."""
    if not offered:
        return None
    return OWNER_ALERT_CATEGORY if PushAction.MUTE_OBJECT in offered else ALERT_CATEGORY


def _action_data(
    row: PushContent, links: Links, offered: tuple[PushAction, ...], now: float
) -> dict[str, str]:
    """What the phone posts an action with: this delivery's token, valid as long as the
    push is worth delivering, and the URL to post it to."""
    if not offered or not links.secret:
        return {}
    expires = int(now) + ttl_s(row.kind)
    return {
        "action_token": actions.sign(links.secret, row.id, expires),
        "action_url": links.action_url(row.notification_id),
        "actions": ",".join(offered),
    }


def build_message(row: PushContent, links: Links, now: float | None = None) -> PushMessage:
    """The push for a delivery whose phone is still there; ``now`` (Unix time) dates its
    links and action token."""
    if row.platform is None:
        raise ValueError(f"delivery {row.id} has no phone to push to")
    now = time.time() if now is None else now
    event_id = row.event_id
    snapshot = links.snapshot_url(event_id, now) if event_id and row.has_snapshot else None
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
    # Actions need the key to sign their token with, like the snapshot link.
    offered = (
        actions.offered(row.kind, row.member_role, row.has_box, row.life_safety)
        if links.secret
        else ()
    )
    data.update(_action_data(row, links, offered, now))
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
        actions=offered,
        category=category(offered),
    )
