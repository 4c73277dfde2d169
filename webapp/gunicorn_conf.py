"""gunicorn settings of the web process, shared by the Procfile and ``demo.stack.start_web``:

    gunicorn -c python:webapp.gunicorn_conf webapp.wsgi:app --bind ... --workers N --threads N

Requests gunicorn refuses itself, before the app sees them (a request line over
``limit_request_line``, too many or too large headers, a malformed request), are answered in
the API's JSON error shape, like every other error, instead of gunicorn's HTML page:

    {"error": {"code": "request_line_too_long", "message": "..."}}

gunicorn still decides the status, logs the refusal and writes the access log line;
``JsonErrorWorker`` only renders the page.

Metrics: the workers count requests in prometheus_client's multiprocess mode, so a scrape
answered by any worker reports every worker's counts (``webapp.metrics``). The files live
in ``PROMETHEUS_MULTIPROC_DIR`` (the operator's, else a new folder under the temporary
directory, named after the master's pid and removed when it exits). gunicorn puts it in the
environment (``raw_env``) before it forks, so each worker imports prometheus_client with it
set; the master empties it of an earlier server's files when it starts, and drops a dead
worker's live gauges (``child_exit``). Counters of dead workers stay: a replaced worker
never makes a counter go down.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from http import HTTPStatus
from pathlib import Path
from typing import Any

from gunicorn import util
from gunicorn.http.errors import ParseException
from gunicorn.workers.gthread import ThreadWorker

from vigil.settings import Settings, environment

# gthread: each open live stream (GET /stream) holds one thread.
worker_class = "webapp.gunicorn_conf.JsonErrorWorker"
# gunicorn's defaults, stated here because docs/api-errors.md promises them.
limit_request_line = 4094  # bytes of "METHOD /path?query HTTP/1.1"
limit_request_fields = 100  # headers per request
limit_request_field_size = 8190  # bytes of one header line

# Read here, not with vigil.settings.current(): the workers fork from this process and must
# read their settings after raw_env has put the metrics folder in the environment.
_CONFIGURED_METRICS_DIR = Settings.from_environ(environment()).prometheus_multiproc_dir
METRICS_DIR = Path(
    _CONFIGURED_METRICS_DIR or Path(tempfile.gettempdir()) / f"vigil-web-metrics-{os.getpid()}"
)
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={METRICS_DIR}"]


def reset_metrics_dir(path: Path) -> None:
    """An existing, empty metrics folder: an earlier server's counts must not add up."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def on_starting(server: Any) -> None:
    reset_metrics_dir(METRICS_DIR)


def child_exit(server: Any, worker: Any) -> None:
    # Imported here, in the master, only after raw_env is in the environment: a worker
    # forked later must find prometheus_client in multiprocess mode.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(METRICS_DIR))


def on_exit(server: Any) -> None:
    if _CONFIGURED_METRICS_DIR is None:  # ours: made up at start, gone at exit
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


# Stable codes by status; the messages never echo the refused request.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The HTTP request is malformed."),
    403: ("forbidden", "The request is forbidden."),
    414: (
        "request_line_too_long",
        f"The request line (method, path and query) is over {limit_request_line} bytes.",
    ),
    417: ("expectation_failed", "Only 'Expect: 100-continue' is supported."),
    431: (
        "request_headers_too_large",
        f"Over {limit_request_fields} headers, or a header line over "
        f"{limit_request_field_size} bytes.",
    ),
    500: ("internal_error", "Internal server error."),
    501: ("not_implemented", "The request's transfer coding is not supported."),
}


def json_error_response(status: int) -> bytes:
    """The whole HTTP/1.1 response for ``status``, as gunicorn would send its own page."""
    code, message = ERRORS.get(status, (f"http_{status}", "The request was refused."))
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


class _ErrorPage:
    """Stands in for the client's socket while gunicorn writes its HTML error page, so the
    status it chose can be read from the status line."""

    def __init__(self) -> None:
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # already non-blocking: gunicorn then just calls sendall

    def sendall(self, data: bytes) -> None:
        self.data += data

    @property
    def status(self) -> int | None:
        parts = bytes(self.data).split(b" ", 2)  # b"HTTP/1.1 414 URI Too Long\r\n..."
        if len(parts) > 1 and parts[1].isdigit():
            return int(parts[1])
        return None


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker, with its error pages in the API's JSON shape."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        page = _ErrorPage()
        super().handle_error(req, page, addr, exc)  # classifies, logs, writes the access log
        status = page.status or (400 if isinstance(exc, ParseException) else 500)
        try:
            util.write_nonblock(client, json_error_response(status))
        except Exception:  # the client may be gone already, as gunicorn itself allows
            self.log.debug("Failed to send error message.")
