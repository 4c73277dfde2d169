"""A real PostgreSQL from the pgserver wheel, run as a child process we own.

pgserver's own `get_server()` is not used: it listens on a unix socket only (`-h ""`),
daemonises through pg_ctl, and as root chmods every parent directory g+rx,o+rx. We use
only its binaries and run `postgres` in the foreground on 127.0.0.1 so Celery workers
and gunicorn in other processes can use a plain postgresql:// URL.

PostgreSQL refuses to run as root (a hard check in initdb and postgres, no override).
When we are root, initdb and postgres run as the unprivileged system user `pgserver`,
the same account pgserver itself creates in that case; it owns only the data directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from ._process import (
    ServerStartError,
    free_port,
    run_logged,
    spawn,
    stop_process,
    wait_for_stale_server,
    wait_until_ready,
)

logger = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
DEFAULT_DATABASE = "vigil"
START_ATTEMPTS = 3
# Durability off for throwaway test clusters: an OS crash could lose recent commits,
# a process crash cannot. Never used by `python -m devservers up`.
NON_DURABLE_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def postgres_bin_dir() -> Path:
    """The bin/ directory of the PostgreSQL build inside the pgserver wheel.

    Located without importing pgserver, whose import scans its bin dir and sets up
    process-wide lock files.
    """
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("pgserver is not installed (pip install -r requirements.txt)")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerStartError(f"pgserver ships no postgres binary in {bin_dir}")
    return bin_dir


class PostgresServer:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1 (TCP only).

    start() runs initdb on first use, starts the server, creates `database` if missing
    and returns its URL. Local connections are trusted: loopback-only, for development.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        database: str = DEFAULT_DATABASE,
        durable: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.host = host
        self.port = port
        self.database = database
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        if self.port is None:
            raise RuntimeError("PostgresServer has not been started")
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> str:
        if self.is_running():
            return self.url
        owner = _server_account()
        self._prepare_data_dir(owner)
        wait_for_stale_server(self.data_dir / "postmaster.pid", name="postgres")
        fixed_port = self.port
        for attempt in range(START_ATTEMPTS):
            self.port = fixed_port or free_port(self.host)
            try:
                self._launch(owner, timeout)
                break
            except ServerStartError:
                if fixed_port is not None or attempt == START_ATTEMPTS - 1:
                    raise
        self._create_database()
        return self.url

    def _prepare_data_dir(self, owner: pwd.struct_passwd | None) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            _grant_traverse(self.data_dir, owner)
            _grant_traverse(postgres_bin_dir(), owner)
            if self.data_dir.stat().st_uid != owner.pw_uid:
                _chown_tree(self.data_dir, owner)
        if not (self.data_dir / "PG_VERSION").exists():
            cmd = [
                str(postgres_bin_dir() / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",  # C collation: no dependency on the machine's locales
            ]
            if not self.durable:
                cmd.append("--no-sync")
            run_logged(cmd, log_path=self.log_path, **_ids(owner))

    def _launch(self, owner: pwd.struct_passwd | None, timeout: float) -> None:
        settings = [
            f"listen_addresses={self.host}",
            f"port={self.port}",
            "unix_socket_directories=",  # TCP only: no socket path length or /run issues
            "timezone=UTC",
            "log_timezone=UTC",
        ]
        if not self.durable:
            settings.extend(NON_DURABLE_SETTINGS)
        cmd = [str(postgres_bin_dir() / "postgres"), "-D", str(self.data_dir)]
        for setting in settings:
            cmd += ["-c", setting]
        # SIGINT is PostgreSQL's "fast shutdown": disconnect clients, checkpoint, exit.
        self._proc = spawn(cmd, log_path=self.log_path, death_signal=signal.SIGINT, **_ids(owner))
        wait_until_ready(
            self._proc,
            lambda: _accepts_connections(self.url_for("postgres")),
            timeout=timeout,
            what="postgres",
            log_path=self.log_path,
        )

    def _create_database(self) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def stop(self, timeout: float = 30.0) -> None:
        if self._proc is not None:
            # Fast shutdown, then immediate shutdown (SIGQUIT), then SIGKILL.
            stop_process(self._proc, signal.SIGINT, timeout=timeout, escalate=[signal.SIGQUIT])
            self._proc = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts_connections(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _server_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    result = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # another process may have created it at the same moment
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise ServerStartError(
            f"cannot create system user {SYSTEM_USER!r} to run PostgreSQL as "
            f"(it refuses to run as root): {result.stderr.strip()}"
        ) from None


def _ids(owner: pwd.struct_passwd | None) -> dict[str, int | None]:
    if owner is None:
        return {"user": None, "group": None}
    return {"user": owner.pw_uid, "group": owner.pw_gid}


def _grant_traverse(path: Path, owner: pwd.struct_passwd) -> None:
    """Let the server account reach `path`: add o+x (search, not listing) where missing.

    Only matters as root, for a data dir or venv below a 0700 directory such as /root.
    Directories that others re-chmod (pytest resets /tmp/pytest-of-root to 0700 at
    every session start) are unreliable: put data dirs elsewhere (see tests/conftest.py).
    """
    for parent in reversed(path.parents):
        info = parent.stat()
        if info.st_uid != owner.pw_uid and not info.st_mode & stat.S_IXOTH:
            logger.warning("chmod o+x %s so %s can reach %s", parent, owner.pw_name, path)
            parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _chown_tree(root: Path, owner: pwd.struct_passwd) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in filenames)):
            os.chown(name, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
