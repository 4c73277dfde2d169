"""``GET /openapi.json``: an OpenAPI 3.1 description of the API that a client generator can
use.

Every operation has an ``operationId``, a tag, examples, and one response per status it
answers: the success bodies' schemas are the pydantic models the routes build their JSON
with (``webapp.responses``), each error status the one error shape (``ErrorResponse``).
Request schemas come from the models that validate the requests, made plain JSON Schema:
rules the models enforce in code are written out (no control characters in any string, the
image URL pattern), a query parameter has no ``null`` (a query string cannot send one), and
only JSON Schema keywords remain (``tests/test_api_input_hardening.py`` checks that).

The operations are listed once, in ``webapp.operations``.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from webapp.operations import OPERATIONS, Answer, Auth, Operation
from webapp.responses import ApiModel, ErrorResponse
from webapp.schemas import TEXT_PATTERN, EventCreate

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"
# What a client may present: a user's JWT (access, or refresh for /auth/refresh and
# /auth/logout), or a device key on POST /events.
BEARER_JWT = "bearerAuth"
DEVICE_KEY = "deviceKey"
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "user": [{BEARER_JWT: []}],
    "refresh": [{BEARER_JWT: []}],
    "either_token": [{BEARER_JWT: []}],
    "user_or_device": [{BEARER_JWT: []}, {DEVICE_KEY: []}],
    "user_or_link": [{BEARER_JWT: []}, {}],
    "public": [],
}

# One example of the error shape per status (the codes are in docs/api-errors.md).
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Malformed request (JSON, query string, cursor)", "invalid_json", "..."),
    401: (
        "Missing, invalid, expired or revoked credentials (WWW-Authenticate: Bearer)",
        "token_missing",
        "Authentication required: Missing Authorization Header.",
    ),
    403: (
        "Not allowed: a device key outside POST /events, a disabled account, a bad link",
        "device_key_not_allowed",
        "A device key may only post its device's events (POST /events); ...",
    ),
    404: ("No such resource, or not yours (the answers are the same)", "not_found", "..."),
    409: ("Conflicts with what exists", "device_name_taken", "..."),
    410: ("No longer usable (an expired or revoked invitation)", "invitation_expired", "..."),
    413: ("The body is over the upload limit", "request_too_large", "..."),
    415: ("Not the content type this operation takes", "unsupported_media_type", "..."),
    422: (
        "A field is invalid (details: one entry per problem)",
        "validation_failed",
        "Invalid request: motion_score: Input should be less than or equal to 1",
    ),
    429: ("Over a limit; retry after Retry-After seconds", "rate_limited", "..."),
    503: (
        "A storage service is unavailable; retry after Retry-After seconds",
        "service_unavailable",
        "A storage service is unavailable; retry later.",
    ),
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
_DEFAULT_ERROR = (
    "Any other error, such as gunicorn refusing a malformed request before the app sees it "
    "(400, 414, 417, 431, 501): always the error shape"
)


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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _example_of(model: type[BaseModel]) -> Any:
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return examples[0] if isinstance(examples, list) and examples else None


def _json_content(model: type[BaseModel]) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref(model.__name__)}
    example = _example_of(model)
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        out["content"] = _json_content(answer.model)
    elif answer.media is not None:
        out["content"] = {kind: {"schema": schema} for kind, schema in answer.media.items()}
    return out


def _error_answer(status: int) -> dict[str, Any]:
    description, code, message = _ERRORS[status]
    media = {
        "schema": _ref(ErrorResponse.__name__),
        "example": {"error": {"code": code, "message": message}},
    }
    out: dict[str, Any] = {"description": description, "content": {"application/json": media}}
    if status in (429, 503):
        out["headers"] = _RETRY_AFTER
    return out


def _id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


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
    schema.pop("examples", None)
    _image_url_pattern(schema)
    schema["title"] = "EventUpload"
    schema["properties"]["lite_results"] = {
        "type": "string",
        "description": "JSON object",
        "pattern": TEXT_PATTERN,
    }
    # format binary: a file part to generators (OpenAPI 3.0's way, still read by most).
    schema["properties"]["image"] = {
        "type": "string",
        "format": "binary",
        "contentMediaType": "image/jpeg",
    }
    return schema


_TAGS = [
    {"name": "auth", "description": "Sessions: log in, refresh, log out (docs/auth.md)"},
    {"name": "homes", "description": "Your homes: arm mode, quiet hours, notification policy"},
    {"name": "devices", "description": "Cameras and phones, and each device's own key"},
    {"name": "events", "description": "Motion events: report, read, pictures"},
    {"name": "notifications", "description": "Alerts and summaries, with their pushes"},
    {"name": "stream", "description": "A home's live log (server-sent events)"},
    {"name": "service", "description": "Health, metrics, this document"},
]


def _request_body(op: Operation) -> dict[str, Any] | None:
    if op.body is None:
        return None
    content = _json_content(op.body)
    if op.body is EventCreate:
        content["multipart/form-data"] = {"schema": _event_upload_schema()}
    return {"required": True, "content": content}


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [_id(name) for name in op.ids]
    if op.query is not None:
        parameters += _query_params(op.query)
    parameters += [dict(parameter) for parameter in op.parameters]
    spec: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary,
    }
    if parameters:
        spec["parameters"] = parameters
    body = _request_body(op)
    if body is not None:
        spec["requestBody"] = body
    answers = {str(status): _answer(answer) for status, answer in sorted(op.answers.items())}
    if 503 in op.answers:
        answers["503"]["headers"] = _RETRY_AFTER
    errors = {str(status): _error_answer(status) for status in op.error_statuses()}
    default = {**_error_answer(400), "description": _DEFAULT_ERROR}
    spec["responses"] = {**answers, **errors, "default": default}
    if op.auth != "user":
        spec["security"] = _SECURITY[op.auth]
    return spec


def _request_models() -> list[type[BaseModel]]:
    bodies = (op.body for op in OPERATIONS if op.body is not None)
    return list(dict.fromkeys(bodies))


def _response_models() -> list[type[ApiModel]]:
    models = [
        answer.model
        for op in OPERATIONS
        for answer in op.answers.values()
        if answer.model is not None
    ]
    return list(dict.fromkeys([ErrorResponse, *models]))


def _response_schemas() -> dict[str, Any]:
    _keys, document = models_json_schema(
        [(model, "serialization") for model in _response_models()], ref_template=_REF
    )
    return dict(document["$defs"])


@functools.cache  # built from static models: once per process, not per request
def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = _response_schemas()
    for model in _request_models():
        schema = _model_schema(model)
        for name, sub in _plain(schema.pop("$defs", {})).items():
            if schemas.setdefault(name, sub) != sub:
                raise ValueError(f"two schemas named {name}")
        if model.__name__ in schemas:
            raise ValueError(f"two schemas named {model.__name__}")
        schemas[model.__name__] = _plain(schema)
    _image_url_pattern(schemas["EventCreate"])
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Vigil API",
            "version": "0.1.0",
            "description": "AI home-security events: report, triage, alerts. Errors always "
            "have the shape of ErrorResponse (docs/api-errors.md); sign-in and device keys: "
            "docs/auth.md. Interactive documentation: /docs.",
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER_JWT: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A user's access token (POST /auth/login); the refresh "
                    "token for /auth/refresh and /auth/logout",
                },
                DEVICE_KEY: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "vk_<key id>_<secret>",
                    "description": "A device's own key (POST /devices/{device_id}/key): "
                    "accepted by POST /events only, for that device's events",
                },
            },
        },
        "security": _SECURITY["user"],
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_document())
