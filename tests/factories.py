"""Rows the storage tests build on: a user, a home, its camera and phones."""

from __future__ import annotations


def make_home(conn, arm_mode="away", tz="Europe/Paris", phones=1) -> tuple[int, int]:
    user = conn.execute(
        "INSERT INTO users (email, password_hash) VALUES ('a@b.c', 'x') RETURNING id"
    ).fetchone()["id"]
    home = conn.execute(
        "INSERT INTO homes (owner_id, name, tier, arm_mode, timezone)"
        " VALUES (%s, 'Home', 'premium', %s, %s) RETURNING id",
        (user, arm_mode, tz),
    ).fetchone()["id"]
    camera = conn.execute(
        "INSERT INTO devices (home_id, kind, platform, name) VALUES (%s, 'camera', 'camera',"
        " 'cam') RETURNING id",
        (home,),
    ).fetchone()["id"]
    for i in range(phones):
        conn.execute(
            "INSERT INTO devices (home_id, kind, platform, name, push_token)"
            " VALUES (%s, 'phone', 'android', %s, %s)",
            (home, f"phone{i}", f"fcm-token-{i}-0123456789"),
        )
    return home, camera
