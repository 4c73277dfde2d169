"""Process plumbing shared by the embedded servers: ports, spawning, readiness, stopping."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

# Resolved once in the parent: the pre-exec hook runs between fork and exec, where
# loading a library or importing anything could deadlock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


class ServerStartError(RuntimeError):
    """An embedded server did not come up; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (callers retry if they lose the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent(death_signal: int) -> Callable[[], None] | None:
    """Pre-exec hook: the kernel sends `death_signal` to the server when we die.

    This is what keeps a SIGKILLed test run or launcher from leaving orphaned servers
    holding the data directories.
    """
    if _prctl is None:
        return None

    def hook() -> None:
        _prctl(_PR_SET_PDEATHSIG, death_signal)

    return hook


def spawn(
    cmd: Sequence[str],
    *,
    log_path: Path,
    death_signal: int,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session with stdout/stderr appended to `log_path`.

    Its own session keeps a terminal's Ctrl-C away from the server, so the owner
    decides how it shuts down.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(death_signal),
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )


def run_logged(
    cmd: Sequence[str], *, log_path: Path, user: int | None = None, group: int | None = None
) -> None:
    """Run a one-shot tool (initdb) to completion, raising with its log tail on failure."""
    with open(log_path, "ab") as log:
        result = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
            check=False,
        )
    if result.returncode != 0:
        raise ServerStartError(
            f"{Path(cmd[0]).name} exited with {result.returncode}\n{log_tail(log_path)}"
        )


def wait_for_stale_server(pid_file: Path, *, name: str, timeout: float = 30.0) -> None:
    """Wait for a previous server on the same data dir (named by its pid file) to exit.

    A killed owner's server gets its death signal but may still be flushing; starting a
    second one on the same files meanwhile would fail (postgres) or race (redis AOF).
    Both servers chdir into their data dir, which tells them apart from a reused pid.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + timeout
    while _runs_in(pid, pid_file.parent):
        if time.monotonic() > deadline:
            raise ServerStartError(f"{name} (pid {pid}) is still running in {pid_file.parent}")
        time.sleep(0.1)


def _runs_in(pid: int, directory: Path) -> bool:
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return cwd == str(directory) and state != "Z"


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    probe: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    log_path: Path,
) -> None:
    """Poll `probe` until it returns True; fail fast if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerStartError(
                f"{what} exited with {proc.returncode} during start-up\n{log_tail(log_path)}"
            )
        if probe():
            return
        if time.monotonic() > deadline:
            stop_process(proc, signal.SIGKILL, timeout=5)
            raise ServerStartError(f"{what} not ready after {timeout:.0f}s\n{log_tail(log_path)}")
        time.sleep(0.05)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int, *, timeout: float, escalate: Sequence[int] = ()
) -> None:
    """Send `sig` and wait; then each signal of `escalate` in turn, then SIGKILL."""
    for step in (sig, *escalate, signal.SIGKILL):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, step)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
