"""WSGI entry point: ``gunicorn webapp.wsgi:app`` (config from the environment)."""

from __future__ import annotations

from webapp import create_app

app = create_app()
