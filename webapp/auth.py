"""Authentication: login (access + refresh tokens), refresh, logout (revocation)."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)
from werkzeug.security import check_password_hash, generate_password_hash

from webapp import tokens
from webapp.clients import get_pool
from webapp.errors import ApiError
from webapp.requests import json_body
from webapp.schemas import LoginRequest

bp = Blueprint("auth", __name__, url_prefix="/auth")

# Checked when the email is unknown, so both failures take as long (no user enumeration).
_DUMMY_HASH = generate_password_hash("vigil-no-such-user")


def hash_password(password: str) -> str:
    """werkzeug's default: scrypt with a random salt."""
    return generate_password_hash(password)


def find_user_id(email: str, password: str) -> int | None:
    """The id of the user with this email and password, or None."""
    with get_pool().connection() as conn:
        row = conn.execute(
            "SELECT id, password_hash FROM users WHERE lower(email) = lower(%s)", (email,)
        ).fetchone()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return row["id"] if check_password_hash(row["password_hash"], password) else None


@bp.post("/login")
def login():
    body = LoginRequest.model_validate(json_body())
    user_id = find_user_id(body.email, body.password)
    if user_id is None:
        raise ApiError("invalid_credentials", 401, "Wrong email or password.")
    identity = str(user_id)
    return jsonify(
        access_token=create_access_token(identity=identity),
        refresh_token=create_refresh_token(identity=identity),
        token_type="Bearer",
    )


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh():
    return jsonify(access_token=create_access_token(identity=get_jwt_identity()))


@bp.post("/logout")
@jwt_required(verify_type=False)
def logout():
    """Revoke the presented token, access or refresh (a client logs out with both)."""
    claims = get_jwt()
    tokens.revoke(claims)
    return jsonify(revoked=claims["type"])


def init_app(app: Flask) -> None:
    tokens.init_app(app)
    app.register_blueprint(bp)
