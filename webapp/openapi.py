"""``GET /openapi.json``: an OpenAPI 3.1 description of the API.

Request schemas come from the pydantic models that validate the requests, so the document
cannot drift from what the server accepts. They are then made plain JSON Schema: rules the
models enforce in code are written out (no control characters in any string, the image URL
pattern), a query parameter has no ``null`` (a query string cannot send one), and only
JSON Schema keywords remain (``tests/test_api_input_hardening.py`` checks that).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel

from webapp.event_input import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY
from webapp.schemas import (
    TEXT_PATTERN,
    DeviceCreate,
    EventCreate,
    EventQuery,
    HomePatch,
    LoginRequest,
    NotificationQuery,
    PolicyUpdate,
)
from webapp.stream import LAST_EVENT_ID_HEADER, StreamQuery

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"
_MODELS: tuple[type[BaseModel], ...] = (
    LoginRequest,
    EventCreate,
    HomePatch,
    PolicyUpdate,
    DeviceCreate,
)
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "examples": ["device_not_found"]},
                "message": {"type": "string"},
                # A list of problems (one per field), or an object for one refusal
                # (e.g. which limit a 429 hit).
                "details": {"type": ["array", "object"]},
            },
        }
    },
}


# What the fetcher accepts (inference.urls), as far as a pattern can say it: http(s), a host
# of DNS-name characters, an optional port 1-65535 written without leading zeros, then any
# path without control characters that does not end in whitespace.
IMAGE_URL_PATTERN = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*"
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(/([^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f])?)?$"
)
# The keys pydantic adds that say nothing about validity and clutter parameters.
_NOISE = ("title", "default")


def _plain(schema: Any, query: bool = False) -> Any:
    """``schema`` with the models' coded rules written out; ``query``: a parameter's."""
    if isinstance(schema, list):
        return [_plain(item, query) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _plain(value, query) for key, value in schema.items()}
    if query:
        for key in _NOISE:
            out.pop(key, None)
        options = [opt for opt in out.get("anyOf", []) if opt != {"type": "null"}]
        if "anyOf" in out and len(options) == 1:
            del out["anyOf"]
            out.update(options[0])
        elif "anyOf" in out:
            out["anyOf"] = options
    if out.get("type") == "string" and not ({"enum", "format", "pattern"} & out.keys()):
        out["pattern"] = TEXT_PATTERN
    return out


# One server-sent event of GET /stream (OpenAPI 3.1: the schema of each event): its kind,
# its id in the home's live log, and a JSON payload.
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "examples": ["event.analyzed", "gap"]},
        "id": {"type": "string", "pattern": r"^\d+-\d+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
# GET /health's answer, up or down: not the error shape.
_HEALTH = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["ok", "degraded", "down"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        "workers": {"type": ["object", "null"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(
    summary: str, ok: str = "200", body: str | None = None, public: bool = False, **extra: Any
) -> dict[str, Any]:
    responses = {
        ok: {"description": "Success"},
        "default": {"description": "Error (4xx/5xx), always JSON", **_json(_ref("Error"))},
    }
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if body:
        operation["requestBody"] = {"required": True, **_json(_ref(body))}
    if public:
        operation["security"] = []
    return operation


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


# The query of a signed snapshot link (notify.links); any other value is a 403.
_SIGNED_LINK = [
    {
        "name": "expires",
        "in": "query",
        "required": False,
        "description": "Unix time the link expires at",
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    },
    {
        "name": "sig",
        "in": "query",
        "required": False,
        "description": "HMAC-SHA256 of the event id and expires, lowercase hex",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
]


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema, each property titled: pydantic titles no property whose
    type is one of the domain's enums, though they are written out like any other."""
    schema = model.model_json_schema(ref_template=_REF)
    for name, prop in schema.get("properties", {}).items():
        prop.setdefault("title", name.replace("_", " ").title())
    return schema


def _image_url_pattern(schema: dict[str, Any]) -> None:
    for option in schema["properties"]["image_url"]["anyOf"]:
        if option.get("type") == "string":
            option["pattern"] = IMAGE_URL_PATTERN


def _event_upload_schema() -> dict[str, Any]:
    schema = _plain(copy.deepcopy(_model_schema(EventCreate)))
    schema.pop("$defs", None)
    _image_url_pattern(schema)
    schema["title"] = "EventUpload"
    schema["properties"]["lite_results"] = {
        "type": "string",
        "description": "JSON object",
        "pattern": TEXT_PATTERN,
    }
    schema["properties"]["image"] = {"type": "string", "contentMediaType": "image/jpeg"}
    return schema


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    query = model.model_json_schema(ref_template=_REF)
    required = set(query.get("required", ()))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _plain(prop, query=True),
        }
        for name, prop in query["properties"].items()
    ]


