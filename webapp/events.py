"""Events: create (JSON or upload, idempotent; with the owner's access token or the device's
own key, ``webapp.device_auth``), read, list by cursor, fetch the image.

Creating puts an uploaded frame in the blob store first, then writes the Postgres row (the
source of truth: one statement checks the device is the caller's and inserts, naming the
frame by its key; a frame no new row names is queued for the garbage collection), then, in
one Redis step, takes a token from the device's and the home's ingest buckets and adds the
candidate and, for an event without on-device results, its place in the lite scorer's queue
(no broker message per event: the beat sends the lite workers batches). An event over its
limits is deleted again (its frame queued for the collection) and answered 429. If Redis
fails after the commit the event is still accepted: the reconcile task rebuilds candidates
from queued rows (putting those without a lite result back in the lite queue), so an
accepted event is never lost.

Pictures are served by the app from the blob store, with S3 too (no redirect to a presigned
URL): the same scoping, headers and audit for both stores, and the store's endpoint may be
one that only the app can reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math

import psycopg
import redis
from flask import Blueprint, Response, current_app, url_for
from flask_jwt_extended import jwt_required, verify_jwt_in_request

from notify.links import snapshot_signature_valid
from schedules.candidates import AddStatus, CandidateStore, IngestBucket, candidate_fields
from schedules.score import ARM_MODES, is_critical, priority
from store.db import single_statement, transaction
from vigil.vocabulary import AuditAction
from webapp import audit
from webapp.clients import get_blobs, get_pool, get_shards
from webapp.config import app_settings
from webapp.device_auth import authenticate_device, presented_device_key
from webapp.errors import ApiError
from webapp.event_input import image_content_type, read_new_event
from webapp.event_store import (
    Created,
    Picture,
    delete_refused_event,
    event_detections,
    event_json,
    list_events,
    queue_blob_garbage,
    snapshot,
    store_event,
    uploaded_image,
    visible_event_row,
)
from webapp.requests import query_args
from webapp.responses import Event, EventAccepted, EventDetail, EventList, respond
from webapp.schemas import EventCreate, EventQuery
from webapp.tokens import current_user_id

bp = Blueprint("events", __name__, url_prefix="/events")
logger = logging.getLogger(__name__)


@bp.post("")
def create_event() -> Response:
    """With a user's access token, for any of their devices; with a device key, for that
    device only. Credentials are checked first: a refused request's body is never read."""
    key = presented_device_key()
    device = authenticate_device(key) if key is not None else None
    if device is None:
        verify_jwt_in_request()
    new = read_new_event()
    fields = new.fields
    if device is None:
        owner_id, device_ref = current_user_id(), fields.device_id
    else:
        owner_id, device_ref = device.owner_id, device.device_for(fields.device_id)
    # The priority under every arm mode: SQL picks the home's, so the ownership check and
    # the insert are one statement (one round trip, no transaction around it).
    priorities = {
        mode: priority(fields.motion_score, fields.lite_scores, mode, fields.location, 0.0)
        for mode in ARM_MODES
    }
    # The frame is stored before the row that names it, so a committed row's frame is there.
    image_key = get_blobs().put(new.image) if new.image is not None else None
    values = {
        "idempotency_key": new.idempotency_key,
        "request_hash": new.request_hash,
        "location": fields.location,
        "mode": fields.mode,
        "motion_score": fields.motion_score,
        "image_url": fields.image_url,
        "image_key": image_key,
        "lite_results": fields.lite_scores,
    }
    with single_statement(get_pool()) as conn:
        try:
            made = store_event(conn, owner_id, device_ref, values, priorities)
        except Exception:
            if image_key is not None:  # refused, or failed: no row of this request names it
                with contextlib.suppress(psycopg.Error):
                    queue_blob_garbage(conn, image_key)
            raise
        if image_key is not None and not made.created:
            queue_blob_garbage(conn, image_key)  # a replay: the first event's row holds its own
    if made.created and image_key is not None and new.image is not None:
        _keep_frame(made.event_id, image_key, new.image)
    if made.created:
        _add_candidate(made, fields)
    accepted = EventAccepted(event_id=made.event_id, status=made.status, priority=made.priority)
    response = respond(accepted, 202 if made.created else 200)
    response.headers["Location"] = url_for("events.get_event", event_id=made.event_id)
    if not made.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _keep_frame(event_id: int, key: str, image: bytes) -> None:
    """Store the frame again if a garbage collection dropped it between its put and the
    commit of the row that names it (it was queued and idle, and no row named it yet):
    once a row names it, no collection takes it."""
    blobs = get_blobs()
    if not blobs.exists(key):
        logger.warning(
            "event %s: frame %s was collected before its row: stored again", event_id, key
        )
        blobs.put(image)


