"""What the demo prints at the end, read from Postgres (the source of truth): outcomes and
latency per tier, notifications, and annotated snapshots of the analysed events."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from psycopg_pool import ConnectionPool

from demo.scenario import PHOTOS_DIR
from schedules.config import DEFAULT_TIERS

SETTLED = ("analyzed", "skipped", "failed")


def unsettled(pool: ConnectionPool, event_ids: Sequence[int]) -> int:
    """Accepted events not yet settled, or analysed but not yet through the digest."""
    with pool.connection() as conn:
        row = conn.execute(
            """
            SELECT count(*) FILTER (WHERE status NOT IN ('analyzed', 'skipped', 'failed')
                                       OR (status = 'analyzed' AND digest IS NULL)) AS open,
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


def tier_table(pool: ConnectionPool, sent: Counter, event_ids: Sequence[int]) -> list[str]:
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
        by_tier[row["tier"]][row["status"]] += 1
        if row["status"] == "analyzed":
            latency[row["tier"]].append(row["latency_s"])
    lines = [
        f"{'tier':<11} {'rate/min':>8} {'sent':>5} {'analysed':>9} {'skipped':>8} {'failed':>7}"
        f" {'pending':>8} {'p50':>7} {'p95':>7}"
    ]
    tiers = [t for t in DEFAULT_TIERS if t in sent or t in by_tier]
    for tier in tiers:
        counts, lat = by_tier[tier], sorted(latency[tier])
        pending = sum(n for status, n in counts.items() if status not in SETTLED)
        lines.append(
            f"{tier:<11} {DEFAULT_TIERS[tier].rate_per_min:>8.0f} {sent[tier]:>5}"
            f" {counts['analyzed']:>9} {counts['skipped']:>8} {counts['failed']:>7}"
            f" {pending:>8} {_fmt_s(percentile(lat, 50)):>7} {_fmt_s(percentile(lat, 95)):>7}"
        )
    everything = sorted(r["latency_s"] for r in rows if r["status"] == "analyzed")
    lines.append(
        f"{'all':<11} {'':>8} {sum(sent.values()):>5}"
        f" {sum(c['analyzed'] for c in by_tier.values()):>9}"
        f" {sum(c['skipped'] for c in by_tier.values()):>8}"
        f" {sum(c['failed'] for c in by_tier.values()):>7}"
        f" {sum(n for c in by_tier.values() for s, n in c.items() if s not in SETTLED):>8}"
        f" {_fmt_s(percentile(everything, 50)):>7} {_fmt_s(percentile(everything, 95)):>7}"
    )
    return lines


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
        folded = conn.execute(
            """
            SELECT digest_reason AS reason, count(*) AS n FROM events
            WHERE home_id = ANY(%s) AND digest = 'summary' GROUP BY 1 ORDER BY 2 DESC
            """,
            (list(home_ids),),
        ).fetchall()
    kinds = Counter(r["kind"] for r in rows)
    per_tier = Counter((r["tier"], r["kind"]) for r in rows)
    lines = [
        f"notifications: {kinds['alert']} alerts, {kinds['summary']} summaries",
        "  events folded into summaries, by reason: "
        + (", ".join(f"{r['reason']} {r['n']}" for r in folded) or "none"),
        "  by tier:     "
        + ", ".join(
            f"{t} {per_tier[(t, 'alert')]} alerts / {per_tier[(t, 'summary')]} summaries"
            for t in DEFAULT_TIERS
        ),
        "  pushes by provider: "
        + ", ".join(f"{p['provider']} → {p['platform']} {p['status']}: {p['n']}" for p in pushes),
    ]
    for kind in ("alert", "summary"):
        seen: set[str] = set()
        samples = []
        for r in rows:  # one example per home, so the lines differ
            if r["kind"] == kind and r["name"] not in seen and len(samples) < 3:
                seen.add(r["name"])
                samples.append(r)
        for r in samples:
            lines.append(f"  e.g. {kind:<7} {r['name']}: {r['title']} — {r['body']}")
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
            "SELECT id, location, image, image_url FROM events "
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
    for event in events:
        if event["image"] is not None:
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
