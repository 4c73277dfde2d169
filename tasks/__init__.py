"""The Celery app and thin task wrappers: each takes ids and calls a plain function."""
