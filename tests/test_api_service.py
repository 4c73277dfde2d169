"""Service routes and app-wide behaviour: health, OpenAPI, JSON for every error, the CLI."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from tests.api_helpers import api_app, count, error_code, login
from vigil.settings import Settings
from webapp import create_app
from webapp.config import app_settings
from webapp.docs_ui import BLUEPRINT as DOCS_BLUEPRINT

pytestmark = pytest.mark.integration


def test_health_reports_redis_and_postgres(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["redis"] == "ok" and body["checks"]["postgres"] == "ok"


def test_health_is_503_when_redis_is_down(database_url, db):
    for app in api_app(database_url, "redis://127.0.0.1:1/0"):
        response = app.test_client().get("/health")
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()  # a 503 says when to try again
        checks = response.get_json()["checks"]
        assert checks["postgres"] == "ok" and checks["redis"].startswith("error")


def test_openapi_lists_every_route_with_pydantic_request_schemas(app, client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.data)
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(f"{DOCS_BLUEPRINT}."):
            continue  # the interactive documentation's page and files
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes
    event = document["components"]["schemas"]["EventCreate"]
    assert {"device_id", "location", "mode", "motion_score"} <= set(event["required"])
    assert event["properties"]["motion_score"]["maximum"] == 1.0
    cooldown = document["components"]["schemas"]["PolicyUpdate"]["properties"]["cooldown_s"]
    assert {"type": "integer", "minimum": 0, "maximum": 86400} in cooldown["anyOf"]
    snapshot = document["paths"]["/events/{event_id}/snapshot"]["get"]["parameters"]
    assert {p["name"] for p in snapshot} == {"event_id", "expires", "sig"}


def test_unknown_routes_and_methods_answer_json_not_html(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = client.put("/events")
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


def test_the_config_comes_from_the_settings_then_the_test_config():
    settings = Settings.from_environ(
        {"STREAM_KEEPALIVE_S": "2.5", "INGEST_HOME_BURST": "7", "JWT_ACCESS_TOKEN_EXPIRES_S": "60"}
    )
    app = create_app({"TESTING": True, "INGEST_HOME_BURST": 9}, settings=settings)
    assert app.config["STREAM_KEEPALIVE_S"] == 2.5
    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"] == dt.timedelta(seconds=60)
    assert app.config["INGEST_HOME_BURST"] == 9  # the test config has the last word
    assert app.config["STREAM_MAX_S"] == Settings().stream_max_s  # a default, from one place
    # Snapshot links are checked with the key the app really has (a testing one here).
    assert app_settings(app).snapshot_secret == app.config["JWT_SECRET_KEY"]


def test_create_app_requires_a_jwt_secret_outside_testing():
    with pytest.raises(RuntimeError, match="JWT_SECRET_KEY"):
        create_app(settings=Settings.from_environ({}))
    assert create_app(settings=Settings.from_environ({"JWT_SECRET_KEY": "k" * 32}))


def test_cli_creates_a_user_and_a_premium_home_who_can_log_in(app, client, db):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "users",
            "create",
            "Zoe@Example.com",
            "--password",
            "s3cret!",
            "--home",
            "Flat",
            "--tier",
            "premium",
            "--timezone",
            "Europe/Paris",
        ]
    )
    assert result.exit_code == 0, result.output
    with db.connection() as conn:
        home = conn.execute("SELECT name, tier, timezone FROM homes").fetchone()
    assert home == {"name": "Flat", "tier": "premium", "timezone": "Europe/Paris"}
    assert login(client, "zoe@example.com", "s3cret!")["access_token"]
    again = runner.invoke(
        args=["users", "create", "zoe@example.com", "--password", "x", "--home", "Other"]
    )
    assert again.exit_code != 0 and "already exists" in again.output
    assert count(db, "users") == 1


def test_cli_refuses_an_unknown_tier_or_timezone(app, db):
    runner = app.test_cli_runner()
    base = ["users", "create", "a@example.com", "--password", "pw", "--home", "H"]
    assert runner.invoke(args=[*base, "--tier", "platinum"]).exit_code != 0
    assert runner.invoke(args=[*base, "--timezone", "Nowhere/Land"]).exit_code != 0
    assert count(db, "users") == 0


def test_cli_db_migrate_is_up_to_date_on_the_migrated_test_database(app):
    result = app.test_cli_runner().invoke(args=["db", "migrate"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_an_unhandled_error_is_a_logged_json_500(app, client, caplog):
    def boom():
        raise RuntimeError("secret detail")

    app.add_url_rule("/boom", view_func=boom)
    response = client.get("/boom")
    assert response.status_code == 500 and error_code(response) == "internal_error"
    assert "secret detail" not in response.get_data(as_text=True)
    assert "unhandled error" in caplog.text
