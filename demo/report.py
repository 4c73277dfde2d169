"""What the demo prints at the end, read from Postgres (the source of truth): outcomes and
latency per tier, notifications, and annotated snapshots of the analysed events."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from psycopg_pool import ConnectionPool

from demo.scenario import PHOTOS_DIR
from schedules.config import DEFAULT_TIERS
from store.blobs import blob_store
from vigil import settings
from vigil.vocabulary import Reason

SETTLED = ("analyzed", "skipped", "failed")


def unsettled(pool: ConnectionPool, event_ids: Sequence[int]) -> int:
    """Accepted events not yet settled, or settled but not yet through the digest."""
    with pool.connection() as conn:
        row = conn.execute(
            """
            SELECT count(*) FILTER (WHERE status NOT IN ('analyzed', 'skipped', 'failed')
                                       OR digest IS NULL) AS open,
                   count(*) AS known
            FROM events WHERE id = ANY(%s)
            """,
            (list(event_ids),),
        ).fetchone()
    return row["open"] + (len(set(event_ids)) - row["known"])


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def _fmt_s(value: float | None) -> str:
    return "   -  " if value is None else f"{value:5.1f}s"


def tier_figures(
    pool: ConnectionPool, sent: Counter, event_ids: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """Per tier (and "all"): events sent, settled by status, pending, and the p50 / p95 of
    submit → analysed, from each event row's created_at and analyzed_at."""
    with pool.connection() as conn:
        rows = conn.execute(
            """
            SELECT h.tier, e.status,
                   extract(epoch FROM e.analyzed_at - e.created_at)::float AS latency_s
            FROM events e JOIN homes h ON h.id = e.home_id WHERE e.id = ANY(%s)
            """,
            (list(event_ids),),
        ).fetchall()
    by_tier: dict[str, Counter] = defaultdict(Counter)
    latency: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for tier in (row["tier"], "all"):
            by_tier[tier][row["status"]] += 1
            if row["status"] == "analyzed":
                latency[tier].append(row["latency_s"])
    figures = {}
    tiers = [t for t in DEFAULT_TIERS if t in sent or t in by_tier]
    for tier in [*tiers, "all"]:
        counts, lat = by_tier[tier], sorted(latency[tier])
        p50, p95 = percentile(lat, 50), percentile(lat, 95)
        figures[tier] = {
            "sent": sum(sent.values()) if tier == "all" else sent[tier],
            "analysed": counts["analyzed"],
            "skipped": counts["skipped"],
            "failed": counts["failed"],
            "pending": sum(n for status, n in counts.items() if status not in SETTLED),
            "p50_s": None if p50 is None else round(p50, 3),
            "p95_s": None if p95 is None else round(p95, 3),
        }
    return figures


