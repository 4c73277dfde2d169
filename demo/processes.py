"""Child processes of the demo, the e2e test and the bench: started in their own process
group with output to a log file, stopped as a group (TERM, then KILL), and sent a signal
by the kernel if the starter dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1
# Resolved before any fork: the pre-exec hook must not load libraries.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


class ProcessError(RuntimeError):
    """A child exited early or did not become ready; the message carries its log tail."""


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent() -> None:
    """Pre-exec hook: the kernel sends the child SIGTERM when the thread that started it
    dies (demo.supervisor starts its processes with it)."""
    _die_with_parent()


class Child:
    """One started command (and everything it forks: its own process group)."""

    def __init__(
        self, name: str, cmd: Sequence[str], *, env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(cmd),
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, not the children
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_log(self, marker: str, timeout: float) -> None:
        """Wait until ``marker`` appears in the log (e.g. Celery's "ready.")."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if marker in self.log_path.read_text(errors="replace"):
                    return
            self._check_alive_before(deadline, f"{marker!r} in its log")
            time.sleep(0.2)

    def _check_alive_before(self, deadline: float, what: str) -> None:
        if not self.running():
            raise ProcessError(f"{self.name} exited with {self.proc.returncode}\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise ProcessError(f"{self.name}: no {what} in time\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the whole group (warm shutdown for Celery), then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; its group may still hold forked children.
            if not _group_alive(self.proc.pid):
                return
            time.sleep(0.5)
            if not _group_alive(self.proc.pid):
                return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all(children: Sequence[Child]) -> None:
    """Stop children in reverse start order, each as a group."""
    for child in reversed(children):
        child.stop()


def venv_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with this interpreter's bin/ first on PATH, so `celery`, `gunicorn` and
    `python` name the virtualenv's, and unbuffered output for readable logs."""
    bin_dir = str(Path(sys.executable).parent)
    path = environ.get("PATH", "")
    return {**environ, "PATH": f"{bin_dir}{os.pathsep}{path}", "PYTHONUNBUFFERED": "1"}
