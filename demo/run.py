"""``python -m demo.run`` (``make run``): everything in the Procfile, on this machine.

Ensures the dev servers (or uses REDIS_URL / DATABASE_URL), fills in dev defaults, then
runs the Procfile under ``demo.supervisor``: ``release`` (the migrations) once, then every
other entry, each restarted with backoff if it exits. An embedded server that dies is
restarted the same way, on its port and data dir (``ServerWatch``). Ctrl-C or SIGTERM stops
them all, then the servers.

Dev defaults, each only when the variable is unset:

- ``BIND_ADDRESS=127.0.0.1``: the API and Flower listen on this machine only;
- ``JWT_SECRET_KEY``: a generated secret kept in ``<var>/jwt_secret``;
- ``FLOWER_BASIC_AUTH``: ``vigil:<a generated password>`` kept in ``<var>/flower_password``
  and printed at start.

While it runs, ``<var>/dev.env`` holds what a command line needs to reach these servers
(``REDIS_URL``, ``DATABASE_URL``, ``JWT_SECRET_KEY``) as shell assignments: ``make user``
reads it. ``<var>`` is ``var/`` unless ``--var-dir`` names another folder.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from demo.processes import ROOT, venv_env
from demo.supervisor import Backoff, Supervisor, install_signal_handlers, parse_procfile
from devservers import DATABASE_URL, DEFAULT_BASE_DIR, REDIS_URL, DevServers, ServerStartError

FLOWER_USER = "vigil"
DEV_BIND_ADDRESS = "127.0.0.1"
DEV_ENV_FILE = "dev.env"
# What `make user` and other commands need from the running stack, written to dev.env.
DEV_ENV_KEYS = (REDIS_URL, DATABASE_URL, "CELERY_BROKER_URL", "JWT_SECRET_KEY")
PROCFILE = ROOT / "Procfile"
RUN_ONCE = ("release",)  # to the end, before the others start


def _private_write(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def kept_secret(path: Path, nbytes: int = 48) -> str:
    """A generated secret, kept in ``path`` so it survives a restart of `make run`."""
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(nbytes)
    _private_write(path, secret + "\n")
    return secret


def dev_jwt_secret(var_dir: Path = DEFAULT_BASE_DIR) -> str:
    return kept_secret(var_dir / "jwt_secret")


def dev_flower_auth(var_dir: Path = DEFAULT_BASE_DIR) -> str:
    """Flower's login, ``user:password``, with a password generated once per var dir."""
    return f"{FLOWER_USER}:{kept_secret(var_dir / 'flower_password', 18)}"


def dev_env_text(env: Mapping[str, str]) -> str:
    """``env``'s DEV_ENV_KEYS as shell assignments (``set -a; . dev.env`` exports them)."""
    lines = ["# Written by `make run` while it runs: the dev servers and secret it uses.\n"]
    lines += [f"{key}={shlex.quote(env[key])}\n" for key in DEV_ENV_KEYS if env.get(key)]
    return "".join(lines)


def write_dev_env(var_dir: Path, env: Mapping[str, str]) -> Path:
    """``<var>/dev.env``, written when the migrations are done (``make user`` may run)."""
    path = var_dir / DEV_ENV_FILE
    path.unlink(missing_ok=True)
    _private_write(path, dev_env_text(env))
    return path


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


def dev_defaults(env: dict[str, str], var_dir: Path, say: Callable[[str], None]) -> None:
    """Fill in the dev defaults (module docstring) that ``env`` does not set."""
    if not env.get("BIND_ADDRESS"):
        env["BIND_ADDRESS"] = DEV_BIND_ADDRESS
    if not env.get("JWT_SECRET_KEY"):
        env["JWT_SECRET_KEY"] = dev_jwt_secret(var_dir)
        say(f"JWT_SECRET_KEY from {_shown(var_dir / 'jwt_secret')}")
    if not env.get("FLOWER_BASIC_AUTH"):
        env["FLOWER_BASIC_AUTH"] = dev_flower_auth(var_dir)
        say(
            f"Flower login {env['FLOWER_BASIC_AUTH']} "
            f"(generated, kept in {_shown(var_dir / 'flower_password')})"
        )


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=DEFAULT_BASE_DIR,
        help="where the servers' data, the generated secrets and dev.env live (default: var/)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    var_dir = parse_args(argv).var_dir.resolve()

    def say(text: str) -> None:
        print(f"run: {text}", file=sys.stderr)

    (var_dir / DEV_ENV_FILE).unlink(missing_ok=True)  # left by a run that was killed
    servers = DevServers(var_dir)
    try:
        urls = servers.start()
        env = venv_env(os.environ)
        env.update(urls)
        dev_defaults(env, var_dir, say)
        for key, value in urls.items():
            say(f"{key}={value}")
        host = env["BIND_ADDRESS"]
        say(
            f"API on http://{host}:{env.get('PORT', '5000')} (docs at /docs), Flower on "
            f"http://{host}:{env.get('FLOWER_PORT', '5555')}; Ctrl-C stops all"
        )
        supervisor = Supervisor(parse_procfile(PROCFILE), env=env, cwd=ROOT, run_once=RUN_ONCE)
        supervisor.on_tick = ServerWatch(servers, supervisor.log)
        # Set before anything starts, so a Ctrl-C during the migrations stops cleanly too.
        install_signal_handlers(supervisor.stop)

        def started() -> None:
            path = write_dev_env(var_dir, env)
            supervisor.log(f"migrations applied; settings for `make user` in {_shown(path)}")

        supervisor.on_started = started
        return supervisor.run()
    finally:
        # The servers it names stop now: nothing may use it after.
        (var_dir / DEV_ENV_FILE).unlink(missing_ok=True)
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
