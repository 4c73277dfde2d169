"""Hostile input is a clear 4xx, never a 500: control characters in any string, deeply
nested JSON, forged snapshot links, requests gunicorn refuses itself, image URLs that are
not URLs. And the published OpenAPI document says exactly what the server takes.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any
from urllib.parse import urlencode

import pytest

from demo.processes import Child, stop_all, venv_env
from demo.stack import start_web
from inference.errors import ImageSourceError, InvalidUrlError, UrlSchemeError
from inference.fetch import load_source
from inference.urls import ImageUrl, split_image_url
from notify.links import Links
from store.analysis import claim_for_analysis, stored_source
from tests.api_helpers import SOURCE_EVENT, count, error_code, photo_upload, post_event
from tests.photos import photo

pytestmark = pytest.mark.integration

# --- control characters: 422 naming the field, in every request model ---------------------

CONTROLS = ["\x00", "\x01", "\x1f", "\x7f", "\t", "\n", "\ud800"]


def _field_error(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.get_data(as_text=True)[:300]
    assert error_code(response) == "validation_failed"
    (detail,) = response.get_json()["error"]["details"]
    return detail


def _raw_json(client, method: str, path: str, body: Any, headers: dict[str, str] | None = None):
    # json.dumps escapes a lone surrogate as \ud800, which Flask's client would refuse to send.
    return client.open(
        path,
        method=method,
        data=json.dumps(body),
        content_type="application/json",
        headers=headers or {},
    )


@pytest.mark.parametrize("char", CONTROLS, ids=[hex(ord(c)) for c in CONTROLS])
def test_login_refuses_control_characters_in_either_field(client, db, char):
    for field in ("email", "password"):
        body = {"email": "ana@example.com", "password": "pw", field: f"ana{char}x@example.com"}
        detail = _field_error(_raw_json(client, "POST", "/auth/login", body))
        assert detail["field"] == field and detail["type"] == "control_character"


@pytest.mark.parametrize("char", CONTROLS, ids=[hex(ord(c)) for c in CONTROLS])
def test_every_json_body_refuses_control_characters_and_writes_nothing(client, owner, db, char):
    device = {"home_id": owner.home_id, "kind": "phone", "platform": "ios", "name": "phone"}
    home = f"/homes/{owner.home_id}"
    cases = [
        ("POST", "/devices", {**device, "name": f"ph{char}one"}, "name"),
        ("POST", "/devices", {**device, "push_token": f"tok{char}"}, "push_token"),
        ("POST", "/events", {**SOURCE_EVENT, "location": f"front{char}door"}, "location"),
        ("POST", "/events", {**SOURCE_EVENT, "device_id": f"test{char}"}, "device_id"),
        ("POST", "/events", {**SOURCE_EVENT, "image_url": f"https://e.x/{char}a.jpg"}, "image_url"),
        ("PATCH", home, {"timezone": f"Europe/Paris{char}"}, "timezone"),
        ("PUT", f"{home}/policy", {"alert_labels": [f"person{char}"]}, "alert_labels"),
    ]
    for method, path, body, field in cases:
        detail = _field_error(_raw_json(client, method, path, body, owner.headers))
        assert detail["field"] == field, (path, detail)
        assert detail["type"] == "control_character"
    assert count(db, "devices") == 1 and count(db, "events") == 0  # only the owner's camera


def test_a_nul_in_a_multipart_field_is_refused(client, owner, db):
    form = photo_upload("person", location="front\x00door")
    detail = _field_error(client.post("/events", data=form, headers=owner.headers))
    assert detail["field"] == "location" and detail["type"] == "control_character"
    assert count(db, "events") == 0


@pytest.mark.parametrize(
    "path",
    ["/events?cursor={v}", "/notifications?cursor={v}", "/stream?home_id={home}&last_event_id={v}"],
)
def test_query_strings_refuse_control_characters(client, owner, path):
    for char in ("%00", "%01", "%7F", "%0A"):
        url = path.format(v=f"a{char}b", home=owner.home_id)
        detail = _field_error(client.get(url, headers=owner.headers))
        assert detail["field"] in ("cursor", "last_event_id")
        assert detail["type"] == "control_character"


def test_printable_text_is_still_accepted(client, owner, db):
    body = {"home_id": owner.home_id, "kind": "phone", "platform": "ios", "name": "Ana's phone ☂"}
    response = client.post("/devices", json=body, headers=owner.headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["name"] == "Ana's phone ☂"


def test_scores_too_small_for_the_database_are_stored_as_zero(client, owner, db):
    """PostgreSQL ``real`` refuses 1e-300 ("underflow"): scores keep six decimals."""
    response = post_event(
        client, owner, motion_score=4.6e-246, lite_results={"person": 1e-300, "animal": 0.1234567}
    )
    assert response.status_code == 202, response.get_json()
    with db.connection() as conn:
        row = conn.execute("SELECT motion_score, lite_results FROM events").fetchone()
    assert row["motion_score"] == 0.0
    assert row["lite_results"]["person"] == 0.0 and row["lite_results"]["animal"] == 0.123457


# --- JSON nesting: 400 invalid_json, before the parser recurses -----------------------------


def test_100000_nested_brackets_are_invalid_json_not_a_500(client, owner, db):
    bomb = "[" * 100_000
    targets = [("/auth/login", {}), ("/events", owner.headers), ("/devices", owner.headers)]
    for path, headers in targets:
        response = client.post(path, data=bomb, content_type="application/json", headers=headers)
        assert response.status_code == 400, (path, response.get_data(as_text=True)[:200])
        assert error_code(response) == "invalid_json"
        assert "deeper than 32" in response.get_json()["error"]["message"]
    upload = photo_upload("person", lite_results=bomb)
    response = client.post("/events", data=upload, headers=owner.headers)
    assert response.status_code == 400 and error_code(response) == "invalid_json"
    assert count(db, "events") == 0


def test_valid_json_deeper_than_the_cap_is_refused_and_up_to_it_parsed(client, owner):
    def nested(depth: int) -> str:  # the body object is level 1
        return (
            json.dumps({**SOURCE_EVENT, "location": "x"})[:-1]
            + ', "deep": '
            + ("[" * (depth - 1) + "]" * (depth - 1) + "}")
        )

    deep = client.post(
        "/events", data=nested(33), content_type="application/json", headers=owner.headers
    )
    assert deep.status_code == 400 and error_code(deep) == "invalid_json"
    at_cap = client.post(
        "/events", data=nested(32), content_type="application/json", headers=owner.headers
    )
    # Parsed: then refused by the model for the unknown field, as any body would be.
    assert _field_error(at_cap)["field"] == "deep"
    # Brackets inside strings are text, not nesting.
    assert post_event(client, owner, location="[{" * 32).status_code == 202


# --- signed snapshot links: a malformed sig or expires is a 403, never a 500 ----------------

BAD_SIGS = [
    "é" * 64,
    "\x00",
    "a" * 100_000,
    "",
    "A" * 64,  # upper-case hex: not what is signed
    "g" * 64,
    "０" * 64,  # fullwidth digits
    "ab\x00" * 21 + "a",
]
BAD_EXPIRES = ["", "abc", "１２３４５６７８９０", "-1", "1e12", "9" * 5000, "\x00", " 1", "é"]


def test_malformed_snapshot_signatures_are_403_invalid_signature(app, client, owner, db):
    event_id = post_event(client, owner).get_json()["event_id"]
    with db.connection() as conn:
        conn.execute("UPDATE events SET snapshot = %s WHERE id = %s", (b"\xff\xd8jpeg", event_id))
    good = Links(secret=app.config["JWT_SECRET_KEY"]).snapshot_url(event_id)
    good_query = good.split("?", 1)[1]
    assert client.get(f"/events/{event_id}/snapshot?{good_query}").status_code == 200
    expires = good_query.split("expires=")[1].split("&")[0]
    for sig in BAD_SIGS:
        response = client.get(
            f"/events/{event_id}/snapshot?" + urlencode({"expires": expires, "sig": sig})
        )
        assert response.status_code == 403, (sig[:10], response.get_data(as_text=True)[:200])
        assert error_code(response) == "invalid_signature"
    valid_sig = good_query.split("sig=")[1]
    for value in BAD_EXPIRES:
        response = client.get(
            f"/events/{event_id}/snapshot?" + urlencode({"expires": value, "sig": valid_sig})
        )
        assert response.status_code == 403, (value[:10], response.get_data(as_text=True)[:200])
        assert error_code(response) == "invalid_signature"


@pytest.mark.unit
def test_signature_checks_take_any_client_value_without_raising():
    from notify.links import snapshot_signature, snapshot_signature_valid

    secret, now = "s3cret", 1_700_000_000
    sig = snapshot_signature(secret, 7, now + 60)
    assert snapshot_signature_valid(secret, 7, now + 60, sig, now=now)
    assert snapshot_signature_valid(secret, 7, str(now + 60), sig, now=now)
    for bad_sig in BAD_SIGS:
        assert not snapshot_signature_valid(secret, 7, now + 60, bad_sig, now=now)
    for bad_expires in [*BAD_EXPIRES, 0, -5, 10**40, True]:
        assert not snapshot_signature_valid(secret, 7, bad_expires, sig, now=now)


# --- gunicorn's own refusals are JSON too ---------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn_base_url(redis_url, database_url, tmp_path_factory):
    env = venv_env(os.environ)
    env.update(
        REDIS_URL=redis_url, DATABASE_URL=database_url, JWT_SECRET_KEY=secrets.token_urlsafe(32)
    )
    children: list[Child] = []
    try:
        web, base_url = start_web(env, tmp_path_factory.mktemp("gunicorn"), workers=1, threads=2)
        children.append(web)
        yield base_url
    finally:
        stop_all(children)


def _raw_http(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:])
                }
                if len(body) >= int(headers.get("content-length", 10**9)):
                    return int(lines[0].split(" ")[1]), headers, body
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


GUNICORN_REFUSALS = {
    "request line too long": (
        b"GET /events?cursor=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "request_line_too_long",
    ),
    "too many headers": (
        b"GET /health HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"\r\n",
        431,
        "request_headers_too_large",
    ),
    "header too large": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "request_headers_too_large",
    ),
    "malformed request line": (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "bad_request"),
    "malformed header": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        400,
        "bad_request",
    ),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", GUNICORN_REFUSALS, ids=list(GUNICORN_REFUSALS))
def test_gunicorn_refusals_answer_the_api_json_error_shape(gunicorn_base_url, case):
    request, status, code = GUNICORN_REFUSALS[case]
    got_status, headers, body = _raw_http(gunicorn_base_url, request)
    assert got_status == status, body[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert set(error) == {"error"} and error["error"]["code"] == code
    assert error["error"]["message"] and b"aaaa" not in body  # the request is not echoed


@pytest.mark.e2e
def test_the_app_behind_that_gunicorn_answers_json_as_before(gunicorn_base_url):
    status, headers, body = _raw_http(
        gunicorn_base_url, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "not_found"


# --- image URLs: one parser for the API and the fetcher; stored URLs are never paths -------

URLS = [
    ("https://example.com/test.jpg", True),
    ("HTTP://Example.COM:8080/a b.jpg?x=1#frag", True),
    ("http://[2001:db8::1]/a.jpg", True),
    ("http://example.com", True),
    ("\x01http://127.0.0.1/a.jpg", False),  # urlsplit strips it: the old check passed it
    ("http://exa\tmple.com/a.jpg", False),  # urlsplit drops the tab
    ("http://example.com/a\r\n.jpg", False),
    ("http://user:pw@example.com/a.jpg", False),  # credentials
    ("http://exa mple.com/a.jpg", False),  # not a host name
    ("http://bücher.example/a.jpg", False),  # IDN: the fetcher takes ASCII names only
    ("http://example.com:0/a.jpg", False),
    ("http://example.com:99999/a.jpg", False),
    ("http://[::1/a.jpg", False),
    ("file:///etc/passwd", False),
    ("/etc/passwd", False),
    ("example.com/a.jpg", False),
    ("http:///a.jpg", False),
]


def _fetcher_accepts(url: str) -> bool:
    try:
        split_image_url(url)
    except ImageSourceError:
        return False
    return True


@pytest.mark.parametrize("url,ok", URLS, ids=[repr(u)[:40] for u, _ in URLS])
def test_the_api_accepts_exactly_the_urls_the_fetcher_fetches(client, owner, url, ok):
    assert _fetcher_accepts(url) is ok
    response = _raw_json(
        client, "POST", "/events", {**SOURCE_EVENT, "image_url": url}, owner.headers
    )
    if ok:
        assert response.status_code == 202, response.get_json()
    else:
        assert _field_error(response)["field"] == "image_url"


def test_a_stored_url_is_fetched_or_refused_never_read_as_a_file(client, owner, db):
    """A row written before these checks, or by hand: its image_url is a real JPEG's path.
    The worker's source is typed as a URL, so it is refused without touching the file."""
    real_file = str(photo("dog"))
    assert os.path.isfile(real_file)
    stored = [real_file, "\x01http://127.0.0.1/a.jpg", "file://" + real_file]
    ids = []
    for value in stored:
        event_id = post_event(client, owner).get_json()["event_id"]
        with db.connection() as conn:
            conn.execute("UPDATE events SET image_url = %s WHERE id = %s", (value, event_id))
        ids.append(event_id)
    events = claim_for_analysis(db, ids)
    assert [type(e.source) for e in events] == [ImageUrl] * 3
    codes = []
    for event in events:
        with pytest.raises(ImageSourceError) as refused:
            load_source(event.source)
        codes.append(refused.value.code)
    assert codes == ["url_scheme_unsupported", "url_invalid", "url_scheme_unsupported"]
    # The lite worker builds its source the same way.
    assert isinstance(stored_source(None, real_file), ImageUrl)
    assert stored_source(b"\xff\xd8", real_file) == b"\xff\xd8"


