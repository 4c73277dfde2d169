"""WSGI entry point (config from the environment), served as the Procfile's ``web`` runs it:
``gunicorn -c python:webapp.gunicorn_conf webapp.wsgi:app`` (see ``webapp/gunicorn_conf.py``).
"""

from __future__ import annotations

from webapp import create_app

app = create_app()
