"""``make run``'s supervisor (demo/supervisor.py) on a tiny Procfile of real processes: a
process that keeps exiting is restarted with growing delays while the others keep running,
``release`` runs once before them, and SIGTERM stops everything, forked children included.
And ``make run``'s watch on the embedded servers brings a killed Redis back on its port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from demo.processes import venv_env
from demo.run import ServerWatch
from demo.supervisor import Backoff, parse_procfile
from devservers import DevServers
from tests.api_helpers import ROOT, wait_for

pytestmark = pytest.mark.e2e

# One script for every entry: it records each start (time, pid, whether release had run).
PROC = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path

    role, here = sys.argv[1], Path(__file__).parent
    if role == "release":
        time.sleep(0.3)
        (here / "released").write_text("done")
        sys.exit(0)
    with open(here / f"{role}.starts", "a") as out:
        out.write(f"{time.time()} {__import__('os').getpid()} {(here / 'released').exists()}\\n")
    if role == "crash":
        time.sleep(0.5)
        sys.exit(3)
    # steady forks a child into its group, as gunicorn and Celery fork theirs
    child = subprocess.Popen(["sleep", "300"])
    (here / "grandchild.pid").write_text(str(child.pid))
    time.sleep(300)
    """
)
PROCFILE = """\
# a comment, and a blank line

release: python proc.py release
steady: python proc.py steady
crash: python proc.py crash
"""


def starts(path: Path) -> list[tuple[float, int, bool]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(float(t), int(pid), flag == "True") for t, pid, flag in rows]


def gone(pid: int) -> bool:
    """No such process any more (a zombie counts as gone: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


@pytest.mark.unit
def test_backoff_doubles_to_its_cap_and_resets_after_a_stable_run() -> None:
    policy = Backoff()  # make run's: 1 s doubling to 30 s, reset after 60 s up
    delays, previous = [], None
    for _ in range(7):
        previous = policy.next_delay(previous, uptime=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert policy.next_delay(30, uptime=59.0) == 30
    assert policy.next_delay(30, uptime=60.0) == 1


@pytest.mark.unit
def test_procfile_entries_are_read_in_order() -> None:
    names = list(parse_procfile(ROOT / "Procfile"))
    assert names[0] == "release"
    assert {"web", "worker_gpu", "worker_cpu", "beat", "flower"} <= set(names)


def test_a_crashing_process_is_restarted_with_growing_delays_and_sigterm_stops_all(
    tmp_path: Path,
) -> None:
    (tmp_path / "proc.py").write_text(PROC)
    (tmp_path / "Procfile").write_text(PROCFILE)
    log = tmp_path / "supervisor.log"
    cmd = [sys.executable, "-m", "demo.supervisor", "-f", str(tmp_path / "Procfile")]
    with open(log, "wb") as out:
        supervisor = subprocess.Popen(
            [*cmd, "--run-once", "release"],
            cwd=ROOT,
            env=venv_env(os.environ),  # `python` in the Procfile is this virtualenv's
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Starts at about 0, 1.5, 4 and 8.5 s: each run lasts 0.5 s, then 1, 2, 4 s of backoff.
        crash_runs = wait_for(lambda: (r := starts(tmp_path / "crash.starts"))[3:] and r, 20)
        steady_runs = starts(tmp_path / "steady.starts")
        assert supervisor.poll() is None, log.read_text()
    except BaseException:
        supervisor.kill()
        supervisor.wait()
        print(log.read_text())
        raise

    waits = [b[0] - a[0] - 0.5 for a, b in zip(crash_runs, crash_runs[1:], strict=False)]
    for waited, delay in zip(waits, (1, 2, 4), strict=False):
        assert delay - 0.05 <= waited <= delay + 1.0, (waits, log.read_text())
    assert waits[0] < waits[1] < waits[2]
    assert all(released for _, _, released in crash_runs + steady_runs)  # release ran first
    assert len(steady_runs) == 1  # never restarted
    steady_pid = steady_runs[0][1]
    assert not gone(steady_pid)
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert not gone(grandchild)
    text = log.read_text()
    assert text.count("crash exited with status 3") >= 3
    for delay in (1, 2, 4):
        assert f"restarting in {delay} s" in text

    supervisor.send_signal(signal.SIGTERM)
    try:
        assert supervisor.wait(timeout=15) == 0
    except subprocess.TimeoutExpired:
        supervisor.kill()
        supervisor.wait()
        pytest.fail(f"supervisor did not stop on SIGTERM\n{log.read_text()}")
    started = [pid for _, pid, _ in starts(tmp_path / "crash.starts")]
    wait_for(lambda: all(gone(pid) for pid in [steady_pid, grandchild, *started]), 5)
    assert "stopped" in log.read_text()
    assert len(starts(tmp_path / "steady.starts")) == 1


def test_a_killed_embedded_redis_is_restarted_on_its_port_from_its_aof(tmp_path: Path) -> None:
    # DATABASE_URL given: only Redis is started (and watched); nothing connects to that URL.
    servers = DevServers(
        tmp_path / "servers", environ={"DATABASE_URL": "postgresql://127.0.0.1:9/none"}
    )
    url = servers.start()["REDIS_URL"]
    said: list[str] = []
    watch = ServerWatch(servers, said.append, Backoff(start=0.2))
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.set("kept", "yes")
        time.sleep(1.2)  # appendfsync everysec: on disk before the kill
        assert servers.redis is not None and servers.redis.pid is not None
        os.kill(servers.redis.pid, signal.SIGKILL)
        wait_for(lambda: not servers.redis.is_running(), 10)
        watch(time.monotonic())  # sees it dead: restart scheduled
        assert said == ["redis server exited; restarting it in 0.2 s"]
        wait_for(lambda: watch(time.monotonic()) or servers.redis.is_running(), 10)
        assert said[1:] == [f"redis server restarted at {url}"]
        assert client.get("kept") == b"yes"
    finally:
        client.close()
        servers.stop()