@pytest.mark.unit
def test_load_source_reads_files_only_from_paths():
    with pytest.raises(UrlSchemeError):
        load_source(str(photo("dog")))  # a plain string is a URL or nothing
    with pytest.raises(InvalidUrlError):
        load_source("\x01http://127.0.0.1/a.jpg")
    assert load_source(photo("dog")).size == (768, 576)  # pathlib.Path: a trusted file


# --- the published document: JSON Schema keywords only, and what it says is taken ---------

# JSON Schema 2020-12 and OpenAPI 3.1 schema keywords the document may use.
SCHEMA_KEYWORDS = {
    *("$ref", "type", "enum", "const", "properties", "additionalProperties", "required"),
    *("items", "prefixItems", "anyOf", "oneOf", "allOf", "not", "minimum", "maximum"),
    *("exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength"),
    *("pattern", "format", "minItems", "maxItems", "uniqueItems", "propertyNames"),
    *("minProperties", "maxProperties", "title", "description", "default", "examples"),
    *("contentMediaType", "contentEncoding", "readOnly", "writeOnly", "deprecated"),
}


def _schemas(node: Any):
    """Every schema object in the document (request bodies, parameters, components)."""
    if isinstance(node, dict):
        if "schema" in node and isinstance(node["schema"], dict):
            yield from _walk_schema(node["schema"])
        for key, value in node.items():
            if key == "schemas":
                for schema in value.values():
                    yield from _walk_schema(schema)
            elif key != "schema":
                yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


