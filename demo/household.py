"""A shared home in the demo, made the way a family makes one through the API: the owner
invites two people, they join with their own passwords and phones, one mutes their phone
for the evening, and the owner orders an escalation chain for life-safety alerts.

Then, during the run, the owner acknowledges the first alert that escalates to them, so the
report shows an escalation stopped by an acknowledgement (and any later one reaching
everyone).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import ConnectionPool

from demo.client import ApiClient
from demo.scenario import Home

# Short enough for the run to show every step; a real home keeps the default minute.
ESCALATION_DELAY_S = 5
MUTE_FOR_S = 3600


@dataclass(frozen=True)
class Person:
    email: str
    role: str
    password: str
    cameras: tuple[str, ...] | None = None  # locations they may see; None: every camera


FAMILY = (
    Person("sam@demo.vigil", "member", "demo-password-sam"),
    Person("kim@demo.vigil", "viewer", "demo-password-kim", cameras=("front_door",)),
)


@dataclass
class Household:
    home: Home
    members: dict[str, str] = field(default_factory=dict)  # email -> access token
    user_ids: dict[str, int] = field(default_factory=dict)  # email -> user id
    acked: list[int] = field(default_factory=list)  # notification ids the owner acknowledged


def _phone(api: ApiClient, home_id: int, name: str, platform: str, token: str) -> None:
    body = {
        "home_id": home_id,
        "kind": "phone",
        "platform": platform,
        "name": name,
        "push_token": token,
    }
    api.call("POST", "/devices", body, expect=(201,))


def share_home(base_url: str, home: Home) -> Household:
    """Invite the family into ``home``, let them join and register their phones, mute one,
    and set the escalation chain: the member first, then the owner, then everyone."""
    household = Household(home)
    owner = ApiClient(base_url, home.token)
    try:
        for number, person in enumerate(FAMILY):
            cameras = (
                None
                if person.cameras is None
                else [home.cameras[location] for location in person.cameras]
            )
            invitation = owner.call(
                "POST",
                f"/homes/{home.home_id}/invitations",
                {"email": person.email, "role": person.role, "cameras": cameras},
                expect=(201,),
            )
            joined = ApiClient(base_url)
            try:
                tokens = joined.call(
                    "POST",
                    "/auth/join",
                    {"token": invitation["token"], "password": person.password},
                    expect=(201,),
                )
                joined.token = tokens["access_token"]
                household.members[person.email] = joined.token
                # FCM tokens are opaque strings; each phone has its own.
                _phone(
                    joined,
                    home.home_id,
                    f"{person.email.split('@')[0]}'s phone",
                    "android",
                    f"demo-android-token-{home.home_id}-{number}",
                )
            finally:
                joined.close()
        members = owner.call("GET", f"/homes/{home.home_id}/members")["members"]
        household.user_ids = {m["email"]: m["user_id"] for m in members}
        sam = ApiClient(base_url, household.members["sam@demo.vigil"])
        try:  # Sam mutes his phone for the evening: only life safety reaches him now
            sam.call("PATCH", f"/homes/{home.home_id}/preferences", {"mute_for_s": MUTE_FOR_S})
        finally:
            sam.close()
        chain = [household.user_ids["sam@demo.vigil"], household.user_ids[home.spec.email]]
        owner.call(
            "PUT",
            f"/homes/{home.home_id}/escalation",
            {"members": chain, "delay_s": ESCALATION_DELAY_S},
        )
    finally:
        owner.close()
    return household


def acknowledge_first_escalation(base_url: str, household: Household, timeout: float) -> None:
    """The owner acknowledges, from the app, the first life-safety alert that escalated to
    them (step 1: the member before them did not answer), waiting up to ``timeout``."""
    owner = ApiClient(base_url, household.home.token)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            page = owner.call(
                "GET", f"/notifications?home_id={household.home.home_id}&kind=alert&limit=50"
            )
            for note in page["notifications"]:
                escalation = note.get("escalation")
                if escalation and escalation["stopped_at"] is None and escalation["step"] >= 1:
                    owner.call("POST", f"/notifications/{note['id']}/ack")
                    household.acked.append(note["id"])
                    return
            time.sleep(0.5)
    finally:
        owner.close()


def wait_escalations_stopped(pool: ConnectionPool, home_ids: Sequence[int], timeout: float) -> int:
    """Wait until every escalation of these homes stopped; how many still run at the end."""
    deadline = time.monotonic() + timeout
    while True:
        with pool.connection() as conn:
            running = conn.execute(
                "SELECT count(*) AS n FROM escalations WHERE home_id = ANY(%s)"
                " AND stopped_at IS NULL",
                (list(home_ids),),
            ).fetchone()["n"]
        if running == 0 or time.monotonic() > deadline:
            return int(running)
        time.sleep(0.5)


def member_figures(pool: ConnectionPool, home_ids: Sequence[int]) -> dict[str, list[dict]]:
    """Each home's members (by home name): email, role, and whether they see every camera."""
    with pool.connection() as conn:
        rows = conn.execute(
            """
            SELECT h.name AS home, u.email, m.role, m.cameras IS NULL AS every_camera
            FROM home_members m JOIN homes h ON h.id = m.home_id JOIN users u ON u.id = m.user_id
            WHERE m.home_id = ANY(%s) ORDER BY h.id, m.created_at, u.id
            """,
            (list(home_ids),),
        ).fetchall()
    members: dict[str, list[dict]] = {}
    for row in rows:
        person = {"email": row["email"], "role": row["role"], "every_camera": row["every_camera"]}
        members.setdefault(row["home"], []).append(person)
    return members


def escalation_figures(pool: ConnectionPool, home_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Every escalation: its alert, the step it stopped at (0 = the chain's first member),
    whose turn that was (or everyone), why it stopped, and the pushes each step sent."""
    with pool.connection() as conn:
        rows = conn.execute(
            """
            SELECT x.notification_id, h.name AS home, x.step, x.stopped_reason, x.chain,
                   u.email AS stopped_by,
                   (SELECT count(*) FROM deliveries d WHERE d.notification_id = x.notification_id
                      AND d.escalation_step IS NOT NULL) AS escalated_pushes
            FROM escalations x JOIN homes h ON h.id = x.home_id
            LEFT JOIN users u ON u.id = x.stopped_by
            WHERE x.home_id = ANY(%s) ORDER BY x.notification_id
            """,
            (list(home_ids),),
        ).fetchall()
        emails = {
            row["id"]: row["email"]
            for row in conn.execute("SELECT id, email FROM users").fetchall()
        }
    return [
        {
            "notification_id": row["notification_id"],
            "home": row["home"],
            "stopped_at_step": row["step"],
            "stopped_at": (
                "everyone"
                if row["step"] >= len(row["chain"])
                else emails.get(row["chain"][row["step"]])
            ),
            "stopped_reason": row["stopped_reason"],
            "stopped_by": row["stopped_by"],
            "escalated_pushes": row["escalated_pushes"],
        }
        for row in rows
    ]


def escalation_lines(escalations: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for x in escalations:
        why = x["stopped_reason"] or "still running"
        by = f" by {x['stopped_by']}" if x["stopped_by"] else ""
        lines.append(
            f"  escalation of alert {x['notification_id']} ({x['home']}): stopped at step"
            f" {x['stopped_at_step']} ({x['stopped_at']}), {why}{by};"
            f" {x['escalated_pushes']} escalated pushes"
        )
    return lines