def tier_table(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The per-tier table; each tier's weight (its share of the deep capacity) and its
    homes' plan (events per minute each) beside the figures."""
    lines = [
        f"{'tier':<11} {'weight':>6} {'plan/min':>8} {'sent':>5} {'analysed':>9} {'skipped':>8}"
        f" {'failed':>7} {'pending':>8} {'p50':>7} {'p95':>7}"
    ]
    for tier, f in figures.items():
        config = DEFAULT_TIERS.get(tier)
        weight = f"{config.weight:g}" if config else ""
        plan = f"{config.plan_rate_per_min:g}" if config else ""
        lines.append(
            f"{tier:<11} {weight:>6} {plan:>8} {f['sent']:>5} {f['analysed']:>9}"
            f" {f['skipped']:>8} {f['failed']:>7} {f['pending']:>8}"
            f" {_fmt_s(f['p50_s']):>7} {_fmt_s(f['p95_s']):>7}"
        )
    return lines


HELD_AS_NOT_NEW = (Reason.ZONE, Reason.STATIONARY, Reason.SNOOZED)


def decision_figures(pool: ConnectionPool, home_ids: Sequence[int]) -> dict[str, Any]:
    """Notifications by kind (fail-safe alerts among the alerts), pushes sent per provider,
    and the digest's decisions by reason and by kind."""
    homes = list(home_ids)
    with pool.connection() as conn:
        notes = conn.execute(
            """
            SELECT count(*) FILTER (WHERE kind = 'alert') AS alerts,
                   count(*) FILTER (WHERE kind = 'alert' AND reason = 'failsafe') AS failsafe,
                   count(*) FILTER (WHERE kind = 'summary') AS summaries
            FROM notifications WHERE home_id = ANY(%s)
            """,
            (homes,),
        ).fetchone()
        pushes = conn.execute(
            """
            SELECT provider, count(*) AS n FROM deliveries
            WHERE home_id = ANY(%s) AND status = 'sent' GROUP BY 1 ORDER BY 1
            """,
            (homes,),
        ).fetchall()
        decided = conn.execute(
            """
            SELECT digest AS kind, digest_reason AS reason, count(*) AS n FROM events
            WHERE home_id = ANY(%s) AND digest IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC
            """,
            (homes,),
        ).fetchall()
    reasons: Counter = Counter()
    kinds: Counter = Counter()
    for row in decided:
        reasons[row["reason"]] += row["n"]
        kinds[row["kind"]] += row["n"]
    return {
        "alerts": notes["alerts"],
        "failsafe_alerts": notes["failsafe"],
        "summaries": notes["summaries"],
        "pushes": {row["provider"]: row["n"] for row in pushes},
        # The reasons an alert was held back for what is not new are always listed.
        "decisions": {**dict.fromkeys(HELD_AS_NOT_NEW, 0), **dict(reasons.most_common())},
        "decision_kinds": dict(kinds.most_common()),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """The run's figures as one JSON document, for scripts that check a demo run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def notification_lines(pool: ConnectionPool, home_ids: Sequence[int]) -> list[str]:
    with pool.connection() as conn:
        rows = conn.execute(
            """
            SELECT n.id, n.kind, n.reason, h.tier, n.title, n.body, h.name
            FROM notifications n JOIN homes h ON h.id = n.home_id
            WHERE n.home_id = ANY(%s) ORDER BY n.id
            """,
            (list(home_ids),),
        ).fetchall()
        pushes = conn.execute(
            """
            SELECT coalesce(d.provider, '-') AS provider, dev.platform, d.status, count(*) AS n
            FROM deliveries d LEFT JOIN devices dev ON dev.id = d.device_id
            WHERE d.home_id = ANY(%s) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """,
            (list(home_ids),),
        ).fetchall()
    decided = decision_figures(pool, home_ids)
    kinds = Counter(r["kind"] for r in rows)
    per_tier = Counter((r["tier"], r["kind"]) for r in rows)
    lines = [
        f"notifications: {kinds['alert']} alerts ({decided['failsafe_alerts']} of them fail-safe:"
        f" the picture could not be analysed), {kinds['summary']} summaries",
        "  decisions by kind: "
        + (", ".join(f"{k} {n}" for k, n in decided["decision_kinds"].items()) or "none"),
        "  decisions by reason: "
        + (", ".join(f"{r} {n}" for r, n in decided["decisions"].items()) or "none"),
        "  by tier:     "
        + ", ".join(
            f"{t} {per_tier[(t, 'alert')]} alerts / {per_tier[(t, 'summary')]} summaries"
            for t in DEFAULT_TIERS
        ),
        "  pushes by provider: "
        + ", ".join(f"{p['provider']} → {p['platform']} {p['status']}: {p['n']}" for p in pushes),
    ]
    for kind, failsafe in (("alert", False), ("alert", True), ("summary", False)):
        seen: set[str] = set()
        samples = []
        for r in rows:  # one example per home, so the lines differ
            if r["kind"] != kind or (r["reason"] == "failsafe") != failsafe:
                continue
            if r["name"] not in seen and len(samples) < (2 if failsafe else 3):
                seen.add(r["name"])
                samples.append(r)
        name = "fail-safe" if failsafe else kind
        for r in samples:
            lines.append(f"  e.g. {name:<9} {r['name']}: {r['title']} — {r['body']}")
    return lines


def write_snapshots(pool: ConnectionPool, event_ids: Sequence[int], out_dir: Path) -> int:
    """An annotated JPEG per analysed event, from its stored frame (or the served photo
    its image_url names) and its stored detections."""
    from inference.annotate import annotate  # imports torch: only at the very end
    from inference.contract import Detection
    from inference.images import decode_image

    out_dir.mkdir(parents=True, exist_ok=True)
    with pool.connection() as conn:
        events = conn.execute(
            "SELECT id, location, image, image_key, image_url FROM events "
            "WHERE id = ANY(%s) AND status = 'analyzed' ORDER BY id",
            (list(event_ids),),
        ).fetchall()
        detections = defaultdict(list)
        for d in conn.execute(
            "SELECT event_id, label, score, x1, y1, x2, y2 FROM detections "
            "WHERE event_id = ANY(%s) ORDER BY score DESC",
            ([e["id"] for e in events],),
        ).fetchall():
            detections[d["event_id"]].append(
                Detection(d["label"], d["score"], (d["x1"], d["y1"], d["x2"], d["y2"]))
            )
    blobs = blob_store(settings.current())  # the web process's: the same environment
    for event in events:
        if event["image_key"] is not None:
            stored = blobs.get(event["image_key"])
            if stored is None:
                continue
            data = stored
        elif event["image"] is not None:
            data = bytes(event["image"])
        else:  # served by the demo's static server from the photos directory
            data = (PHOTOS_DIR / Path(urlsplit(event["image_url"]).path).name).read_bytes()
        frame = annotate(decode_image(data), detections[event["id"]])
        frame.save(out_dir / f"event-{event['id']:04d}-{event['location']}.jpg", quality=88)
    return len(events)


def lite_line(pool: ConnectionPool, event_ids: Sequence[int]) -> str:
    with pool.connection() as conn:
        row = conn.execute(
            """
            SELECT count(*) FILTER (WHERE lite_results ->> 'source' = 'server_lite') AS server,
                   count(*) FILTER (WHERE lite_results IS NOT NULL
                                    AND lite_results ->> 'source' IS NULL) AS device,
                   count(*) FILTER (WHERE lite_results IS NULL) AS neither
            FROM events WHERE id = ANY(%s)
            """,
            (list(event_ids),),
        ).fetchone()
    return (
        f"lite scores: {row['device']} sent by the phone, {row['server']} by the server's lite "
        f"scorer (CPU worker), {row['neither']} dispatched before a lite score"
    )


def api_notification_count(base_url: str, tokens: Sequence[str]) -> int | None:
    """Notifications the users see through GET /notifications (None if no such route)."""
    from demo.client import ApiClient

    total = 0
    for token in tokens:
        api = ApiClient(base_url, token)
        try:
            cursor = None
            while True:
                path = "/notifications?limit=100" + (f"&cursor={cursor}" if cursor else "")
                status, page = api.request("GET", path)
                if status != 200 or not isinstance(page, dict) or "notifications" not in page:
                    return None
                total += len(page["notifications"])
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        finally:
            api.close()
    return total
