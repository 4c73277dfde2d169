"""The API fuzzed against its own OpenAPI document with schemathesis, in CI.

Every operation of ``GET /openapi.json`` gets a fixed-seed (derandomized) run of
``MAX_EXAMPLES`` generated requests against the real app on the test servers, signed in as a
real user with a home and a camera. No answer may be a server error, and every answer must
match the document: a status code the operation lists (not only ``default``), the
documented content type and schema.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from tests.api_helpers import Owner
from webapp import tokens
from webapp.openapi import build_document

pytestmark = pytest.mark.integration


@schemathesis.check
def status_listed_explicitly(ctx: Any, response: Any, case: Any) -> None:
    """The status is one the operation lists itself, not only covered by ``default`` (which
    stands for refusals from outside the app, such as gunicorn's): a generated client then
    knows every answer it can get."""
    if case.method.upper() != case.operation.method.upper():
        return  # schemathesis probing a method the route does not take (405)
    listed = {str(code) for code in case.operation.responses.status_codes} - {"default"}
    if str(response.status_code) not in listed:
        raise AssertionError(
            f"{case.operation.label} answered {response.status_code}, not among {sorted(listed)}"
        )


# Enough to reach every branch of input validation once or twice per operation, few enough
# that the module runs in about a minute on two cores.
MAX_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_listed_explicitly,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# These end or rotate the session of the token they are sent with: each gets its own.
SESSION_ENDING = {("POST", "/auth/refresh"), ("POST", "/auth/logout")}


@pytest.fixture
def app_config() -> dict[str, Any]:
    # A live stream the fuzzer opens ends at once instead of after five minutes.
    return {"STREAM_MAX_S": 0.2, "STREAM_KEEPALIVE_S": 0.1}


# The document the app serves at /openapi.json (built from static models, so it needs no
# app: loading it at import lets pytest list one test per operation). Requests go to the
# live app of each test.
schema = schemathesis.openapi.from_dict(build_document())


def test_the_fuzzed_document_is_the_one_served_and_valid_openapi_3_1(client):
    document = client.get("/openapi.json").get_json()
    assert document == build_document()
    # schemathesis's own copy of the OpenAPI 3.1 meta-schema, then every operation loads.
    assert list(OPENAPI_31_VALIDATOR.iter_errors(document)) == []
    operations = list(schemathesis.openapi.from_dict(document).get_all_operations())
    assert all(isinstance(op, Ok) for op in operations)
    assert len(operations) == sum(len(item) for item in document["paths"].values())


def _headers(app, owner: Owner, method: str, path: str) -> dict[str, str]:
    if (method, path) not in SESSION_ENDING:
        return {"Authorization": f"Bearer {owner.access}"}
    with app.app_context():
        pair = tokens.start_session(owner.user_id)
    assert pair is not None
    token = pair.refresh_token if path == "/auth/refresh" else pair.access_token
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    # One app, user and home per operation, shared by its examples, on purpose.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
    database=None,
)
def test_every_operation_answers_as_documented_and_never_a_5xx(case, app, owner):
    method, path = case.operation.method.upper(), case.operation.path
    headers = _headers(app, owner, method, path)  # over any generated Authorization header
    case.call_and_validate(headers=headers, checks=CHECKS, app=app)