def _walk_schema(schema: Any):
    if not isinstance(schema, dict):
        return
    yield schema
    for key in ("properties", "$defs"):
        for sub in schema.get(key, {}).values():
            yield from _walk_schema(sub)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key, []):
            yield from _walk_schema(sub)
    for key in ("items", "additionalProperties", "propertyNames", "not"):
        yield from _walk_schema(schema.get(key))


def test_the_document_uses_json_schema_keywords_only(client):
    document = client.get("/openapi.json").get_json()
    schemas = list(_schemas(document))
    assert len(schemas) > 50
    unknown = {key for schema in schemas for key in schema} - SCHEMA_KEYWORDS
    assert unknown == set()
    policy = document["components"]["schemas"]["PolicyUpdate"]["properties"]
    numbers = ("cooldown_s", "hourly_budget", "min_score", "summary_window_s", "summary_idle_s")
    for name in (*numbers, "summary_interval_s"):
        (number,) = [opt for opt in policy[name]["anyOf"] if opt.get("type") != "null"]
        assert {"minimum", "maximum"} <= set(number), name


def test_the_documented_bounds_are_the_servers(client, owner):
    document = client.get("/openapi.json").get_json()
    policy = document["components"]["schemas"]["PolicyUpdate"]["properties"]
    url = f"/homes/{owner.home_id}/policy"
    for name, spec in policy.items():
        (number,) = [opt for opt in spec["anyOf"] if opt.get("type") != "null"]
        if "minimum" not in number:
            continue
        for value in (number["minimum"], number["maximum"]):
            response = client.put(url, json={name: value}, headers=owner.headers)
            assert response.status_code == 200, (name, value, response.get_json())
        step = 1 if number["type"] == "integer" else 0.01
        for value in (number["minimum"] - step, number["maximum"] + step):
            response = client.put(url, json={name: value}, headers=owner.headers)
            assert _field_error(response)["field"] == name