@functools.cache  # built from static models: once per process, not per request
def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    for model in _MODELS:
        schema = _model_schema(model)
        schemas.update(_plain(schema.pop("$defs", {})))
        schemas[model.__name__] = _plain(schema)
    _image_url_pattern(schemas["EventCreate"])
    list_params = _query_params(EventQuery)
    idem = {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY,
            "pattern": "^[\\u0020-\\u007e]*$",  # printable ASCII
        },
    }
    create_event = _op(
        "Report a motion event (source JSON body, or an upload)", "202", parameters=[idem]
    )
    create_event["responses"]["200"] = {
        "description": "Replayed: the event this Idempotency-Key already created"
    }
    create_event["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": _ref("EventCreate")},
            "multipart/form-data": {"schema": _event_upload_schema()},
        },
    }
    last_event_id = {
        "name": LAST_EVENT_ID_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": r"^\d+-\d+$"},
    }
    stream_params = _query_params(StreamQuery)
    stream = _op(
        "Live events of one of your homes (server-sent events), resumable by Last-Event-ID",
        parameters=[*stream_params, last_event_id],
    )
    stream["responses"]["200"]["content"] = {"text/event-stream": {"schema": _SSE_EVENT}}
    health = _op(
        "Redis, Postgres and queue consumption: ok, degraded (200) or down (503), within 1 s",
        public=True,
    )
    health["responses"]["503"] = {
        "description": "Down: Redis or Postgres failed or did not answer in time (Retry-After)",
        **_json(_HEALTH),
    }
    health["responses"]["200"].update(_json(_HEALTH))
    paths = {
        "/auth/login": {
            "post": _op("Log in: access and refresh tokens", body="LoginRequest", public=True)
        },
        "/auth/refresh": {
            "post": _op(
                "New access and refresh tokens (send the refresh token; it stops working,"
                " and sending it again ends the session)"
            )
        },
        "/auth/logout": {"post": _op("End the session of the presented token (access or refresh)")},
        "/homes": {"get": _op("Your homes")},
        "/homes/{home_id}": {
            "get": _op("One of your homes", parameters=[_id("home_id")]),
            "patch": _op(
                "Change arm mode, quiet hours or time zone (not the tier)",
                body="HomePatch",
                parameters=[_id("home_id")],
            ),
        },
        "/homes/{home_id}/policy": {
            "get": _op("The home's notification policy", parameters=[_id("home_id")]),
            **{
                method: _op(
                    "Change cooldown, hourly budget, alert labels or summary timing",
                    body="PolicyUpdate",
                    parameters=[_id("home_id")],
                )
                for method in ("put", "patch")
            },
        },
        "/devices": {
            "post": _op("Register a device in one of your homes", "201", body="DeviceCreate")
        },
        "/devices/{device_id}": {
            "delete": _op("Remove a device", "204", parameters=[_id("device_id")])
        },
        "/events": {
            "post": create_event,
            "get": _op("Your events, newest first, by cursor", parameters=list_params),
        },
        "/events/{event_id}": {
            "get": _op("One event with its detections", parameters=[_id("event_id")])
        },
        "/events/{event_id}/image": {
            "get": _op("The uploaded image bytes", parameters=[_id("event_id")])
        },
        "/events/{event_id}/snapshot": {
            "get": _op(
                "The analysed frame with boxes drawn (JPEG); a JWT, or the signed link an"
                " alert carries (expires, sig)",
                parameters=[_id("event_id"), *_SIGNED_LINK],
                public=True,
            )
        },
        "/notifications": {
            "get": _op(
                "Your notifications (alerts, summaries), newest first, by cursor",
                parameters=_query_params(NotificationQuery),
            )
        },
        "/notifications/{notification_id}": {
            "get": _op(
                "One notification with the delivery state of its push to each phone",
                parameters=[_id("notification_id")],
            )
        },
        "/notifications/{notification_id}/read": {
            "post": _op("Mark a notification read", parameters=[_id("notification_id")])
        },
        "/stream": {"get": stream},
        "/health": {"get": health},
        "/metrics": {
            "get": _op(
                "Prometheus text format (Bearer METRICS_TOKEN when the server sets one)",
                public=True,
            )
        },
        "/openapi.json": {"get": _op("This document", public=True)},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigil API",
            "version": "0.1.0",
            "description": "AI home-security events: report, triage, alerts.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{"bearerAuth": []}],
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_document())
