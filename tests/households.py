"""A shared home in PostgreSQL for the audience tests: two cameras, the owner and a member,
each with a phone; alerts and summaries about it (rows only, as the digest writes them)."""

from __future__ import annotations

from notify.recipients import recipient_phones
from tests.factories import make_home


class SharedHome:
    """A home (Europe/Paris) with two cameras, its owner with one phone, and a member with
    one phone."""

    def __init__(self, conn, arm_mode: str = "away") -> None:
        self.conn = conn
        self.id, self.camera = make_home(conn, arm_mode=arm_mode)
        row = conn.execute(
            "SELECT h.owner_id, d.id AS phone FROM homes h"
            " JOIN devices d ON d.user_id = h.owner_id WHERE h.id = %s",
            (self.id,),
        ).fetchone()
        self.owner, self.owner_phone = row["owner_id"], row["phone"]
        self.garden = conn.execute(
            "INSERT INTO devices (home_id, kind, platform, name) VALUES (%s, 'camera', 'camera',"
            " 'garden') RETURNING id",
            (self.id,),
        ).fetchone()["id"]
        self.member, self.member_phone = self.add_member("bob@example.com")

    def add_member(self, email: str, role: str = "member", cameras=None) -> tuple[int, int]:
        """A second user in the home (as an accepted invitation makes one) with a phone."""
        user = self.conn.execute(
            "INSERT INTO users (email, password_hash) VALUES (%s, 'x') RETURNING id", (email,)
        ).fetchone()["id"]
        self.conn.execute(
            "INSERT INTO home_members (home_id, user_id, role, cameras) VALUES (%s, %s, %s, %s)",
            (self.id, user, role, cameras),
        )
        phone = self.conn.execute(
            "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
            " VALUES (%s, %s, 'phone', 'ios', %s, %s) RETURNING id",
            (self.id, user, f"{email}-phone", "ab" * 32),
        ).fetchone()["id"]
        return user, phone

    def alert(self, camera=None, labels=("person",), life_safety=False) -> int:
        """An alert notification about a new event of ``camera`` (the first by default)."""
        event = self.conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, 'front_door', 'security', 0.8) RETURNING id",
            (self.id, camera or self.camera),
        ).fetchone()["id"]
        return self.conn.execute(
            "INSERT INTO notifications (event_id, home_id, kind, title, body, labels, life_safety)"
            " VALUES (%s, %s, 'alert', 'Alert', 'body', %s, %s) RETURNING id",
            (event, self.id, list(labels), life_safety),
        ).fetchone()["id"]

    def summary(self) -> int:
        return self.conn.execute(
            "INSERT INTO notifications (home_id, summary_key, kind, title, body, labels)"
            " VALUES (%s, gen_random_uuid()::text, 'summary', 'Summary', 'body', '{person}')"
            " RETURNING id",
            (self.id,),
        ).fetchone()["id"]

    def phones(self, notification: int, **kwargs) -> list[int]:
        return recipient_phones(self.conn, notification, **kwargs)

    @property
    def both(self) -> list[int]:
        return sorted([self.owner_phone, self.member_phone])
