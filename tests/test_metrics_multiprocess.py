"""GET /metrics under gunicorn with two worker processes: prometheus_client's multiprocess
mode (webapp/gunicorn_conf.py) makes every counter exact, whichever worker answers the
scrape, and keeps it exact when a worker dies and is replaced.

gunicorn runs as the Procfile runs it (``demo.stack.start_web``), on the session's Redis
and PostgreSQL; requests go over real sockets, one connection each, from several threads at
once, so the kernel hands them to both workers.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from demo.processes import Child
from demo.stack import start_web
from tests.api_helpers import stack_env, wait_for
from webapp import gunicorn_conf

pytestmark = pytest.mark.e2e

REJECTED = "vigil_events_rejected_total"
COUNT = "vigil_http_request_duration_seconds_count"
POST_EVENTS = (("method", "POST"), ("route", "/events"), ("status", "4xx"))
DB_FILE = re.compile(r"(?P<kind>.+)_(?P<pid>\d+)\.db")


def post_without_credentials(base_url: str) -> int:
    """POST /events with no token: refused (4xx) and counted, touching no data."""
    request = urllib.request.Request(
        base_url + "/events",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def send(base_url: str, n: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: post_without_credentials(base_url), range(n)))
    assert len(statuses) == n and all(400 <= s < 500 for s in statuses), set(statuses)


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def rejected(samples: dict[tuple[str, tuple], float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == REJECTED)  # every code


def posts_by_process(metrics_dir: Path) -> dict[int, float]:
    """POST /events counted by each worker process, from its own files alone."""
    files: dict[int, list[str]] = defaultdict(list)
    for path in metrics_dir.glob("*.db"):
        match = DB_FILE.fullmatch(path.name)
        assert match, path.name
        files[int(match["pid"])].append(str(path))
    counts = {}
    for pid, paths in files.items():
        merged = MultiProcessCollector.merge(paths, accumulate=True)
        counts[pid] = sum(
            s.value
            for metric in merged
            for s in metric.samples
            if s.name == COUNT and tuple(sorted(s.labels.items())) == POST_EVENTS
        )
    return counts


def live_workers(metrics_dir: Path) -> list[int]:
    """Worker processes with a live gauge file: booted, not yet marked dead."""
    return [int(p.name.split("_")[-1][:-3]) for p in metrics_dir.glob("gauge_livesum_*.db")]


@pytest.fixture
def web_env(redis_url, database_url, db, redis_client, tmp_path) -> dict[str, str]:
    # TMPDIR: where gunicorn_conf makes its metrics folder.
    env = stack_env(redis_url, database_url, TMPDIR=str(tmp_path))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def test_counters_are_exact_across_two_workers_and_a_replaced_one(web_env, tmp_path):
    web, base_url = start_web(web_env, tmp_path / "logs", workers=2, threads=4)
    metrics_dir = tmp_path / f"vigil-web-metrics-{web.pid}"
    try:
        assert metrics_dir.is_dir()
        wait_for(lambda: len(live_workers(metrics_dir)) == 2, 60)  # both booted
        # Rounds until both workers have served some (the kernel picks who accepts).
        n = 0
        while n < 2000 and len([c for c in posts_by_process(metrics_dir).values() if c]) < 2:
            send(base_url, 100)
            n += 100
        samples = scrape(base_url)
        assert rejected(samples) == n
        assert samples[(COUNT, POST_EVENTS)] == n
        by_pid = posts_by_process(metrics_dir)
        served = {pid: count for pid, count in by_pid.items() if count}
        assert len(served) == 2, by_pid  # both workers served some: the sum is exact
        assert sum(served.values()) == n

        # A worker killed outright: its counts stay, its live gauge goes, a new one serves.
        victim = max(served, key=lambda pid: served[pid])
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not (metrics_dir / f"gauge_livesum_{victim}.db").exists(), 30)
        (replacement,) = wait_for(lambda: set(live_workers(metrics_dir)) - set(by_pid), 60)
        m = 50
        send(base_url, m)
        samples = scrape(base_url)
        assert rejected(samples) == n + m
        assert samples[(COUNT, POST_EVENTS)] == n + m
        assert samples[("vigil_http_requests_in_flight", ())] == 1  # the scrape itself
        after = posts_by_process(metrics_dir)
        assert after[victim] == served[victim]
        assert set(after) == {*by_pid, replacement}
        assert set(live_workers(metrics_dir)) == set(served) - {victim} | {replacement}
    finally:
        web.stop()
    assert not metrics_dir.exists()  # a folder gunicorn_conf made up is removed at exit


def test_a_configured_folder_is_emptied_at_start_and_kept(web_env, tmp_path):
    metrics_dir = tmp_path / "operator-metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"a previous server's counts")
    (metrics_dir / "notes.txt").write_text("not ours")
    web_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    web: Child | None = None
    try:
        web, base_url = start_web(web_env, tmp_path / "logs", workers=2, threads=4)
        assert not (metrics_dir / "counter_1.db").exists()
        send(base_url, 10)
        assert rejected(scrape(base_url)) == 10
    finally:
        if web is not None:
            web.stop()
    assert (metrics_dir / "notes.txt").exists() and list(metrics_dir.glob("*.db"))


@pytest.mark.unit
def test_the_reset_removes_only_metrics_files(tmp_path):
    folder = tmp_path / "m"
    gunicorn_conf.reset_metrics_dir(folder)  # made when missing
    (folder / "histogram_12.db").write_bytes(b"x")
    (folder / "keep.txt").write_text("x")
    gunicorn_conf.reset_metrics_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


@pytest.mark.unit
def test_workers_get_the_folder_through_the_environment_before_they_fork():
    # gunicorn sets raw_env in the master before it forks; a worker that imported
    # prometheus_client without it would count alone, which the test above would see.
    assert gunicorn_conf.raw_env == [f"PROMETHEUS_MULTIPROC_DIR={gunicorn_conf.METRICS_DIR}"]
    top_level = [
        node
        for node in ast.parse(Path(gunicorn_conf.__file__).read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not [name for name in names if name.startswith("prometheus_client")]
