"""``/docs``: the interactive API documentation (Swagger UI) for ``GET /openapi.json``.

The page, its scripts and its stylesheets come from the ``flask-swagger-ui`` package's copy
of Swagger UI and are served by this app: the page loads nothing from elsewhere (the
validator badge, which would send the document to swagger.io, is turned off).
"""

from __future__ import annotations

from flask import Blueprint
from flask_swagger_ui import get_swaggerui_blueprint

DOCS_PATH = "/docs"
BLUEPRINT = "docs"
UI_CONFIG = {
    "app_name": "Vigil API",
    "validatorUrl": None,  # no request to validator.swagger.io
    "displayOperationId": True,
    "tryItOutEnabled": True,
}


def blueprint() -> Blueprint:
    bp: Blueprint = get_swaggerui_blueprint(
        DOCS_PATH, "/openapi.json", config=dict(UI_CONFIG), blueprint_name=BLUEPRINT
    )
    return bp
