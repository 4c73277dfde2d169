"""python -m devservers up|env [--base-dir DIR]

up   start Redis and PostgreSQL (those whose REDIS_URL / DATABASE_URL is unset), write
     DIR/servers.env, stay in the foreground until SIGINT/SIGTERM, then stop them.
env  print DIR/servers.env while an `up` owns DIR; exit 1 if none does.

Load the URLs into a shell with:  set -a; . var/servers.env; set +a
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from . import (
    DEFAULT_BASE_DIR,
    DevServers,
    DevServersError,
    ServerStartError,
    read_env_file,
    servers_running,
)

HEALTH_CHECK_S = 1.0


def up(base_dir: Path) -> int:
    stopping = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stopping.set()

    # Handlers first, so a signal arriving during start-up still stops what has started.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    servers = DevServers(base_dir)
    try:
        urls = servers.start()
    except (ServerStartError, DevServersError) as err:
        print(f"devservers: {err}", file=sys.stderr)
        return 1
    try:
        _print_env(urls)
        if not servers.owned:
            print(
                "devservers: nothing started: the URLs come from the environment "
                f"or from the `up` that already owns {base_dir}",
                file=sys.stderr,
            )
            return 0
        print(f"devservers: up, env in {base_dir / 'servers.env'}; Ctrl-C stops", file=sys.stderr)
        while not stopping.wait(HEALTH_CHECK_S):
            dead = servers.dead()
            if dead:
                print(f"devservers: {', '.join(dead)} exited; stopping", file=sys.stderr)
                return 1
        print("devservers: stopping", file=sys.stderr)
        return 0
    finally:
        servers.stop()


def env(base_dir: Path) -> int:
    if not servers_running(base_dir):
        print(f"devservers: not running for {base_dir}", file=sys.stderr)
        return 1
    _print_env(read_env_file(base_dir))
    return 0


def _print_env(urls: dict[str, str]) -> None:
    for key, value in urls.items():
        print(f"{key}={value}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devservers", description="Embedded Redis and PostgreSQL for development."
    )
    parser.add_argument("command", choices=("up", "env"))
    parser.add_argument("--base-dir", type=Path, default=DEFAULT_BASE_DIR, help="default: var/")
    args = parser.parse_args(argv)
    base_dir = args.base_dir.resolve()
    return up(base_dir) if args.command == "up" else env(base_dir)


if __name__ == "__main__":
    sys.exit(main())
