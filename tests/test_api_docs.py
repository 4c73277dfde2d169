"""The published description: what a client generator needs from every operation, examples
that match their models, and the interactive documentation at /docs served by the app
itself (nothing loaded from elsewhere)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from webapp.openapi import build_document
from webapp.operations import OPERATIONS
from webapp.responses import ApiModel, ErrorResponse

pytestmark = pytest.mark.unit

ERROR_REF = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}


def _operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_has_an_id_a_tag_and_a_schema_for_each_status():
    document = build_document()
    tags = {tag["name"] for tag in document["tags"]}
    ids = [op["operationId"] for _, op in _operations(document)]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)
    for route, operation in _operations(document):
        assert re.fullmatch(r"[a-z_]+", operation["operationId"]), route
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, route
        assert operation["summary"], route
        responses = operation["responses"]
        assert "default" in responses, route
        for status, answer in responses.items():
            assert answer["description"], (route, status)
            if status == "204":
                assert "content" not in answer
                continue
            assert answer["content"], (route, status)
            for media in answer["content"].values():
                assert media["schema"], (route, status)
            if status == "default" or int(status) >= 400:
                if (route, status) == ("GET /health", "503"):
                    continue  # down: the health report, not the error shape
                json_media = answer["content"]["application/json"]
                assert json_media["schema"] == ERROR_REF, (route, status)
                assert json_media["example"]["error"]["code"], (route, status)
                if status in ("429", "503"):
                    assert "Retry-After" in answer["headers"]


def test_json_bodies_have_examples_and_operations_list_their_statuses():
    document = build_document()
    for route, operation in _operations(document):
        body = operation.get("requestBody")
        if body is not None:
            assert "example" in body["content"]["application/json"], route
        for status, answer in operation["responses"].items():
            media = answer.get("content", {}).get("application/json")
            if media is not None and "$ref" in media["schema"]:
                assert "example" in media, (route, status)
    create = dict(_operations(document))["POST /events"]
    assert {"200", "202", "401", "403", "404", "409", "413", "415", "422", "429"} <= set(
        create["responses"]
    )
    assert create["security"] == [{"bearerAuth": []}, {"deviceKey": []}]
    upload = create["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["properties"]["image"]["format"] == "binary"


def _models_with_examples():
    seen = {}
    for op in OPERATIONS:
        for answer in op.answers.values():
            if answer.model is not None:
                seen[answer.model.__name__] = answer.model
    seen[ErrorResponse.__name__] = ErrorResponse
    return sorted(seen.values(), key=lambda model: model.__name__)


@pytest.mark.parametrize("model", _models_with_examples(), ids=lambda model: model.__name__)
def test_each_response_example_is_what_its_model_writes(model: type[ApiModel]):
    (example,) = model.model_config["json_schema_extra"]["examples"]
    built = model.model_validate(example)
    written = json.loads(json.dumps(built.as_json(), default=lambda value: value.isoformat()))
    assert written == example


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.integration
def test_the_docs_page_and_every_file_it_loads_come_from_the_app(client):
    assert client.get("/docs").status_code == 308  # to /docs/
    page = client.get("/docs/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assets = _Assets()
    assets.feed(html)
    scripts = [url for url in assets.urls if url.endswith(".js")]
    styles = [url for url in assets.urls if url.endswith(".css")]
    assert "/docs/swagger-ui-bundle.js" in scripts and "/docs/swagger-ui.css" in styles
    for url in assets.urls:
        assert url.startswith("/docs/"), url  # no CDN
        served = client.get(url)
        assert served.status_code == 200 and served.data, url
        if url.endswith(".js"):
            assert served.mimetype == "text/javascript"
        if url.endswith(".css"):
            assert served.mimetype == "text/css"
    assert len(client.get("/docs/swagger-ui-bundle.js").data) > 500_000
    # The page reads the app's own document and never sends it to a validator service.
    config = json.loads(re.search(r"var user_config = (\{.*?\});", html).group(1))
    assert config["url"] == "/openapi.json" and config["validatorUrl"] is None
    assert not re.search(r"<script[^>]+src=\"https?://", html)
    assert not re.search(r"<link[^>]+href=\"https?://", html)


@pytest.mark.integration
def test_a_missing_docs_file_is_a_json_404(client):
    missing = client.get("/docs/no-such-file.js")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
