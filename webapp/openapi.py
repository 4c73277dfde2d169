"""``GET /openapi.json``: an OpenAPI 3.1 description of the API.

Request schemas come from the pydantic models that validate the requests, so the document
cannot drift from what the server accepts.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel

from webapp.event_input import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY
from webapp.schemas import (
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
                "details": {"type": "array", "items": {"type": "object"}},
            },
        }
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


def _event_upload_schema() -> dict[str, Any]:
    schema = copy.deepcopy(EventCreate.model_json_schema(ref_template=_REF))
    schema.pop("$defs", None)
    schema["title"] = "EventUpload"
    schema["properties"]["lite_results"] = {"type": "string", "description": "JSON object"}
    schema["properties"]["image"] = {"type": "string", "contentMediaType": "image/jpeg"}
    return schema


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    query = model.model_json_schema(ref_template=_REF)
    return [
        {"name": name, "in": "query", "required": False, "schema": prop}
        for name, prop in query["properties"].items()
    ]


@functools.cache  # built from static models: once per process, not per request
def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    list_params = _query_params(EventQuery)
    idem = {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    }
    create_event = _op(
        "Report a motion event (source JSON body, or an upload)", "202", parameters=[idem]
    )
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
    for param in stream_params:
        param["required"] = param["name"] == "home_id"
    stream = _op(
        "Live events of one of your homes (server-sent events), resumable by Last-Event-ID",
        parameters=[*stream_params, last_event_id],
    )
    stream["responses"]["200"]["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    paths = {
        "/auth/login": {
            "post": _op("Log in: access and refresh tokens", body="LoginRequest", public=True)
        },
        "/auth/refresh": {"post": _op("New access token (send the refresh token)")},
        "/auth/logout": {"post": _op("Revoke the presented token")},
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
                parameters=[_id("event_id")],
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
        "/health": {
            "get": _op(
                "Redis, Postgres and queue consumption: ok, degraded (200) or down (503)",
                public=True,
            )
        },
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
