"""A static file server on 127.0.0.1 standing in for a camera vendor's image host, so the
source's JSON body can carry a real ``image_url``. Workers fetch from it only when
``VIGIL_FETCH_ALLOWED_NETWORKS`` allows 127.0.0.1/32 (loopback is refused otherwise)."""

from __future__ import annotations

import functools
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOOPBACK_NETWORK = "127.0.0.1/32"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class StaticServer:
    """Serves ``directory`` at http://127.0.0.1:PORT/ from a daemon thread."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def offline_url(name: str) -> str:
    """An image URL on 127.0.0.1 whose port has no listener: a camera whose web server is
    down (connection refused, a transient failure the workers retry, then give up on)."""
    with socket.socket() as probe:  # a port free a moment ago, and closed again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
