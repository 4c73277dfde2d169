"""Fixtures of the API tests: an app on the session's servers, its client, logged-in owners.

The app's Celery producer publishes to Redis DB 1 (``broker``), emptied before each test,
so the ``redis_client`` fixture's DB 0 holds only Vigil's own keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.api_helpers import Owner, api_app, broker_url, make_owner


@pytest.fixture
def broker(redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url(redis_url), decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Extra app settings; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
def app(database_url, redis_url, db, redis_client, broker, app_config):
    yield from api_app(
        database_url, redis_url, CELERY_BROKER_URL=broker_url(redis_url), **app_config
    )


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def owner(app, client) -> Owner:
    """ana@example.com, premium, armed away, with the source's camera."""
    return make_owner(app, client)


@pytest.fixture
def ana(app, client) -> Owner:
    return make_owner(app, client, "ana@example.com")


@pytest.fixture
def bob(app, client) -> Owner:
    return make_owner(app, client, "bob@example.com")
