"""Requests signed with a device key: who sent them, and the one thing such a key may do.

``Authorization: Bearer vk_...`` carries a device key (``webapp.device_keys``); any other
bearer credential is a user's JWT. A device key is accepted by ``POST /events`` alone, for
its own device's events; every other route refuses it with 403 ``device_key_not_allowed``
before doing any work. See docs/auth.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, request

from store.db import single_statement
from webapp import device_keys
from webapp.clients import get_pool
from webapp.errors import ApiError

# The endpoints a device key opens: posting events (JSON or upload).
DEVICE_KEY_ENDPOINTS = frozenset({"events.create_event"})
_BEARER = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class DeviceCaller:
    """The device a valid, live key speaks for."""

    key_id: str
    device_id: int
    device_name: str
    home_id: int
    owner_id: int

    def device_for(self, requested: int | str) -> int:
        """The device an event names (id, or name as the source sends it), when it is this
        key's own; 403 ``device_key_wrong_device`` otherwise."""
        if isinstance(requested, int) or (requested.isascii() and requested.isdigit()):
            own = int(requested) == self.device_id
        else:
            own = requested == self.device_name
        if not own:
            raise ApiError(
                "device_key_wrong_device",
                403,
                "This device key may only post events for its own device "
                f"(device_id {self.device_id} or {self.device_name!r}).",
            )
        return self.device_id


def presented_device_key() -> str | None:
    """The device key in this request's Authorization header, or None (no header, or a
    JWT)."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not device_keys.looks_like_key(credential):
        return None
    return credential


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(code, 401, message, headers=_BEARER)


def authenticate_device(key: str) -> DeviceCaller:
    """The device of a valid, live ``key``; 401 (or 403 for a disabled owner) otherwise.

    Read from PostgreSQL on every request (one primary-key lookup): nothing cached can
    outlive a revocation, a rotation or the device's deletion.
    """
    with single_statement(get_pool()) as conn:
        row = device_keys.find(conn, key)
    if row is None:
        raise _invalid("device_key_invalid", "The device key is malformed or unknown.")
    if row.revoked:
        raise _invalid(
            "device_key_revoked",
            "This device key was revoked or replaced by a newer one; ask the home's owner "
            "for the device's current key.",
        )
    if row.owner_disabled:
        raise ApiError("account_disabled", 403, "The account this device belongs to is disabled.")
    return DeviceCaller(row.key_id, row.device_id, row.device_name, row.home_id, row.owner_id)


def refuse_device_keys_elsewhere() -> None:
    """Before every request: a device key on any route but its own is a 403, answered
    before the route runs. An unknown path or method keeps its 404 / 405."""
    if request.routing_exception is not None or request.endpoint in DEVICE_KEY_ENDPOINTS:
        return
    if presented_device_key() is not None:
        raise ApiError(
            "device_key_not_allowed",
            403,
            "A device key may only post its device's events (POST /events); this route "
            "needs the home owner's access token.",
        )


def init_app(app: Flask) -> None:
    app.before_request(refuse_device_keys_elsewhere)
