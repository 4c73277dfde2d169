"""Bad event input: a clear 4xx JSON error, and nothing written anywhere (invariant 5)."""

from __future__ import annotations

import json

import pytest

from tests.api_helpers import (
    SOURCE_EVENT,
    candidates,
    count,
    error_code,
    photo_upload,
)
from tests.photos import photo

pytestmark = pytest.mark.integration

SMALL_CAP = 120_000  # person.jpg (113,880 bytes) fits; giraffe.jpg (382,965) does not


@pytest.fixture
def app_config():
    return {"UPLOAD_MAX_BYTES": SMALL_CAP}


@pytest.fixture
def nothing_written(db, redis_client, owner):
    yield
    assert count(db, "events") == 0
    assert candidates(redis_client, owner.home_id) == {}
    assert list(redis_client.scan_iter("ev:*")) == []


def _without(name):
    return {key: value for key, value in SOURCE_EVENT.items() if key != name}


JSON_CASES = {
    "missing device_id": (_without("device_id"), 422, "validation_failed", "device_id"),
    "missing location": (_without("location"), 422, "validation_failed", "location"),
    "missing image": (_without("image_url"), 422, "image_missing", "image_url"),
    "motion_score 1.5": (
        {**SOURCE_EVENT, "motion_score": 1.5},
        422,
        "validation_failed",
        "motion_score",
    ),
    "motion_score text": (
        {**SOURCE_EVENT, "motion_score": "high"},
        422,
        "validation_failed",
        "motion_score",
    ),
    "boolean score": (
        {**SOURCE_EVENT, "motion_score": True},
        422,
        "validation_failed",
        "motion_score",
    ),
    "unknown mode": ({**SOURCE_EVENT, "mode": "party"}, 422, "validation_failed", "mode"),
    "file url": (
        {**SOURCE_EVENT, "image_url": "file:///etc/passwd"},
        422,
        "validation_failed",
        "image_url",
    ),
    "ftp url": (
        {**SOURCE_EVENT, "image_url": "ftp://example.com/a.jpg"},
        422,
        "validation_failed",
        "url",
    ),
    "control character before the url": (
        {**SOURCE_EVENT, "image_url": "\x01http://127.0.0.1/a.jpg"},
        422,
        "validation_failed",
        "image_url",
    ),
    "credentials in the url": (
        {**SOURCE_EVENT, "image_url": "http://admin:pw@example.com/a.jpg"},
        422,
        "validation_failed",
        "image_url",
    ),
    "nul in the location": (
        {**SOURCE_EVENT, "location": "front\x00door"},
        422,
        "validation_failed",
        "location",
    ),
    "unknown device": (
        {**SOURCE_EVENT, "device_id": "no_such_device"},
        404,
        "device_not_found",
        "device",
    ),
    "unknown field": ({**SOURCE_EVENT, "user_id": 1}, 422, "validation_failed", "user_id"),
    "lite out of range": (
        {**SOURCE_EVENT, "lite_results": {"person": 2}},
        422,
        "validation_failed",
        "lite",
    ),
    "lite unknown label": (
        {**SOURCE_EVENT, "lite_results": {"dragon": 0.5}},
        422,
        "validation_failed",
        "lite",
    ),
    "json array": ([SOURCE_EVENT], 400, "invalid_json", "object"),
    "nested too deep": (
        {**SOURCE_EVENT, "lite_results": {"person": json.loads("[" * 32 + "0.5" + "]" * 32)}},
        400,
        "invalid_json",
        "deeper than 32",
    ),
}


@pytest.mark.parametrize("case", JSON_CASES, ids=list(JSON_CASES))
def test_bad_json_bodies_are_refused_and_nothing_is_written(client, owner, nothing_written, case):
    body, status, code, mentioned = JSON_CASES[case]
    response = client.post("/events", json=body, headers=owner.headers)
    assert response.status_code == status, response.get_json()
    assert error_code(response) == code
    assert mentioned in str(response.get_json()["error"])


def test_a_non_json_body_is_refused(client, owner, nothing_written):
    broken = client.post(
        "/events", data="{'image_url': nope", content_type="application/json", headers=owner.headers
    )
    assert broken.status_code == 400 and error_code(broken) == "invalid_json"
    text = client.post("/events", data="hello", content_type="text/plain", headers=owner.headers)
    assert text.status_code == 415 and error_code(text) == "unsupported_media_type"


def test_a_truncated_jpeg_upload_is_refused(client, owner, nothing_written):
    truncated = photo("person").read_bytes()[:20_000]
    response = client.post("/events", data=photo_upload(data=truncated), headers=owner.headers)
    assert response.status_code == 400
    assert error_code(response) == "image_corrupt"


def test_an_upload_over_the_size_cap_is_refused(client, owner, nothing_written):
    # Bigger than the image cap but within the request cap: decode_image's own check.
    over_cap = photo("person").read_bytes() + b"\0" * (SMALL_CAP - 100_000)
    response = client.post("/events", data=photo_upload(data=over_cap), headers=owner.headers)
    assert response.status_code == 413 and error_code(response) == "image_too_large"
    # Far bigger: werkzeug stops reading the request body at MAX_CONTENT_LENGTH.
    huge = client.post("/events", data=photo_upload("giraffe"), headers=owner.headers)
    assert huge.status_code == 413 and error_code(huge) == "request_too_large"


def test_uploads_that_are_not_images_or_have_bad_fields_are_refused(client, owner, nothing_written):
    text = client.post("/events", data=photo_upload(data=b"GIF89a..."), headers=owner.headers)
    assert text.status_code == 415 and error_code(text) == "image_format_unsupported"
    empty = client.post("/events", data=photo_upload(data=b""), headers=owner.headers)
    assert empty.status_code == 400 and error_code(empty) == "image_empty"
    bad_score = client.post("/events", data=photo_upload(motion_score="1.5"), headers=owner.headers)
    assert bad_score.status_code == 422 and error_code(bad_score) == "validation_failed"
    bad_lite = client.post(
        "/events", data=photo_upload(lite_results="{not json"), headers=owner.headers
    )
    assert bad_lite.status_code == 400 and error_code(bad_lite) == "invalid_json"
    both = client.post(
        "/events",
        data=photo_upload(image_url="https://example.com/x.jpg"),
        headers=owner.headers,
    )
    assert both.status_code == 422 and error_code(both) == "image_ambiguous"


def test_a_bad_idempotency_key_is_refused(client, owner, nothing_written):
    headers = {**owner.headers, "Idempotency-Key": "x" * 201}
    response = client.post("/events", json=SOURCE_EVENT, headers=headers)
    assert response.status_code == 400 and error_code(response) == "invalid_idempotency_key"
