"""Deleting a home or one's own account, and following the deletion to its end
(``store.deletion``; docs/storage.md, "Deleting a home or an account").

* ``DELETE /homes/<id>``: any owner of the home (deletion is the owner role's, like its
  other powers; the account holder is one of them).
* ``DELETE /users/me``: the user themselves, with their password in the body.
* ``GET /deletions/<id>``: the job's status token (``Deletion-Token`` header), or the JWT
  of the user who asked, while they exist.

Both deletions answer 202 at once: the home is gone for its members from that moment (404)
and its ingest refuses events; an account is disabled and every session of it ends at once.
A job then deletes the rows in bounded batches and the blob store's pictures; its status
token, shown once in the answer, reads its progress, even after the account is gone.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from celery import Celery
from flask import Blueprint, Response, request, url_for
from flask_jwt_extended import jwt_required, verify_jwt_in_request
from psycopg.rows import class_row
from werkzeug.security import check_password_hash

import celery_config
from store.db import transaction
from store.deletion import (
    DeletionJob,
    get_job,
    job_with_token,
    leftovers,
    open_job,
    request_account_deletion,
    request_home_deletion,
)
from tasks.deletion import QUEUE, sweep_deletions
from vigil.vocabulary import DeletionKind, JobState, RevokedReason
from webapp import tokens
from webapp.access import OWNERS, member_home
from webapp.auth import account_key, account_policy
from webapp.clients import clients, get_pool
from webapp.errors import ApiError, not_found
from webapp.ratelimit import rate_limits, too_many
from webapp.requests import json_body
from webapp.responses import DeletionRequested, DeletionStatus, respond
from webapp.schemas import AccountDeletion
from webapp.tokens import current_user_id

bp = Blueprint("deletions", __name__)
logger = logging.getLogger(__name__)

TOKEN_HEADER = "Deletion-Token"
MAX_TOKEN_LENGTH = 200
# The sweep sent at a request is worth running only soon; beat's own runs cover the rest.
SWEEP_EXPIRES_S = 30.0
# A request waits this long at most for a broker that does not answer; beat's sweep then
# starts the job within seconds anyway.
BROKER_TIMEOUT_S = 1.0


def status_model(job: DeletionJob, left: dict[str, int] | None = None) -> DeletionStatus:
    fields = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "events_deleted": job.events_deleted,
        "blobs_deleted": job.blobs_deleted,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error,
    }
    if left is not None:
        return DeletionStatus.model_validate({**fields, "leftovers": left})
    return DeletionStatus.model_validate(fields)


def _requested(job: DeletionJob, token: str) -> Response:
    start_sweep()
    answer = DeletionRequested(
        job=status_model(job),
        status_token=token,
        status_url=url_for("deletions.get_deletion", job_id=job.id),
    )
    response = respond(answer, 202)
    response.headers["Cache-Control"] = "no-store"  # the token is shown once
    response.headers["Location"] = answer.status_url
    return response


@bp.delete("/homes/<int:home_id>")
@jwt_required()
def delete_home(home_id: int) -> Response:
    """Delete the home with everything in it: devices, members, events, pictures,
    notifications, zones, the audit trail."""
    user_id = current_user_id()
    with transaction(get_pool()) as conn:
        # Locked: an owner's change in flight finishes first; a second deletion then finds
        # the home gone (404).
        member_home(conn, user_id, home_id, OWNERS, lock=True)
        job, token = request_home_deletion(conn, home_id, user_id)
    return _requested(job, token)


@dataclass(frozen=True)
class _Account:
    email: str
    password_hash: str


@bp.delete("/users/me")
@jwt_required()
def delete_account() -> Response:
    """Delete the caller's account: the homes they hold as above, their place in every
    other home, their phones, preferences and sessions, then the account itself."""
    body = AccountDeletion.model_validate(json_body())
    user_id = current_user_id()
    with get_pool().connection() as conn:
        account = (
            conn.cursor(row_factory=class_row(_Account))
            .execute("SELECT email, password_hash FROM users WHERE id = %s", (user_id,))
            .fetchone()
        )
    if account is None:  # deleted since the token was checked
        raise ApiError("token_revoked", 401, "This account is gone.")
    # A stolen access token must not make this a way to guess the password: the attempts
    # count with the account's failed logins.
    limits, policy, key = rate_limits(), account_policy(), account_key(account.email)
    counted = limits.hit(policy, key)
    if not counted.allowed:
        raise too_many(policy, counted)
    if not check_password_hash(account.password_hash, body.password):
        raise ApiError("password_incorrect", 403, "Wrong password: the account stays.")
    limits.clear(policy, key)
    with transaction(get_pool()) as conn:
        # As `users disable` does: a login starting a session waits, then sees the change.
        conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
        if open_job(conn, DeletionKind.ACCOUNT, user_id) is not None:
            raise ApiError("deletion_in_progress", 409, "This account is already being deleted.")
        job, token = request_account_deletion(conn, user_id)
        tokens.revoke_user_sessions(conn, user_id, RevokedReason.USER_DISABLED)
        sids = tokens.user_session_ids(conn, user_id)
    tokens.mark_ended(sids)
    return _requested(job, token)


@bp.get("/deletions/<int:job_id>")
def get_deletion(job_id: int) -> Response:
    """A deletion's progress, with its status token; or, without one, with the JWT of the
    user who asked for it."""
    token = request.headers.get(TOKEN_HEADER)
    user_id = None
    if token is None:  # credentials first: a refused request never borrows a connection
        verify_jwt_in_request()
        user_id = current_user_id()
    with get_pool().connection() as conn:
        if token is not None:
            job = job_with_token(conn, job_id, token) if len(token) <= MAX_TOKEN_LENGTH else None
        else:
            job = get_job(conn, job_id)
            if job is not None and job.requested_by != user_id:
                job = None
        if job is None:  # a wrong token, another user's job, no job: the same answer
            raise not_found("deletion")
        left = leftovers(conn, job) if job.state is JobState.DONE else None
    response = respond(status_model(job, left))
    response.headers["Cache-Control"] = "no-store"
    return response


# --- sending the sweep --------------------------------------------------------------------

_producers: dict[tuple[int, str], Celery] = {}
_producers_lock = threading.Lock()


def _producer(broker_url: str) -> Celery:
    """A Celery app of this process that only sends, to ``broker_url`` (made after fork:
    its connections are sockets)."""
    key = (os.getpid(), broker_url)
    with _producers_lock:
        producer = _producers.get(key)
        if producer is None:
            producer = Celery("vigil-web", set_as_current=False)
            producer.config_from_object(celery_config)
            producer.conf.broker_url = broker_url
            producer.conf.broker_transport_options = {
                **celery_config.broker_transport_options,
                "socket_connect_timeout": BROKER_TIMEOUT_S,
                "socket_timeout": BROKER_TIMEOUT_S,
            }
            _producers[key] = producer
    return producer


def start_sweep() -> None:
    """Send the deletion sweep now (no countdown), so a job starts at once. Best effort:
    the job is committed, and beat's sweep takes it within seconds if this send fails."""
    broker_url = clients().broker_url
    if not broker_url:
        return
    try:
        _producer(broker_url).send_task(
            sweep_deletions.name, queue=QUEUE, expires=SWEEP_EXPIRES_S, retry=False
        )
    except Exception as exc:  # kombu's errors differ by transport; none may fail the request
        logger.warning("could not send the deletion sweep (beat's will run it): %r", exc)
