"""Reading a new event from a request: the source's JSON body, or a multipart upload.

Everything is checked here, before any blob, row or candidate is written: the fields
(pydantic), the Idempotency-Key header, and an uploaded image's size, format, declared
pixels and completeness (``probe_image``: headers and checksums only, no pixel is decoded in the web
process, so a burst of uploads costs no image memory; the workers decode them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from flask import current_app, request

from inference.images import probe_image, sniff_format
from webapp.errors import ApiError
from webapp.requests import json_body, parse_json_object
from webapp.schemas import EventCreate

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200
_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
IMAGE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


@dataclass(frozen=True)
class NewEvent:
    fields: EventCreate
    image: bytes | None
    idempotency_key: str | None

    @property
    def request_hash(self) -> str | None:
        """What this request asks for, as sha256 hex of the validated fields and the image:
        a replay with the same Idempotency-Key must ask for the same thing. None without a
        key: no replay can ever be compared with it, so nothing is hashed."""
        if self.idempotency_key is None:
            return None
        digest = hashlib.sha256()
        digest.update(json.dumps(self.fields.model_dump(mode="json"), sort_keys=True).encode())
        digest.update(b"\0" + hashlib.sha256(self.image or b"").digest())
        return digest.hexdigest()


def read_new_event() -> NewEvent:
    """Parse and check the request; raise ApiError / ValidationError / ImageSourceError."""
    key = _idempotency_key()
    if request.mimetype in _FORM_TYPES:
        fields, image = _from_form()
    elif request.is_json:
        fields, image = EventCreate.model_validate(json_body()), None
    else:
        raise ApiError(
            "unsupported_media_type",
            415,
            "Send the event as application/json, or as multipart/form-data with an image part.",
        )
    if image is None and fields.image_url is None:
        raise ApiError("image_missing", 422, "Send image_url or upload an 'image' file part.")
    if image is not None and fields.image_url is not None:
        raise ApiError("image_ambiguous", 422, "Send image_url or an image upload, not both.")
    return NewEvent(fields, image, key)


def image_content_type(data: bytes) -> str:
    return IMAGE_TYPES[sniff_format(data)]


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise ApiError(
            "invalid_idempotency_key",
            400,
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters.",
        )
    return key


def _from_form() -> tuple[EventCreate, bytes | None]:
    form: dict[str, object] = {}
    for name, values in request.form.lists():
        if len(values) > 1:
            raise ApiError("invalid_form", 400, f"Form field {name!r} given more than once.")
        form[name] = values[0]
    if "lite_results" in form:
        form["lite_results"] = parse_json_object(str(form["lite_results"]), "lite_results field")
    unexpected = set(request.files) - {"image"}
    if unexpected:
        raise ApiError("invalid_form", 400, f"Unexpected file parts: {sorted(unexpected)}.")
    uploads = request.files.getlist("image")
    if len(uploads) > 1:
        raise ApiError("invalid_form", 400, "Upload one 'image' file part per event.")
    # Fields first: a bad field is reported without paying for an image decode.
    fields = EventCreate.model_validate(form)
    if not uploads:
        return fields, None
    max_bytes = int(current_app.config["UPLOAD_MAX_BYTES"])
    data = uploads[0].stream.read(max_bytes + 1)
    probe_image(data, max_bytes=max_bytes)
    return fields, data
