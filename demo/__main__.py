"""``python -m demo`` (``make demo``): the whole system on this machine, end to end.

Starts fresh embedded Redis and PostgreSQL under var/demo/, migrates, starts gunicorn, a
deep worker (GPU if any, else CPU), a CPU worker and celery beat as real processes; creates
users and homes of every tier with the CLI; logs in and registers cameras and phones over
the REST API; sends a paced stream of real photos as the phone app would (the source's JSON
body with an image_url on a local static server, or a multipart upload; some with on-device
results; one event per home from a camera whose web server is down, so armed homes get a
fail-safe alert); waits until every accepted event is settled; folds the held summaries;
prints a report, writes it as JSON to var/demo/report.json and writes annotated snapshots.
Pushes go to local servers that speak FCM HTTP v1 and APNs (HTTP/2, token auth), through
the same providers production uses. Everything it
started is stopped on exit, Ctrl-C or error. Exit status: 0, or 1 if an accepted event was
lost or left unsettled.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections import Counter

from tqdm import tqdm

from demo import household, push, report, street
from demo.client import ApiClient
from demo.processes import ROOT, Child, ProcessError, stop_all, venv_env
from demo.provision import create_users, set_up_home
from demo.scenario import HOMES, PlannedEvent, photo_path, plan_events
from demo.stack import (
    start_beat,
    start_cpu_worker,
    start_deep_worker,
    start_web,
    wait_workers_ready,
)
from demo.static import LOOPBACK_NETWORK, StaticServer, offline_url
from devservers import DevServers
from store.db import create_pool
from store.migrate import migrate

BASE_DIR = ROOT / "var" / "demo"
REPORT_JSON = BASE_DIR / "report.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60, help="events to send (default 60)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between events (default 1.0)"
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=240.0, help="seconds to wait for the last event"
    )
    return parser.parse_args(argv)


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def say(message: str) -> None:
    tqdm.write(message)


def send_events(
    plan: list[PlannedEvent], base_url: str, static: StaticServer, interval: float
) -> tuple[Counter, dict[int, str]]:
    """Post every planned event, paced; returns (sent per tier, accepted id -> tier)."""
    offline = offline_url("snapshot.jpg")
    clients = {}
    sent: Counter = Counter()
    accepted: dict[int, str] = {}
    rejected = 0
    start = time.monotonic()
    bar = tqdm(total=len(plan), unit="event", desc="sending", mininterval=0.5)
    try:
        for i, event in enumerate(plan):
            time.sleep(max(0.0, start + i * interval - time.monotonic()))
            home = event.home
            api = clients.setdefault(home.home_id, ApiClient(base_url, home.token))
            if event.upload:
                status, body = api.post_event_upload(
                    event.fields(None), photo_path(event.photo).read_bytes(), f"{event.photo}.jpg"
                )
            else:
                url = offline if event.offline else static.url(f"{event.photo}.jpg")
                status, body = api.post_event_json(event.fields(url))
            sent[home.spec.tier] += 1
            if 200 <= status < 300:
                accepted[body["event_id"]] = home.spec.tier
            else:
                rejected += 1
                say(f"  refused ({status}): {body}")
            bar.update()
            bar.set_postfix(accepted=len(accepted), refused=rejected)
    finally:
        bar.close()
        for api in clients.values():
            api.close()
    return sent, accepted


def wait_settled(pool, event_ids: list[int], timeout: float, children: list[Child]) -> int:
    """Poll Postgres until every accepted event is settled and digested; returns how many
    are still open when the time is up."""
    deadline = time.monotonic() + timeout
    bar = tqdm(total=len(event_ids), unit="event", desc="settling", mininterval=0.5)
    try:
        while True:
            open_ = report.unsettled(pool, event_ids)
            bar.n = len(event_ids) - open_
            bar.refresh()
            if open_ == 0 or time.monotonic() > deadline:
                return open_
            for child in children:
                if not child.running():
                    raise ProcessError(f"{child.name} died\n{child.log_tail()}")
            time.sleep(0.5)
    finally:
        bar.close()


def run(args: argparse.Namespace, children: list[Child], servers: DevServers) -> int:
    t0 = time.monotonic()
    urls = servers.start()
    migrate(urls["DATABASE_URL"])
    log_dir = BASE_DIR / "logs"
    env = venv_env(os.environ)
    env.update(
        urls,
        CELERY_BROKER_URL=urls["REDIS_URL"],
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        VIGIL_FETCH_ALLOWED_NETWORKS=LOOPBACK_NETWORK,  # the static server below is loopback
        **push.server_env(),
    )
    say(f"servers   redis {urls['REDIS_URL']}  postgres {urls['DATABASE_URL']}")
    say(f"push      FCM HTTP v1 {push.fcm.endpoint}  APNs (h2c) {push.apns.endpoint}")
    web, base_url = start_web(env, log_dir)
    children.append(web)
    env["PUBLIC_BASE_URL"] = base_url  # snapshot links in pushes (workers start later)
    deep = start_deep_worker(env, log_dir)
    children.append(deep)
    cpu = start_cpu_worker(env, log_dir)
    children.append(cpu)
    children.append(start_beat(env, log_dir))
    say(f"web       {base_url} (gunicorn, pid {web.pid}); logs in {log_dir.relative_to(ROOT)}/")
    create_users(HOMES, env)
    homes = [set_up_home(base_url, spec) for spec in HOMES]
    for home in homes:
        s = home.spec
        say(f"home      {s.home:<15} {s.tier:<10} armed {s.arm_mode:<8} user {s.email}")
    shared = household.share_home(base_url, homes[0])
    family = ", ".join(f"{person.email} ({person.role})" for person in household.FAMILY)
    say(f"shared    {homes[0].spec.home}: the owner invited {family}; sam muted his phone")
    say(
        f"escalate  life-safety alerts of {homes[0].spec.home}: sam, then the owner, then"
        f" everyone, {household.ESCALATION_DELAY_S}s apart unless acknowledged"
    )
    wait_workers_ready(deep, cpu)
    ready_s = time.monotonic() - t0
    say(f"workers   deep pid {deep.pid}, cpu pid {cpu.pid}, beat; all ready after {ready_s:.0f}s")

    plan = plan_events(homes, args.events)
    # The owner acknowledges the first alert that escalates, from the app, while events flow.
    acker = threading.Thread(
        target=household.acknowledge_first_escalation,
        args=(base_url, shared, args.settle_timeout),
        daemon=True,
    )
    acker.start()
    with StaticServer(photo_path("person").parent) as static:
        sent, accepted = send_events(plan, base_url, static, args.interval)
        ids = sorted(accepted)
    pool = create_pool_for(urls)
    try:
        still_open = wait_settled(pool, ids, args.settle_timeout, children)
        scene = street.run_scene(base_url, homes[2], pool, timeout=60.0)
        folded_by_beat = _summaries(pool)
        # The beat's sweep folds a home's held events after 30 s without news; rather than
        # wait for it, close every window now, push those summaries, and let the outbox drain.
        folded_now = len(push.flush_and_send(pool, env).summaries)
        escalating = household.wait_escalations_stopped(
            pool, [shared.home.home_id], timeout=4.0 * household.ESCALATION_DELAY_S + 10.0
        )
        undelivered = push.wait_outbox_drained(pool, timeout=30.0)
        snapshots = report.write_snapshots(pool, ids, BASE_DIR / "snapshots")
        elapsed = time.monotonic() - t0
        print()
        print(
            f"Vigil demo report — {len(ids)} of {sum(sent.values())} events accepted, "
            f"{elapsed:.0f}s in all"
        )
        tiers = report.tier_figures(pool, sent, ids)
        for line in report.tier_table(tiers):
            print("  " + line)
        print("  (latency: submit → analysed, from the event row's created_at and analyzed_at)")
        print(report.lite_line(pool, ids))
        for line in report.notification_lines(pool, [h.home_id for h in homes]):
            print(line)
        for line in push.server_lines(undelivered):
            print(line)
        seen = report.api_notification_count(base_url, [h.token for h in homes])
        print(
            "  GET /notifications did not answer"
            if seen is None
            else f"  the phone apps see {seen} of them through GET /notifications"
        )
        print(
            f"summaries: {folded_by_beat} folded by the beat's sweep during the run, "
            f"{folded_now} flushed at the end (their windows closed early)"
        )
        where = (BASE_DIR / "snapshots").relative_to(ROOT)
        print(f"snapshots: {snapshots} annotated JPEGs in {where}/")
        for line in street.scene_lines(homes[2], scene):
            print(line)
        escalations = household.escalation_figures(pool, [shared.home.home_id])
        for line in household.escalation_lines(escalations):
            print(line)
        lost = len(ids) - _known(pool, ids)
        totals = tiers["all"]
        decided = report.decision_figures(pool, [h.home_id for h in homes])
        report.write_json(
            REPORT_JSON,
            {
                "events": {
                    "sent": totals["sent"],
                    "accepted": len(ids),
                    "analysed": totals["analysed"],
                    "skipped": totals["skipped"],
                    "failed": totals["failed"],
                    "lost": lost,
                    "unsettled": still_open,
                },
                "tiers": {t: f for t, f in tiers.items() if t != "all"},
                **decided,
                "pushes_pending": undelivered,
                "members": household.member_figures(pool, [h.home_id for h in homes]),
                "escalations": escalations,
                "escalations_running": escalating,
                "elapsed_s": round(elapsed, 1),
            },
        )
        print(f"report:    {REPORT_JSON.relative_to(ROOT)} (the same figures as JSON)")
        if lost or still_open:
            print(f"FAILED: {lost} accepted events lost, {still_open} not settled in time")
            return 1
        print("every accepted event was settled (analysed, skipped or failed); none lost")
        return 0
    finally:
        pool.close()


def create_pool_for(urls: dict[str, str]):
    return create_pool(urls["DATABASE_URL"], min_size=1, max_size=2)


def _summaries(pool) -> int:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT count(DISTINCT summary_key) AS n FROM notifications WHERE kind = 'summary'"
        ).fetchone()["n"]


def _known(pool, ids: list[int]) -> int:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT count(*) AS n FROM events WHERE id = ANY(%s)", (ids,)
        ).fetchone()["n"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    shutil.rmtree(BASE_DIR, ignore_errors=True)  # fresh each run
    # Always our own embedded servers: the demo's fixed accounts must not meet real data.
    servers = DevServers(BASE_DIR / "servers", environ={}, durable=False)
    children: list[Child] = []
    try:
        return run(args, children, servers)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    except ProcessError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        stop_all(children)
        servers.stop()
        push.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
