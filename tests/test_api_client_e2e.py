"""A client generated from the served ``/openapi.json`` by a real generator
(openapi-python-client, offline) drives a live gunicorn: log in, register a camera, issue its
key, post the source's event body and an upload with that key, read the event back.

Nothing is written by hand between the document and the calls: if a schema, an operationId
or a status were wrong, the generated code would not build, import or parse the answers.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import secrets
import subprocess
import sys
import urllib.request

import pytest

from demo.processes import stop_all, venv_env
from demo.stack import start_web
from tests.api_helpers import PASSWORD, SOURCE_EVENT, api_app, broker_url
from tests.photos import photo
from webapp.cli import create_user

pytestmark = pytest.mark.e2e

PACKAGE = "vigil_generated_client"
# Pictures and a home's export come back as bytes; without this the generator skips them.
GENERATOR_CONFIG = """\
project_name_override: vigil-generated-client
package_name_override: vigil_generated_client
post_hooks: []
content_type_overrides:
  image/jpeg: application/octet-stream
  image/png: application/octet-stream
  image/webp: application/octet-stream
  application/zip: application/octet-stream
"""


@pytest.fixture(scope="module")
def web(redis_url, database_url, tmp_path_factory):
    env = venv_env(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=broker_url(redis_url),
        JWT_SECRET_KEY=secrets.token_urlsafe(32),
    )
    child, base_url = start_web(env, tmp_path_factory.mktemp("client-e2e-logs"), workers=1)
    try:
        yield base_url
    finally:
        stop_all([child])


@pytest.fixture(scope="module")
def generated(web, tmp_path_factory):
    """The client package generated from the live server's document, imported."""
    root = tmp_path_factory.mktemp("generated")
    with urllib.request.urlopen(f"{web}/openapi.json", timeout=10) as response:
        (root / "openapi.json").write_bytes(response.read())
    (root / "config.yaml").write_text(GENERATOR_CONFIG)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(root / "openapi.json"),
            "--config",
            str(root / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(root / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every operation and response was understood: the generator warns of what it skipped.
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(generated, name: str):
    return importlib.import_module(f"{generated.__name__}.api.{name}")


def test_login_register_a_device_post_with_its_key_and_read_the_event(
    web, generated, database_url, redis_url, db, redis_client
):
    for app in api_app(database_url, redis_url):
        with app.app_context():
            create_user("ana@example.com", PASSWORD, "Home", "premium", "UTC")
    models = importlib.import_module(f"{generated.__name__}.models")
    types = importlib.import_module(f"{generated.__name__}.types")
    auth, homes = _api(generated, "auth"), _api(generated, "homes")
    devices, events = _api(generated, "devices"), _api(generated, "events")
    login = importlib.import_module(f"{auth.__name__}.login")

    anonymous = generated.Client(base_url=web, raise_on_unexpected_status=True)
    body = models.LoginRequest.from_dict({"email": "ana@example.com", "password": PASSWORD})
    tokens = login.sync(client=anonymous, body=body)
    assert isinstance(tokens, models.Tokens), tokens
    user = generated.AuthenticatedClient(
        base_url=web, token=tokens.access_token, raise_on_unexpected_status=True
    )

    list_homes = importlib.import_module(f"{homes.__name__}.list_homes")
    (home,) = list_homes.sync(client=user).homes
    create_device = importlib.import_module(f"{devices.__name__}.create_device")
    camera = create_device.sync(
        client=user,
        body=models.DeviceCreate.from_dict(
            {"home_id": home.id, "kind": "camera", "platform": "camera", "name": "test_device_001"}
        ),
    )
    assert isinstance(camera, models.Device) and camera.key is None
    issue = importlib.import_module(f"{devices.__name__}.issue_device_key")
    issued = issue.sync(client=user, device_id=camera.id)
    assert isinstance(issued, models.IssuedDeviceKey) and issued.key.startswith("vk_")

    # The camera posts with its own key: the source's JSON body, then an upload.
    device = generated.AuthenticatedClient(
        base_url=web, token=issued.key, raise_on_unexpected_status=True
    )
    create_event = importlib.import_module(f"{events.__name__}.create_event")
    accepted = create_event.sync(client=device, body=models.EventCreate.from_dict(SOURCE_EVENT))
    assert isinstance(accepted, models.EventAccepted), accepted
    assert accepted.status == models.EventStatus.QUEUED
    jpeg = photo("person").read_bytes()
    upload = models.CreateEventFilesEventUpload.from_dict(
        {k: v for k, v in SOURCE_EVENT.items() if k != "image_url"}
    )
    upload.image = types.File(
        payload=io.BytesIO(jpeg), file_name="person.jpg", mime_type="image/jpeg"
    )
    uploaded = create_event.sync(client=device, body=upload)
    assert isinstance(uploaded, models.EventAccepted), uploaded

    # The owner reads them back; the device key reads nothing.
    get_event = importlib.import_module(f"{events.__name__}.get_event")
    event = get_event.sync(client=user, event_id=accepted.event_id)
    assert isinstance(event, models.EventDetail)
    assert (event.device_id, event.home_id, event.location) == (camera.id, home.id, "front_door")
    assert event.image_url == SOURCE_EVENT["image_url"] and event.detections == []
    image = importlib.import_module(f"{events.__name__}.get_event_image")
    assert image.sync(client=user, event_id=uploaded.event_id) == jpeg
    refused = get_event.sync(client=device, event_id=accepted.event_id)
    assert isinstance(refused, models.ErrorResponse)
    assert refused.error.code == "device_key_not_allowed"
    get_device = importlib.import_module(f"{devices.__name__}.get_device")
    shown = get_device.sync(client=user, device_id=camera.id)
    assert shown.key.key_id == issued.key_id
    assert issued.key not in json.dumps(shown.to_dict(), default=str)
