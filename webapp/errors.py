"""One error type and one handler: every failure leaves the API as the same JSON shape.

    {"error": {"code": "device_not_found", "message": "...", "details": [...]}}

Clients branch on ``code`` (stable); ``message`` is for people. No route ever answers an
HTML error page, and bad input never becomes a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
import psycopg_pool
import redis
from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from inference.errors import ImageSourceError
from store.blobs import BlobStoreUnavailable
from webapp.responses import ErrorResponse

logger = logging.getLogger(__name__)

# Werkzeug's class names are not stable codes; these are.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
}
# A store we depend on is down: the request was fine, retrying later may work.
_UNAVAILABLE = (
    redis.RedisError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    BlobStoreUnavailable,
)
UNAVAILABLE_RETRY_AFTER_S = 5  # what a 503 asks clients to wait before retrying


class ApiError(Exception):
    """An error the API answers on purpose, with a stable code and an HTTP status, and
    headers when the status needs them (Retry-After on 429 and 503)."""

    def __init__(
        self,
        code: str,
        status: int,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def unavailable() -> ApiError:
    """503: a store the API depends on is down; the request was fine, and may work later."""
    return ApiError(
        "service_unavailable",
        503,
        "A storage service is unavailable; retry later.",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


def not_found(what: str) -> ApiError:
    """404 for a missing resource *or* one owned by someone else: the answers are identical."""
    return ApiError(f"{what}_not_found", 404, f"No such {what.replace('_', ' ')}.")


def invalid_field(field: str, message: str) -> ApiError:
    """422 ``validation_failed`` for one field a route checks itself (beyond its model)."""
    return ApiError(
        "validation_failed",
        422,
        f"Invalid request: {field}: {message}",
        details=[{"field": field, "message": message}],
    )


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error as JSON, through the model the document publishes (``ErrorResponse``)."""
    fields: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        fields["details"] = details
    try:
        return ErrorResponse.model_validate({"error": fields}).as_json()
    except ValidationError:
        # An error must always be answered: details of another shape are left out.
        logger.error("error %s: details do not fit the error model: %r", code, details)
        return {"error": {"code": code, "message": message}}


def error_response(
    code: str, status: int, message: str, details: Any = None, headers: Any = ()
) -> Response:
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """Field path, message and type of each problem; the rejected input is not echoed."""
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _api_error_response(exc: ApiError) -> Response:
    return error_response(exc.code, exc.status, exc.message, exc.details, exc.headers.items())


def handle_error(exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return _api_error_response(exc)
    if isinstance(exc, ValidationError):
        details = validation_details(exc)
        first = details[0]
        message = f"Invalid request: {first['field']}: {first['message']}"
        if len(details) > 1:
            message += f" (and {len(details) - 1} more)"
        return error_response("validation_failed", 422, message, details)
    if isinstance(exc, ImageSourceError):
        return error_response(exc.code, exc.status, exc.message)
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        return error_response(code, status, exc.description or exc.name, None, exc.get_headers())
    if isinstance(exc, _UNAVAILABLE):
        logger.warning("dependency unavailable: %r", exc)
        return _api_error_response(unavailable())
    logger.exception("unhandled error", exc_info=exc)
    return error_response("internal_error", 500, "Internal server error.")


def init_app(app: Flask) -> None:
    """Route every exception (HTTPException included) through ``handle_error``."""
    app.register_error_handler(Exception, handle_error)
