"""A WSGI app that does nothing: the baseline of ``bench/ingest.py``.

Served by gunicorn with the same settings as the API, it reads the request body and answers
a small JSON 202 like ``POST /events`` does, so the ratio ingest / no-op isolates the cost
of the API's own work (JWT check, validation, Postgres insert, Redis candidate step).
"""

from __future__ import annotations

BODY = b'{"event_id": 0, "status": "queued", "priority": 0.0}'


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response(
        "202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]
    )
    return [BODY]
