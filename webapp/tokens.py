"""JWT setup: revocation in Redis and one JSON 401 per way a token can be refused.

Revoked token ids live at ``jwt:revoked:{jti}`` until the token would have expired anyway,
so the blocklist never outgrows the set of tokens still alive.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from flask_jwt_extended import JWTManager, get_jwt_identity
from flask_jwt_extended.exceptions import WrongTokenError

from webapp.clients import get_redis
from webapp.errors import error_response

REVOKED_KEY = "jwt:revoked:{jti}"
_BEARER = (("WWW-Authenticate", "Bearer"),)

jwt = JWTManager()


def _unauthorized(code: str, message: str) -> Response:
    return error_response(code, 401, message, headers=_BEARER)


def revoke(token: Mapping[str, Any]) -> None:
    """Block ``token`` (decoded claims) for the rest of its life."""
    remaining = int(token["exp"] - time.time()) + 1 if "exp" in token else 0
    get_redis().set(REVOKED_KEY.format(jti=token["jti"]), "1", ex=max(remaining, 1))


def current_user_id() -> int:
    """The id of the user whose access token authorised this request."""
    return int(get_jwt_identity())


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict, payload: dict) -> bool:
    # A Redis outage raises here and answers 503: fail closed, never accept a revoked token.
    return bool(get_redis().exists(REVOKED_KEY.format(jti=payload["jti"])))


@jwt.unauthorized_loader
def _missing(reason: str) -> Response:
    return _unauthorized("token_missing", f"Authentication required: {reason}.")


@jwt.expired_token_loader
def _expired(_header: dict, payload: dict) -> Response:
    kind = payload.get("type", "access")
    return _unauthorized("token_expired", f"The {kind} token has expired.")


@jwt.invalid_token_loader
def _invalid(reason: str) -> Response:
    return _unauthorized("token_invalid", f"The token is invalid: {reason}.")


@jwt.revoked_token_loader
def _revoked(_header: dict, payload: dict) -> Response:
    return _unauthorized("token_revoked", "The token has been revoked (logged out).")


def _wrong_type(exc: WrongTokenError) -> Response:
    return _unauthorized("token_wrong_type", str(exc))


def init_app(app: Flask) -> None:
    jwt.init_app(app)
    # The extension maps a wrong token type to the "invalid" callback; ours has its own code.
    app.register_error_handler(WrongTokenError, _wrong_type)
