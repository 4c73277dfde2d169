"""Digest policy, notification outbox and push providers."""
