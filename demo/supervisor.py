"""A small Procfile supervisor for ``make run``: a crashed process is restarted, not fatal.

A Procfile runner such as honcho stops every process as soon as one exits. Here a process
that exits is started again after a backoff delay: ``backoff_start`` (1 s), doubled
after each quick exit up to ``backoff_max`` (30 s), and back to ``backoff_start`` once a run
lasted ``stable_after`` (60 s). Every exit and restart is logged. Only a stop request
(SIGINT / SIGTERM to ``python -m demo.supervisor``, or ``stop()``) stops everything.

Each entry runs as ``/bin/sh -c COMMAND`` (Procfile lines use ``${VAR:-default}``) in its own
process group, so stopping it reaches whatever it forked (gunicorn and Celery pool
processes): SIGTERM to the group, SIGKILL after ``stop_timeout``. Children also get SIGTERM
from the kernel if the supervisor itself dies. Run-once entries (``release``) run to the end,
in order, before the others start; if one fails nothing else starts.

Output is prefixed with the time and the entry's name, as Procfile runners do:
``12:00:01 worker_cpu | ...``; the supervisor's own lines come as ``supervisor``.

``python -m demo.supervisor [-f Procfile] [--run-once release] [NAME ...]`` runs a Procfile
on its own (the tests use it); ``python -m demo.run`` adds the dev servers and defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from demo.processes import die_with_parent

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
STOP_TIMEOUT_S = 10.0
TICK_S = 0.1
SELF = "supervisor"

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+?)\s*$")


def parse_procfile(path: Path) -> dict[str, str]:
    """``name: command`` lines in file order; blank lines and ``#`` comments skipped."""
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: not a 'name: command' line: {line!r}")
        entries[match.group(1)] = match.group(2)
    return entries


