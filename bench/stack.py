"""What the end-to-end benchmarks share: fresh embedded servers under a folder of their
own, and the environment their processes run with."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from demo.processes import venv_env
from demo.static import LOOPBACK_NETWORK
from devservers import DevServers
from store.migrate import migrate


def fresh_servers(base_dir: Path) -> DevServers:
    """Embedded Redis and PostgreSQL under ``base_dir/servers``, whatever was there removed."""
    shutil.rmtree(base_dir, ignore_errors=True)
    return DevServers(base_dir / "servers", environ={}, durable=False)


def stack_env(urls: dict[str, str], **extra: str) -> dict[str, str]:
    """The processes' environment on the started servers (schema migrated): this
    virtualenv's tools, Celery's broker on Redis DB 1, a fresh JWT secret, and loopback
    image URLs allowed (the benchmarks serve their frames locally)."""
    migrate(urls["DATABASE_URL"])
    env = venv_env(os.environ)
    env.update(
        urls,
        CELERY_BROKER_URL=urls["REDIS_URL"].rsplit("/", 1)[0] + "/1",
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        VIGIL_FETCH_ALLOWED_NETWORKS=LOOPBACK_NETWORK,
        **extra,
    )
    return env
