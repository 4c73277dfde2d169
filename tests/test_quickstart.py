"""The README's Quickstart, run as written: the stack started as ``make run`` starts it
(``python -m demo.run``, on fresh embedded servers in a folder of the test's, free ports), then
the README's ``sh quickstart`` blocks in one bash with a timeout. The alert must arrive, and
``make run``'s dev defaults must hold: loopback only, a generated Flower password.

Nothing of the test's own is set for the quickstart: no JWT_SECRET_KEY, no DATABASE_URL.
Only PORT, FLOWER_PORT and RUN_DIR move the stack off the developer's own `make run`.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.client import ApiClient
from demo.processes import ROOT, venv_env
from demo.stack import free_port
from tests.api_helpers import wait_for

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
BLOCK = re.compile(r"^```sh (quickstart|quickstart-run)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# What the environment of a developer's shell or of CI might carry that the quickstart must
# not need: the stack makes its own.
NOT_GIVEN = (
    "REDIS_URL",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "JWT_SECRET_KEY",
    "SNAPSHOT_URL_SECRET",
    "FLOWER_BASIC_AUTH",
    "BIND_ADDRESS",
    "VIGIL_WORKER_ROLE",
)
QUICKSTART_TIMEOUT_S = 300
EMAIL, PASSWORD = "ana@example.com", "correct-horse-battery"


def readme_blocks(text: str) -> tuple[list[str], list[str]]:
    """The README's ``sh quickstart-run`` blocks and its ``sh quickstart`` blocks."""
    found = BLOCK.findall(text)
    run = [body for kind, body in found if kind == "quickstart-run"]
    steps = [body for kind, body in found if kind == "quickstart"]
    return run, steps


@dataclass
class Stack:
    env: dict[str, str]
    run_dir: Path
    log: Path
    started: float
    proc: subprocess.Popen[bytes]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    run_dir = tmp_path / "var"
    env = {k: v for k, v in venv_env(os.environ).items() if k not in NOT_GIVEN}
    env.update(PORT=str(free_port()), FLOWER_PORT=str(free_port()), RUN_DIR=str(run_dir))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        started = time.monotonic()
        # What `make run` runs once .venv/ is set up.
        proc = subprocess.Popen(
            [sys.executable, "-m", "demo.run", "--var-dir", str(run_dir)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(env, run_dir, log, started, proc)
    try:
        yield stack
    finally:
        proc.send_signal(signal.SIGTERM)  # Ctrl-C's orderly stop
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print(stack.log_text()[-6000:])


@pytest.mark.unit
def test_the_readme_has_the_quickstart_blocks():
    run, steps = readme_blocks(README.read_text())
    assert run == ["make run\n"]
    assert len(steps) >= 3
    script = "".join(steps)
    for needed in ("make user", "/auth/login", "/devices", "/key", '"arm_mode": "away"'):
        assert needed in script
    assert "curl -sN" in script and "/notifications" in script


def _flower_status(stack: Stack, auth: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.env['FLOWER_PORT']}/")
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_readme_quickstart_runs_as_written_and_the_alert_arrives(stack: Stack):
    _run, steps = readme_blocks(README.read_text())
    done = subprocess.run(
        ["bash", "-e", "-c", "".join(steps)],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=QUICKSTART_TIMEOUT_S,
    )
    alerted_after = time.monotonic() - stack.started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:] + "\n--- make run ---\n" + stack.log_text()[-4000:]
    assert "event: alert" in done.stdout and "Person at the front door" in done.stdout, output
    print(f"quickstart: make run to the alert in {alerted_after:.1f} s")

    # The alert arrived, and its push went to the phone through the embedded provider.
    api = ApiClient(stack.api)
    api.login(EMAIL, PASSWORD)

    def sent_alert():
        notes = api.call("GET", "/notifications?kind=alert")["notifications"]
        person = [n for n in notes if n["title"] == "Person at the front door"]
        delivered = person and person[0]["deliveries"][0]["status"] == "sent"
        return person[0] if delivered else None

    alert = wait_for(sent_alert, timeout=30)
    (delivery,) = alert["deliveries"]
    assert (delivery["device_name"], delivery["provider"]) == ("ana-phone", "embedded")
    api.close()

    # make run's defaults: loopback only, and a generated Flower password, printed.
    log = stack.log_text()
    assert f"Listening at: http://127.0.0.1:{stack.env['PORT']}" in log
    password_file = stack.run_dir / "flower_password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    login = f"vigil:{password_file.read_text().strip()}"
    assert f"Flower login {login}" in log and "vigil-dev" not in log
    assert _flower_status(stack, None) == 401
    assert wait_for(lambda: _flower_status(stack, login) == 200, timeout=30)
    assert f"Visit me at http://127.0.0.1:{stack.env['FLOWER_PORT']}" in stack.log_text()
    assert (stack.run_dir / "dev.env").exists()


def test_make_user_says_to_start_the_servers_first(tmp_path: Path):
    env = {k: v for k, v in venv_env(os.environ).items() if k not in NOT_GIVEN}
    env["RUN_DIR"] = str(tmp_path / "nothing-running")
    done = subprocess.run(
        ["make", "--no-print-directory", "user", f"EMAIL={EMAIL}", f"PASSWORD={PASSWORD}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "make run" in done.stderr
