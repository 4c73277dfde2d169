"""Reading request bodies and query strings, with JSON errors for every malformed one."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from flask import request

from webapp.errors import ApiError

# Deepest nesting of arrays and objects a JSON body may have. Request bodies are two levels
# deep; the cap is checked before parsing, so a body of 100,000 "[" costs a scan, not a
# RecursionError.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")  # for bytes.translate


def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 for another content type, 400 for broken JSON."""
    if not request.is_json:
        raise ApiError(
            "unsupported_media_type", 415, "Send a JSON body with Content-Type: application/json."
        )
    return parse_json_object(request.get_data(cache=True, as_text=False), "request body")


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text ``raw`` nests arrays/objects deeper than ``limit``, as far as
    a parser would read it (up to a stray closing bracket, where it would stop).

    Strings and everything but brackets are dropped, then the depth before each bracket is
    a running sum (numpy: a 10 MiB body is a few tens of milliseconds, whatever its shape).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual body: nothing to measure
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int8)
    depth = np.cumsum(steps, dtype=np.int32)
    stray = np.flatnonzero(depth < 0)
    read = depth[: stray[0]] if stray.size else depth
    return bool(read.size) and int(read.max()) > limit


def parse_json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """Parse ``raw`` as a JSON object; ``what`` names it in the error message."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if json_depth_exceeds(data):
        raise ApiError(
            "invalid_json",
            400,
            f"The {what} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels.",
        )
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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
