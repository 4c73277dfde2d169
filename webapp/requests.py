"""Reading request bodies and query strings, with JSON errors for every malformed one."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from webapp.errors import ApiError


def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 for another content type, 400 for broken JSON."""
    if not request.is_json:
        raise ApiError(
            "unsupported_media_type", 415, "Send a JSON body with Content-Type: application/json."
        )
    return parse_json_object(request.get_data(cache=True, as_text=False), "request body")


def parse_json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """Parse ``raw`` as a JSON object; ``what`` names it in the error message."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("invalid_json", 400, f"The {what} is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise ApiError("invalid_json", 400, f"The {what} must be a JSON object.")
    return value


def query_args() -> dict[str, str]:
    """Query string as a flat dict; a repeated parameter is refused rather than guessed."""
    args: dict[str, str] = {}
    for key, values in request.args.lists():
        if len(values) > 1:
            raise ApiError("invalid_query", 400, f"Query parameter {key!r} given more than once.")
        args[key] = values[0]
    return args
