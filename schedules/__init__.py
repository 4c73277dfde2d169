"""Triage under a budget: candidate store, priority score, token buckets, the tick, leases.

Redis holds this package's state (derived from Postgres, rebuildable); every multi-key
change is one Lua step. See ``scripts`` for the key layout and ``dispatch`` for what needs a
single Redis node.
"""
