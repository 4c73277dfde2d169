"""``python -m demo.run`` (``make run``): everything in the Procfile, on this machine.

Ensures the dev servers (or uses REDIS_URL / DATABASE_URL), fills in dev defaults for
``JWT_SECRET_KEY`` (a generated secret kept in var/jwt_secret) and ``FLOWER_BASIC_AUTH``,
then runs the Procfile under ``demo.supervisor``: ``release`` (the migrations) once, then
every other entry, each restarted with backoff if it exits. An embedded server that dies is
restarted the same way, on its port and data dir (``ServerWatch``). Ctrl-C or SIGTERM stops
them all, then the servers.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

from demo.processes import ROOT, venv_env
from demo.supervisor import Backoff, Supervisor, install_signal_handlers, parse_procfile
from devservers import DEFAULT_BASE_DIR, DevServers, ServerStartError

SECRET_FILE = DEFAULT_BASE_DIR / "jwt_secret"
DEV_FLOWER_AUTH = "vigil:vigil-dev"
PROCFILE = ROOT / "Procfile"
RUN_ONCE = ("release",)  # to the end, before the others start


def dev_jwt_secret(path: Path = SECRET_FILE) -> str:
    """A generated secret, kept so tokens survive a restart of `make run`."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


class ServerWatch:
    """Restarts an embedded server of ``servers`` that has died, on the same port and data
    dir (Redis replays its AOF, PostgreSQL recovers), after the supervisor's backoff.

    Called on every supervisor tick. Servers named by REDIS_URL / DATABASE_URL are not ours
    and are not watched.
    """

    def __init__(
        self, servers: DevServers, log: Callable[[str], None], backoff: Backoff | None = None
    ) -> None:
        self.servers = servers
        self.log = log
        self.backoff = backoff or Backoff()
        self._started: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._due: dict[str, float] = {}

    def __call__(self, now: float) -> None:
        for name, server in (("redis", self.servers.redis), ("postgres", self.servers.postgres)):
            if server is None or server.is_running():
                continue
            due = self._due.get(name)
            if due is None:
                uptime = now - self._started.setdefault(name, now)
                delay = self.backoff.next_delay(self._delay.get(name), uptime)
                self._delay[name], self._due[name] = delay, now + delay
                self.log(f"{name} server exited; restarting it in {delay:g} s")
            elif now >= due:
                del self._due[name]
                self._started[name] = time.monotonic()
                try:
                    url = server.start()
                except ServerStartError as err:
                    self.log(f"{name} server did not start: {err}")
                else:
                    self.log(f"{name} server restarted at {url}")


def main() -> int:
    servers = DevServers(DEFAULT_BASE_DIR)
    try:
        urls = servers.start()
        env = venv_env(os.environ)
        env.update(urls)
        if not env.get("JWT_SECRET_KEY"):
            env["JWT_SECRET_KEY"] = dev_jwt_secret()
            print(f"run: JWT_SECRET_KEY from {SECRET_FILE.relative_to(ROOT)}", file=sys.stderr)
        if not env.get("FLOWER_BASIC_AUTH"):
            env["FLOWER_BASIC_AUTH"] = DEV_FLOWER_AUTH
            print(f"run: Flower login (dev default) {DEV_FLOWER_AUTH}", file=sys.stderr)
        for key, value in urls.items():
            print(f"run: {key}={value}", file=sys.stderr)
        print(
            f"run: API on http://127.0.0.1:{env.get('PORT', '5000')}, Flower on "
            f"http://127.0.0.1:{env.get('FLOWER_PORT', '5555')}; Ctrl-C stops all",
            file=sys.stderr,
        )
        supervisor = Supervisor(parse_procfile(PROCFILE), env=env, cwd=ROOT, run_once=RUN_ONCE)
        supervisor.on_tick = ServerWatch(servers, supervisor.log)
        # Set before anything starts, so a Ctrl-C during the migrations stops cleanly too.
        install_signal_handlers(supervisor.stop)
        return supervisor.run()
    finally:
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
