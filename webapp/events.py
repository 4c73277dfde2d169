"""Events: create (JSON or upload, idempotent), read, list by cursor, fetch the image.

Creating writes the Postgres row first (the source of truth), then, in one Redis step, the
candidate and, for an event without on-device results, its place in the lite scorer's
queue (no broker message per event: the beat sends the lite workers batches). If Redis
fails after the commit the event is still accepted: the reconcile task rebuilds candidates
from queued rows (putting those without a lite result back in the lite queue), so an
accepted event is never lost.
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, current_app, jsonify, url_for
from flask_jwt_extended import jwt_required, verify_jwt_in_request

from notify.links import signing_secret, snapshot_signature_valid
from schedules.candidates import CandidateStore, candidate_fields
from schedules.score import priority
from store.db import transaction
from webapp.access import owned_device, owned_event
from webapp.clients import get_pool, get_redis
from webapp.errors import ApiError, not_found
from webapp.event_input import image_content_type, read_new_event
from webapp.event_store import (
    EVENT_COLUMNS,
    event_detections,
    insert_event,
    list_events,
    with_decision,
)
from webapp.requests import query_args
from webapp.schemas import EventCreate, EventQuery
from webapp.tokens import current_user_id

bp = Blueprint("events", __name__, url_prefix="/events")
logger = logging.getLogger(__name__)


@bp.post("")
@jwt_required()
def create_event():
    new = read_new_event()
    fields = new.fields
    with transaction(get_pool()) as conn:
        device = owned_device(conn, current_user_id(), fields.device_id)
        score = priority(
            fields.motion_score, fields.lite_results, device["arm_mode"], fields.location, 0.0
        )
        row, created = insert_event(
            conn,
            {
                "home_id": device["home_id"],
                "device_id": device["id"],
                "idempotency_key": new.idempotency_key,
                "location": fields.location,
                "mode": fields.mode,
                "motion_score": fields.motion_score,
                "image_url": fields.image_url,
                "image": new.image,
                "lite_results": fields.lite_results,
                "priority": score,
            },
        )
    if created:
        _add_candidate(device, row, fields)
    body = {"event_id": row["id"], "status": row["status"], "priority": row["priority"]}
    response = jsonify(body)
    response.status_code = 202 if created else 200
    response.headers["Location"] = url_for("events.get_event", event_id=row["id"])
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _add_candidate(device: dict, row: dict, fields: EventCreate) -> None:
    try:
        CandidateStore(get_redis()).add(
            str(device["home_id"]),
            str(row["id"]),
            device["tier"],
            float(row["priority"]),
            candidate_fields(fields.location, fields.mode, fields.motion_score),
            lite=fields.lite_results is None,  # queued for the lite scorer in the same step
        )
    except (redis.RedisError, ValueError):
        # The row is committed and queued: answering an error now would only make the
        # client retry an event we already hold.
        logger.exception("event %s stored but not added to Redis; reconcile adds it", row["id"])


@bp.get("/<int:event_id>")
@jwt_required()
def get_event(event_id: int):
    with get_pool().connection() as conn:
        event = with_decision(owned_event(conn, current_user_id(), event_id, EVENT_COLUMNS))
        event["detections"] = event_detections(conn, event_id)
    return jsonify(event)


@bp.get("")
@jwt_required()
def list_events_route():
    query = EventQuery.model_validate(query_args())
    with get_pool().connection() as conn:
        rows, next_cursor = list_events(conn, current_user_id(), query)
    return jsonify(events=rows, next_cursor=next_cursor)


@bp.get("/<int:event_id>/image")
@jwt_required()
def get_event_image(event_id: int):
    with get_pool().connection() as conn:
        row = owned_event(conn, current_user_id(), event_id, "e.image")
    if row["image"] is None:
        raise ApiError("no_image", 404, "This event has no uploaded image (it was sent by URL).")
    data = bytes(row["image"])
    return _image_response(data, image_content_type(data))


def _image_response(data: bytes, mimetype: str) -> Response:
    """An event's picture: private to its owner, cacheable for an hour, never sniffed."""
    response = Response(data, mimetype=mimetype)
    response.headers["Cache-Control"] = "private, max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _signed_snapshot_event(event_id: int) -> bool:
    """True for a valid signed link (as pushed with an alert); 403 for a bad or old one."""
    args = query_args()
    if "sig" not in args and "expires" not in args:
        return False
    try:
        expires = int(args.get("expires", ""))
    except ValueError:
        expires = 0
    secret = signing_secret(current_app.config)  # the app always has JWT_SECRET_KEY
    if not snapshot_signature_valid(secret, event_id, expires, args.get("sig", "")):
        raise ApiError("invalid_signature", 403, "This snapshot link is invalid or expired.")
    return True


@bp.get("/<int:event_id>/snapshot")
def get_event_snapshot(event_id: int):
    """The analysed frame with boxes and labels drawn (JPEG): with a JWT, or through the
    signed, expiring link an alert carries (the phone fetches it without a token)."""
    signed = _signed_snapshot_event(event_id)
    if not signed:  # credentials first: a refused request never borrows a connection
        verify_jwt_in_request()
    with get_pool().connection() as conn:
        if signed:
            row = conn.execute("SELECT snapshot FROM events WHERE id = %s", (event_id,)).fetchone()
            if row is None:
                raise not_found("event")
        else:
            row = owned_event(conn, current_user_id(), event_id, "e.snapshot")
    if row["snapshot"] is None:
        raise ApiError("no_snapshot", 404, "This event has not been analysed yet.")
    return _image_response(bytes(row["snapshot"]), "image/jpeg")
