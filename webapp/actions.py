"""``POST /notifications/<id>/actions``: a member acts on an alert straight from its push.

The credential is the action token the push carried (``notify.actions``), sent in the JSON
body with the action: ``{"token": "va_1...", "action": "snooze_camera"}``. In the body, not
in ``Authorization``, because the token is a capability for one delivery, not a caller's
identity, as an invitation's token is for ``POST /invitations/accept``: the Authorization
header keeps meaning a user's JWT or a device key on every route, so nothing that reads it
has a third kind of credential to tell apart, and a ``va_`` token presented there is
refused like any malformed JWT (401) on every route. Here the header is not read: a user's
JWT grants nothing (no token, or a JWT as the token: refused), so an app that adds its JWT
to every request still works, and a stolen JWT acts on no push.

Everything the action does commits in one transaction with the token's single-use mark, as
the phone's member (``devices.user_id``) with the role they hold now. The refusals are
listed in ``notify.actions``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from flask import Blueprint, Response

from notify import actions
from notify.actions import ActionTarget
from notify.snoozes import TooManySnoozes
from notify.zones import TooManyZones
from store.db import transaction
from vigil.vocabulary import NotificationKind, PushAction
from webapp.access import forbidden
from webapp.clients import get_pool
from webapp.config import app_settings
from webapp.errors import ApiError, not_found
from webapp.notifications import acknowledge_as, read_as
from webapp.requests import json_body
from webapp.responses import ActionSnooze, ActionZone, PushActionTaken, respond
from webapp.schemas import PushActionRequest
from webapp.snoozes import too_many_snoozes
from webapp.zones import too_many_zones

bp = Blueprint("actions", __name__)


def _invalid() -> ApiError:
    return ApiError(
        "action_token_invalid", 403, "This action token is invalid, or not for this notification."
    )


def _token(token: str) -> actions.ActionToken:
    """The delivery a genuine, unexpired token names; 403 or 410 otherwise."""
    secret = app_settings().snapshot_secret  # set: the app always has a JWT secret
    if not secret:
        raise _invalid()
    try:
        return actions.verify(secret, token)
    except actions.ExpiredActionToken:
        raise ApiError(
            "action_token_expired",
            410,
            "This push's actions have expired; open the alert in the app instead.",
        ) from None
    except actions.InvalidActionToken:
        raise _invalid() from None


def _target(conn: psycopg.Connection[Any], notification_id: int, delivery_id: int) -> ActionTarget:
    """The token's delivery, when it is still this notification's push to a member who may
    see it."""
    target = actions.load_target(conn, delivery_id)
    if target is None:
        raise not_found("notification")
    if target.notification_id != notification_id:
        raise _invalid()
    if target.user_id is None or target.role is None:
        raise ApiError(
            "action_token_revoked",
            403,
            "The phone this push went to was removed from the home; its actions no longer work.",
        )
    if not target.sees:
        raise not_found("notification")
    if target.kind != NotificationKind.ALERT:
        raise ApiError("actions_not_offered", 409, "A summary offers no actions.")
    return target


def _camera(target: ActionTarget) -> int:
    if target.camera_id is None:
        raise ApiError("camera_removed", 409, "The camera of this alert was removed.")
    return target.camera_id


def _mute(conn: psycopg.Connection[Any], target: ActionTarget) -> ActionZone:
    assert target.role is not None  # checked by _target
    if target.role not in actions.MUTERS:
        raise forbidden(target.role, actions.MUTERS)
    camera = _camera(target)
    region = actions.mute_region(conn, target)
    if region is None:
        raise ApiError(
            "nothing_to_mute",
            409,
            "This alert has no detection box to mute (not analysed, or nothing of its"
            " labels was boxed); snooze the camera instead.",
        )
    group, polygon = region
    try:
        muted = actions.mute_object(conn, target.home_id, camera, group, polygon)
    except TooManyZones:
        raise too_many_zones() from None
    return ActionZone(
        id=muted.id,
        device_id=muted.device_id,
        name=muted.name,
        groups=muted.groups,
        polygon=muted.polygon,
    )


def _act(
    conn: psycopg.Connection[Any], target: ActionTarget, action: PushAction, taken_at: dt.datetime
) -> PushActionTaken:
    """Do ``action`` as the phone's member, in the transaction of the token's mark."""
    user_id = target.user_id
    assert user_id is not None  # checked by _target
    effect: dict[str, Any] = {}
    if action is PushAction.SNOOZE_CAMERA:
        try:
            snoozed = actions.snooze_camera(conn, target.home_id, user_id, _camera(target))
        except TooManySnoozes:
            raise too_many_snoozes() from None
        effect["snooze"] = ActionSnooze(
            id=snoozed.id, device_id=snoozed.device_id, until=snoozed.until
        )
    elif action is PushAction.MUTE_OBJECT:
        effect["zone"] = _mute(conn, target)
    elif action is PushAction.MARK_SEEN:
        read_as(conn, target.notification_id, user_id)
    else:
        acknowledge_as(conn, target.notification_id, user_id)
    return PushActionTaken(
        action=action,
        notification_id=target.notification_id,
        user_id=user_id,
        taken_at=taken_at,
        **effect,
    )


@bp.post("/notifications/<int:notification_id>/actions")
def take_push_action(notification_id: int) -> Response:
    """Take one action with a push's action token (once); see the module's docstring."""
    body = PushActionRequest.model_validate(json_body())
    token = _token(body.token)  # before any connection: a forged token costs an HMAC
    with transaction(get_pool()) as conn:
        target = _target(conn, notification_id, token.delivery_id)
        taken_at = actions.mark_taken(conn, target.delivery_id, body.action)
        if taken_at is None:
            raise ApiError("action_token_used", 409, "An action was already taken from this push.")
        answer = _act(conn, target, body.action, taken_at)
    return respond(answer)