def _ingest_buckets(
    store: CandidateStore, made: Created, fields: EventCreate
) -> list[IngestBucket]:
    """The device's and the home's ingest rates; a critical event (a person while armed)
    may pass an empty device bucket, so only its home's limit can refuse it."""
    config = current_app.config
    critical = is_critical(fields.lite_scores, made.arm_mode, fields.location)
    home, device = str(made.home_id), str(made.device_id)
    keys = store.shards.for_home(home).keys
    return [
        IngestBucket(
            keys.device_limit(home, device),
            config["INGEST_DEVICE_BURST"],
            config["INGEST_DEVICE_RATE_PER_MIN"] / 60.0,
            may_pass=critical,
        ),
        IngestBucket(
            keys.home_limit(home),
            config["INGEST_HOME_BURST"],
            config["INGEST_HOME_RATE_PER_MIN"] / 60.0,
        ),
    ]


def _add_candidate(made: Created, fields: EventCreate) -> None:
    """The candidate (and its place in the lite queue) in one Redis step that first takes
    a token from the device's and the home's ingest buckets: no extra round trip for the
    limits. A refused event is deleted again and answered 429."""
    try:
        store = CandidateStore(get_shards(), app_settings().scheduler)
        admitted = store.admit(
            str(made.home_id),
            str(made.event_id),
            made.tier,
            float(made.priority),
            candidate_fields(fields.location, fields.mode, fields.motion_score),
            lite=fields.lite_results is None,  # queued for the lite scorer in the same step
            buckets=_ingest_buckets(store, made, fields),
        )
    except (redis.RedisError, ValueError):
        # The row is committed and queued: answering an error now would only make the
        # client retry an event we already hold. The limits fail open with Redis down.
        logger.exception("event %s stored but not added to Redis; reconcile adds it", made.event_id)
        return
    if admitted.status is AddStatus.LIMITED:
        with single_statement(get_pool()) as conn:
            delete_refused_event(conn, made.event_id)
        retry = max(1, math.ceil(admitted.retry_after_s))
        raise ApiError(
            "rate_limited",
            429,
            "This device or home is sending events faster than its limit; retry later.",
            details={"limit": "ingest", "retry_after_s": retry},
            headers={"Retry-After": str(retry)},
        )


@bp.get("/<int:event_id>")
@jwt_required()
def get_event(event_id: int) -> Response:
    with get_pool().connection() as conn:
        event = visible_event_row(conn, current_user_id(), event_id)
        detections = event_detections(conn, event)
    detail = {**event_json(event), "detections": [dataclasses.asdict(d) for d in detections]}
    return respond(EventDetail.model_validate(detail))


@bp.get("")
@jwt_required()
def list_events_route() -> Response:
    query = EventQuery.model_validate(query_args())
    with get_pool().connection() as conn:
        rows, next_cursor = list_events(conn, current_user_id(), query)
    events = [Event.model_validate(event_json(row)) for row in rows]
    return respond(EventList(events=events, next_cursor=next_cursor))


@bp.get("/<int:event_id>/image")
@jwt_required()
def get_event_image(event_id: int) -> Response:
    with get_pool().connection() as conn:
        picture = uploaded_image(conn, current_user_id(), event_id)
    data = _picture_bytes(event_id, picture)
    if data is None:
        raise ApiError(
            "no_image",
            404,
            "This event has no uploaded image: it was sent by URL, or its picture was removed"
            " to free space.",
        )
    return _image_response(data, image_content_type(data))


def _picture_bytes(event_id: int, picture: Picture) -> bytes | None:
    """The picture's bytes: its blob's, else (a row not yet migrated) its column's."""
    if picture.key is None:
        return picture.data
    data = get_blobs().get(picture.key)
    if data is None:  # never deleted while a row names it: the store lost it
        logger.error("event %s: blob %s is missing from the blob store", event_id, picture.key)
    return data


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
    secret = app_settings().snapshot_secret  # set: the app always has a JWT secret
    expires = args.get("expires", "")  # checked strictly (digits only) with the signature
    if not secret or not snapshot_signature_valid(secret, event_id, expires, args.get("sig", "")):
        raise ApiError("invalid_signature", 403, "This snapshot link is invalid or expired.")
    return True


@bp.get("/<int:event_id>/snapshot")
def get_event_snapshot(event_id: int) -> Response:
    """The analysed frame with boxes and labels drawn (JPEG): with a JWT, or through the
    signed, expiring link an alert carries (the phone fetches it without a token)."""
    signed = _signed_snapshot_event(event_id)
    if not signed:  # credentials first: a refused request never borrows a connection
        verify_jwt_in_request()
    user_id = None if signed else current_user_id()
    with get_pool().connection() as conn:
        picture = snapshot(conn, event_id, user_id)
    # Read with no connection held: a blob store's answer may take a network round trip.
    data = _picture_bytes(event_id, picture)
    if data is None:
        raise ApiError(
            "no_snapshot",
            404,
            "This event has no snapshot: it is not analysed yet, or its snapshot was removed"
            " to free space.",
        )
    with transaction(get_pool()) as conn:  # who looked, and how (a signed link names nobody)
        details = {"event_id": event_id, "via": "signed_link" if signed else "token"}
        audit.record(conn, picture.home_id, user_id, AuditAction.SNAPSHOT_VIEWED, details)
    return _image_response(data, "image/jpeg")
