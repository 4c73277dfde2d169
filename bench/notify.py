"""Alerts through the outbox to local FCM and APNs servers, under injected failures.

    .venv/bin/python bench/notify.py [--homes 50] [--rate 20] [--seconds 15] [--burst 600]

Prints ONE JSON line. Starts its own embedded Redis and PostgreSQL under var/bench-notify/,
a local FCM HTTP v1 server and a local APNs (HTTP/2) server, and one real Celery worker on
the ``digest`` queue (prefork, 2 processes), configured with the servers' credentials.
Every home is armed away with an Android and an iPhone, so each alert is two pushes.
Both servers fail ``--fault-rate`` (10 %) of requests at random with 500, 503 or 429.

1. Latency: analysed events (a person at a door) are written as the deep worker writes
   them, and their ``tasks.digest.digest`` task is sent as the deep batch's chain does, at
   ``--rate`` alerts/s for ``--seconds``. ``alert_latency_p50_ms`` / ``_p99_ms``: event
   ``analyzed_at`` → the first request for that push at the provider server (a failed first
   try counts when it was made, not when the retry landed), both on this machine's clock.
2. Throughput: ``--burst`` alerts sent at once; ``alerts_per_s`` = alerts / seconds from
   the first digest task sent to the last alert's first provider call (both its pushes);
   ``burst_all_delivered_s`` is when the last retried push landed. Baseline in the same
   run: ``provider_direct_per_s``, pushes per second the same providers reach calling the
   servers directly from 8 threads (no database, no broker, no faults).
3. ``duplicates``: pushes a server accepted more than once (same push id); ``lost``:
   deliveries not sent when the outbox drained. The bench sends ``tasks.digest.send_due`` every
   second, as beat does. Baseline in the same run: ``naive_duplicates``, the same alerts
   and fault rate sent the common way — a task that sends to every phone and, on any
   failure, raises to be retried as a whole.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.processes import ROOT, Child, stop_all, venv_env  # noqa: E402
from devservers import DevServers  # noqa: E402
from devservers.apns_server import ApnsServer  # noqa: E402
from devservers.fcm_server import FcmServer  # noqa: E402
from devservers.push_env import push_env  # noqa: E402
from notify.links import Links  # noqa: E402
from notify.providers import providers_from_settings  # noqa: E402
from notify.push import Outcome, PushMessage  # noqa: E402
from store.db import create_pool  # noqa: E402
from store.migrate import migrate  # noqa: E402
from tasks.app import app as celery_app  # noqa: E402
from tasks.app import worker_argv  # noqa: E402
from vigil.settings import Settings  # noqa: E402

BASE_DIR = ROOT / "var" / "bench-notify"
FAULTS = (500, 503, 429)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def provision(pool, homes: int) -> list[tuple[int, int]]:
    """Homes armed away with a camera, an Android phone and an iPhone; (home, camera)."""
    made = []
    with pool.connection() as conn:
        user = conn.execute(
            "INSERT INTO users (email, password_hash) VALUES ('bench@vigil', 'x') RETURNING id"
        ).fetchone()["id"]
        for i in range(homes):
            home = conn.execute(
                "INSERT INTO homes (owner_id, name, tier, arm_mode) VALUES (%s, %s, 'premium',"
                " 'away') RETURNING id",
                (user, f"home {i}"),
            ).fetchone()["id"]
            camera = conn.execute(
                "INSERT INTO devices (home_id, kind, platform, name) VALUES (%s, 'camera',"
                " 'camera', 'cam') RETURNING id",
                (home,),
            ).fetchone()["id"]
            conn.execute(
                "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
                " VALUES (%s, %s, 'phone', 'android', 'android', %s),"
                " (%s, %s, 'phone', 'ios', 'iphone', %s)",
                (home, user, f"bench-android-{home:06d}", home, user, f"{home:064x}"),
            )
            # Every event is news: no cooldown, so each one is an alert.
            conn.execute(
                "INSERT INTO notification_policies (home_id, cooldown_s, hourly_budget,"
                " alert_labels, min_score, summary_window_s, summary_idle_s,"
                " summary_interval_s) VALUES (%s, 0, 1000, '{person,vehicle}', 0.45, 90, 30, 0)",
                (home,),
            )
            made.append((home, camera))
    return made


def analysed_events(pool, homes: list[tuple[int, int]], n: int, offset: int) -> list[int]:
    """``n`` events written as the deep worker writes them: analysed, a person at the door."""
    ids = []
    with pool.connection() as conn:
        for i in range(n):
            home, camera = homes[(offset + i) % len(homes)]
            event = conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score, status,"
                " attempts, analyzed_at) VALUES (%s, %s, 'front_door', 'security', 0.9,"
                " 'analyzed', 1, clock_timestamp()) RETURNING id",
                (home, camera),
            ).fetchone()["id"]
            conn.execute(
                "INSERT INTO detections (event_id, event_created_at, label, score, x1, y1,"
                " x2, y2, model) SELECT id, created_at, 'person', 0.9, 1, 2, 30, 40,"
                " 'nanodet-416' FROM events WHERE id = %s",
                (event,),
            )
            ids.append(event)
    return ids


class Sweeper:
    """Sends ``tasks.digest.send_due`` every second (beat sends it every 2 s): retries land sooner,
    which shortens ``burst_all_delivered_s``; first attempts are not swept."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            celery_app.send_task("tasks.digest.send_due")

    def __enter__(self) -> Sweeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def drain(pool, event_ids: list[int], timeout: float) -> int:
    """Wait until every event is digested and no delivery is left to send; returns how many
    deliveries are still pending when the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        with pool.connection() as conn:
            row = conn.execute(
                """
                SELECT (SELECT count(*) FROM events WHERE id = ANY(%s) AND digest IS NULL)
                           AS undigested,
                       (SELECT count(*) FROM deliveries WHERE status IN ('pending', 'sending'))
                           AS left
                """,
                (event_ids,),
            ).fetchone()
        if (row["undigested"] == 0 and row["left"] == 0) or time.monotonic() > deadline:
            return row["left"] + row["undigested"]
        time.sleep(0.25)


def first_calls(fcm: FcmServer, apns: ApnsServer) -> dict[str, float]:
    """push id → time of the first request for it at either server (accepted or not)."""
    first: dict[str, float] = {}
    for r in fcm.requests:
        if r["path"].endswith(":send") and r.get("body"):
            push_id = json.loads(r["body"])["message"]["data"]["push_id"]
            first[push_id] = min(first.get(push_id, r["time"]), r["time"])
    for r in apns.requests:
        push_id = r["headers"].get("apns-id")
        when = r.get("received_at", r.get("time"))
        if push_id and when is not None:
            first[push_id] = min(first.get(push_id, when), when)
    return first


def accepted_ids(fcm: FcmServer, apns: ApnsServer) -> list[tuple[str, float]]:
    return [(a["message"]["data"]["push_id"], a["received_at"]) for a in fcm.accepted] + [
        (a["headers"]["apns-id"], a["received_at"]) for a in apns.accepted
    ]


def direct_rate(providers, n: int) -> float:
    """Pushes/s the providers reach against the servers with no outbox around them."""
    messages = [
        PushMessage(
            delivery_id=i,
            push_id=f"00000000-0000-4000-8000-{i:012d}",
            token=f"direct-android-{i:06d}" if i % 2 else f"{i:064x}",
            platform="android" if i % 2 else "ios",
            kind="alert",
            title="Person at the front door",
            body="Seen at 12:00 while armed away.",
            data={"kind": "alert", "push_id": f"00000000-0000-4000-8000-{i:012d}"},
            collapse_key=f"event-{i}",
            thread_id="home-1",
            time_sensitive=True,
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda m: providers.for_platform(m.platform).send(m), messages))
    elapsed = time.perf_counter() - start
    if any(o.outcome is not Outcome.SENT for o in outcomes):
        raise RuntimeError("direct sends failed without injected faults")
    return n / elapsed


def naive_duplicates(pool, providers, links, event_ids: list[int]) -> int:
    """The common way: per alert, send to every phone; on any failure retry them all."""
    from psycopg.rows import class_row

    from notify.outbox import PushContent
    from notify.payload import build_message

    with pool.connection() as conn, conn.cursor(row_factory=class_row(PushContent)) as cur:
        rows = cur.execute(
            """
            SELECT d.id, d.push_id, n.id AS notification_id, n.home_id, n.event_id, n.kind,
                   n.title, n.body, n.data, dev.push_token, dev.platform,
                   false AS has_snapshot
            FROM deliveries d JOIN notifications n ON n.id = d.notification_id
            JOIN devices dev ON dev.id = d.device_id
            WHERE n.event_id = ANY(%s) ORDER BY n.event_id, d.id
            """,
            (event_ids,),
        ).fetchall()
    by_event: dict[int | None, list[PushContent]] = {}
    for row in rows:
        by_event.setdefault(row.event_id, []).append(row)
    sent: dict[str, int] = {}
    attempts = 0
    for phones in by_event.values():
        for _attempt in range(8):  # Celery autoretry: the whole task again
            ok = True
            for row in phones:
                result = providers.for_platform(row.platform).send(build_message(row, links))
                attempts += 1
                if result.outcome is Outcome.SENT:
                    sent[str(row.push_id)] = sent.get(str(row.push_id), 0) + 1
                else:
                    ok = False
            if ok:
                break
    log(f"naive: {len(rows)} deliveries, {sum(sent.values())} accepted sends, {attempts} sends")
    return sum(n - 1 for n in sent.values())


def run(args, env: dict[str, str], urls: dict[str, str], children: list[Child]) -> dict:
    pool = create_pool(urls["DATABASE_URL"], min_size=1, max_size=4)
    homes = provision(pool, args.homes)
    with FcmServer() as fcm, ApnsServer() as apns:
        env.update(push_env(fcm, apns), PUSH_BACKOFF_BASE_S="0.5", PUSH_BACKOFF_MAX_S="5")
        settings = Settings.from_environ(env)
        providers = providers_from_settings(settings)
        direct = direct_rate(providers, 400)
        fcm.reset()
        apns.reset()
        log(f"direct provider calls: {direct:.0f} pushes/s")

        worker = Child(
            "worker_push", worker_argv(("digest",), "push", 2), env=env, log_dir=BASE_DIR / "logs"
        )
        children.append(worker)
        worker.wait_for_log("ready.", 60)
        for seed, server in enumerate((fcm, apns), start=7):  # independent draws
            server.fault_rate(args.fault_rate, statuses=FAULTS, seed=seed)

        # 1. latency at a steady rate
        n = int(args.rate * args.seconds)
        ids = analysed_events(pool, homes, n, 0)
        with pool.connection() as conn:
            analysed = {
                r["id"]: r["at"]
                for r in conn.execute(
                    "SELECT id, extract(epoch FROM analyzed_at)::float8 AS at FROM events"
                    " WHERE id = ANY(%s)",
                    (ids,),
                ).fetchall()
            }
        with Sweeper():
            start = time.monotonic()
            for i, event in enumerate(ids):
                time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
                # analysed_at is stamped when the row is written: restamp it now, as the
                # deep worker commits right before chaining the digest.
                with pool.connection() as conn:
                    analysed[event] = conn.execute(
                        "UPDATE events SET analyzed_at = clock_timestamp() WHERE id = %s"
                        " RETURNING extract(epoch FROM analyzed_at)::float8 AS at",
                        (event,),
                    ).fetchone()["at"]
                celery_app.send_task("tasks.digest.digest", args=[[event]])
            left = drain(pool, ids, 120)
        with pool.connection() as conn:
            pushes = conn.execute(
                "SELECT d.push_id::text AS push_id, n.event_id FROM deliveries d"
                " JOIN notifications n ON n.id = d.notification_id WHERE n.event_id = ANY(%s)",
                (ids,),
            ).fetchall()
        first = first_calls(fcm, apns)
        latencies = [
            (first[p["push_id"]] - analysed[p["event_id"]]) * 1000
            for p in pushes
            if p["push_id"] in first
        ]
        log(f"latency phase: {len(latencies)} pushes, {left} left in the outbox")

        # 2. throughput: a burst
        burst = analysed_events(pool, homes, args.burst, n)
        before = len(accepted_ids(fcm, apns))
        with Sweeper():
            t0 = time.time()
            for i in range(0, len(burst), 10):  # as deep batches of 10 chain their digest
                celery_app.send_task("tasks.digest.digest", args=[burst[i : i + 10]])
            left += drain(pool, burst, 300)
        accepted = accepted_ids(fcm, apns)
        if len(accepted) - before < 2 * args.burst:
            raise RuntimeError(f"burst: {len(accepted) - before} of {2 * args.burst} accepted")
        with pool.connection() as conn:
            burst_pushes = [
                r["push_id"]
                for r in conn.execute(
                    "SELECT d.push_id::text AS push_id FROM deliveries d JOIN notifications n"
                    " ON n.id = d.notification_id WHERE n.event_id = ANY(%s)",
                    (burst,),
                ).fetchall()
            ]
        first = first_calls(fcm, apns)
        last_first_call = max(first[p] for p in burst_pushes)
        last = max(t for _, t in accepted if t >= t0)
        alerts_per_s = args.burst / (last_first_call - t0)
        log(
            f"burst: {args.burst} alerts tried in {last_first_call - t0:.1f} s,"
            f" all delivered after {last - t0:.1f} s"
        )

        all_ids = [*ids, *burst]
        with pool.connection() as conn:
            states = {
                r["status"]: r["n"]
                for r in conn.execute(
                    "SELECT status, count(*) AS n FROM deliveries GROUP BY status"
                ).fetchall()
            }
        push_ids = [p for p, _ in accepted]
        duplicates = len(push_ids) - len(set(push_ids))
        requests = len([r for r in fcm.requests if r["path"].endswith(":send")]) + len(
            apns.requests
        )
        lost = sum(n for status, n in states.items() if status != "sent")

        # 3. the naive baseline, same fault rate, on fresh servers' records
        fcm.reset()
        apns.reset()
        for seed, server in enumerate((fcm, apns), start=7):  # independent draws
            server.fault_rate(args.fault_rate, statuses=FAULTS, seed=seed)
        naive = naive_duplicates(pool, providers, Links.from_settings(settings), ids)
        providers.close()
    pool.close()
    return {
        "alerts_per_s": round(alerts_per_s, 1),
        "pushes_per_s": round(2 * alerts_per_s, 1),
        "burst_all_delivered_s": round(last - t0, 2),
        "provider_direct_per_s": round(direct, 1),
        "outbox_over_direct": round(2 * alerts_per_s / direct, 3),
        "alert_latency_p50_ms": round(pct(latencies, 50), 1),
        "alert_latency_p99_ms": round(pct(latencies, 99), 1),
        "alert_latency_max_ms": round(max(latencies), 1),
        "duplicates": duplicates,
        "lost": lost,
        "naive_duplicates": naive,
        "alerts": len(all_ids),
        "pushes": 2 * len(all_ids),
        "provider_requests": requests,
        "delivery_states": states,
        "fault_rate": args.fault_rate,
        "fault_statuses": list(FAULTS),
        "latency_phase": {"rate_per_s": args.rate, "seconds": args.seconds, "alerts": n},
        "burst": args.burst,
        "homes": args.homes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--homes", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0, help="alerts/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--burst", type=int, default=600)
    parser.add_argument("--fault-rate", type=float, default=0.10)
    args = parser.parse_args()

    shutil.rmtree(BASE_DIR, ignore_errors=True)
    (BASE_DIR / "logs").mkdir(parents=True)
    servers = DevServers(BASE_DIR / "servers", environ={}, durable=False)
    children: list[Child] = []
    started = time.monotonic()
    try:
        urls = servers.start()
        migrate(urls["DATABASE_URL"])
        env = venv_env(os.environ)
        env.update(urls, CELERY_BROKER_URL=urls["REDIS_URL"], JWT_SECRET_KEY="bench-secret")
        celery_app.conf.broker_url = urls["REDIS_URL"]
        result = run(args, env, urls, children)
        result = {
            "bench": "notify",
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            **result,
            "runtime_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps(result))
        return 0
    finally:
        stop_all(children)
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
