"""The API app plus a no-op route: the same-server baseline of ``bench/ingest.py``.

``gunicorn bench.api_with_noop:app`` serves the real API (``webapp.create_app``, config
from the environment) and ``POST /bench/noop``, a Flask route that parses the JSON body and
answers a small JSON 202 like ``POST /events`` does, with no auth, no validation and no
storage. Both paths share one server, one Flask app and one set of workers, so the ratio
of their request rates isolates the cost of what ``POST /events`` does.
"""

from __future__ import annotations

from flask import jsonify, request

from webapp import create_app

app = create_app()


@app.post("/bench/noop")
def noop():
    request.get_json(silent=True)
    response = jsonify({"event_id": 0, "status": "queued", "priority": 0.0})
    response.status_code = 202
    return response