@dataclass(frozen=True)
class Backoff:
    """Seconds before a restart: ``start``, doubled per quick exit up to ``maximum``, and
    ``start`` again after a run that lasted ``stable_after``."""

    start: float = BACKOFF_START_S
    maximum: float = BACKOFF_MAX_S
    stable_after: float = STABLE_AFTER_S

    def next_delay(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.stable_after:
            return self.start
        return min(previous * 2, self.maximum)


class Printer:
    """Writes prefixed lines from several threads without interleaving them."""

    def __init__(self, stream: IO[str], width: int) -> None:
        self.stream = stream
        self.width = width
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            self.stream.write(f"{stamp} {name:<{self.width}} | {text}\n")
            self.stream.flush()

    def pipe(self, name: str, source: IO[bytes]) -> None:
        """Copy ``source`` line by line until EOF (run in a thread)."""
        with source:
            for raw in iter(source.readline, b""):
                self.line(name, raw.decode(errors="replace").rstrip("\n"))


@dataclass
class Managed:
    """One Procfile entry and the state of its current run."""

    name: str
    command: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float | None = None  # the last backoff used; None until the first exit
    restart_at: float | None = None
    leftover: int | None = None  # process group of an exited run, killed before the next
    reader: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Runs Procfile entries, restarting each one that exits until ``stop()``."""

    def __init__(
        self,
        entries: Mapping[str, str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        run_once: Iterable[str] = (),
        backoff: Backoff | None = None,
        stop_timeout: float = STOP_TIMEOUT_S,
        output: IO[str] = sys.stdout,
        on_tick: Callable[[float], None] | None = None,
    ) -> None:
        once = list(run_once)
        self.run_once = [(name, entries[name]) for name in once if name in entries]
        self.managed = [Managed(n, c) for n, c in entries.items() if n not in once]
        self.env = dict(env)
        self.cwd = cwd
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        width = max([len(SELF), *(len(name) for name in entries)])
        self.printer = Printer(output, width)
        self.on_tick = on_tick  # e.g. demo.run's watch on the embedded servers
        # Called once the run-once entries succeeded and the others were started.
        self.on_started: Callable[[], None] | None = None
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and Event.set
        # could deadlock on the lock the interrupted main thread holds inside Event.wait.
        self._stopping = False

    def log(self, text: str) -> None:
        self.printer.line(SELF, text)

    def stop(self, *_args: object) -> None:
        """Ask ``run()`` to stop everything and return (safe from a signal handler)."""
        self._stopping = True

    def _stopped_after_tick(self) -> bool:
        time.sleep(TICK_S)
        return self._stopping

    def run(self) -> int:
        """Run-once entries, then supervise the rest until ``stop()``; returns the exit
        status: 0, or that of a failed run-once entry.

        Call it from the main thread: the kernel's death signal for the children follows
        the thread that started them."""
        for name, command in self.run_once:
            if self._stopping:
                return 0
            status = self._run_to_end(name, command)
            if self._stopping:
                return 0
            if status != 0:
                self.log(f"{name} failed with status {status}; nothing else started")
                return status
            self.log(f"{name} finished")
        try:
            for entry in self.managed:
                self._start(entry)
            if self.on_started is not None:
                self.on_started()
            while not self._stopped_after_tick():
                now = time.monotonic()
                self._tick(now)
                if self.on_tick is not None:
                    try:
                        self.on_tick(now)
                    except Exception as exc:  # a watcher's failure must not stop the rest
                        self.log(f"watcher failed: {exc!r}")
        finally:
            self._stop_all()
        return 0

    def _spawn(self, name: str, command: str) -> tuple[subprocess.Popen[bytes], threading.Thread]:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a terminal's Ctrl-C reaches us only
            preexec_fn=die_with_parent,
        )
        assert proc.stdout is not None
        reader = threading.Thread(
            target=self.printer.pipe, args=(name, proc.stdout), name=f"out-{name}", daemon=True
        )
        reader.start()
        return proc, reader

    def _run_to_end(self, name: str, command: str) -> int:
        self.log(f"{name}: {command} (runs once)")
        proc, reader = self._spawn(name, command)
        while proc.poll() is None:
            if self._stopped_after_tick():
                _signal_group(proc.pid, signal.SIGTERM)
                break
        _wait_group(proc, self.stop_timeout)  # and whatever it forked
        reader.join(timeout=1)
        return proc.wait()

    def _start(self, entry: Managed) -> None:
        if entry.leftover is not None:  # what the last run forked and left behind
            _signal_group(entry.leftover, signal.SIGKILL)
            entry.leftover = None
        entry.proc, entry.reader = self._spawn(entry.name, entry.command)
        entry.started_at = time.monotonic()
        entry.restart_at = None
        again = f" (restart {entry.restarts})" if entry.restarts else ""
        self.log(f"{entry.name} started{again}, pid {entry.proc.pid}")

    def _tick(self, now: float) -> None:
        for entry in self.managed:
            if entry.proc is not None and entry.restart_at is None:
                status = entry.proc.poll()
                if status is None:
                    continue
                uptime = now - entry.started_at
                entry.delay = self.backoff.next_delay(entry.delay, uptime)
                entry.restart_at = now + entry.delay
                entry.restarts += 1
                if _group_alive(entry.proc.pid):  # it forked processes that outlive it
                    entry.leftover = entry.proc.pid
                    _signal_group(entry.leftover, signal.SIGTERM)
                self.log(
                    f"{entry.name} exited with status {status} after {uptime:.1f} s; "
                    f"restarting in {entry.delay:g} s"
                )
            elif entry.restart_at is not None and now >= entry.restart_at:
                self._start(entry)

    def _stop_all(self) -> None:
        """SIGTERM to every group (a warm shutdown for Celery), then SIGKILL what is left
        after ``stop_timeout``; waits for every process."""
        started = [e for e in self.managed if e.proc is not None]
        running = [e for e in started if e.restart_at is None]  # not waiting for a restart
        self.log("stopping " + ", ".join(e.name for e in running))
        for entry in reversed(running):
            _signal_group(entry.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for entry in running:
            _wait_group(entry.proc, max(0.0, deadline - time.monotonic()))
        for entry in started:
            if entry.leftover is not None:
                _signal_group(entry.leftover, signal.SIGKILL)
            if entry.reader is not None:
                entry.reader.join(timeout=1)
        self.log("stopped")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for the group led by ``proc`` to be gone; SIGKILL it after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or its pid keeps the group alive
        if not _group_alive(proc.pid):
            return
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    kill_deadline = time.monotonic() + 5.0
    while _group_alive(proc.pid) and time.monotonic() < kill_deadline:
        time.sleep(0.05)


def install_signal_handlers(stop: Callable[..., None]) -> None:
    """SIGINT (Ctrl-C) and SIGTERM ask for an orderly stop."""
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo.supervisor", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", help="entries to run (default: all)")
    parser.add_argument("-f", "--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument(
        "--run-once", action="append", default=[], help="entry run to the end first"
    )
    parser.add_argument("--backoff-start", type=float, default=BACKOFF_START_S)
    parser.add_argument("--backoff-max", type=float, default=BACKOFF_MAX_S)
    parser.add_argument("--stable-after", type=float, default=STABLE_AFTER_S)
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    entries = parse_procfile(args.procfile)
    if args.names:
        unknown = sorted(set(args.names) - set(entries))
        if unknown:
            print(f"supervisor: not in {args.procfile}: {', '.join(unknown)}", file=sys.stderr)
            return 2
        wanted = set(args.names) | set(args.run_once)
        entries = {name: cmd for name, cmd in entries.items() if name in wanted}
    supervisor = Supervisor(
        entries,
        env=os.environ,
        cwd=args.procfile.resolve().parent,
        run_once=args.run_once,
        backoff=Backoff(args.backoff_start, args.backoff_max, args.stable_after),
        stop_timeout=args.stop_timeout,
    )
    install_signal_handlers(supervisor.stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
