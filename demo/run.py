"""``python -m demo.run`` (``make run``): everything in the Procfile, on this machine.

Ensures the dev servers (or uses REDIS_URL / DATABASE_URL), applies the migrations itself
(the Procfile's ``release``), fills in dev defaults for ``JWT_SECRET_KEY`` (a generated
secret kept in var/jwt_secret) and ``FLOWER_BASIC_AUTH``, then runs ``honcho start`` with
the other Procfile entries in the foreground. Ctrl-C stops them all, then the servers.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from demo.processes import ROOT, venv_env
from devservers import DEFAULT_BASE_DIR, DevServers
from store.migrate import migrate

SECRET_FILE = DEFAULT_BASE_DIR / "jwt_secret"
DEV_FLOWER_AUTH = "vigil:vigil-dev"
SKIPPED = ("release",)  # run here, before the others start


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


def procfile_entries(path: Path = ROOT / "Procfile") -> list[str]:
    names = re.findall(r"^([A-Za-z0-9_]+):", path.read_text(), flags=re.MULTILINE)
    return [name for name in names if name not in SKIPPED]


def main() -> int:
    servers = DevServers(DEFAULT_BASE_DIR)
    try:
        urls = servers.start()
        migrate(urls["DATABASE_URL"])
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
        cmd = [sys.executable, "-m", "honcho", "-f", str(ROOT / "Procfile"), "start"]
        honcho = subprocess.Popen(cmd + procfile_entries(), cwd=ROOT, env=env)
        # Ctrl-C reaches honcho too (same terminal group); it stops its processes, we wait.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: honcho.terminate())
        return honcho.wait()
    finally:
        servers.stop()


if __name__ == "__main__":
    sys.exit(main())
