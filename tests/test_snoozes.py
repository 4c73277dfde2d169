"""Snoozes against the real PostgreSQL (notify.snoozes): what a member's snoozes cover,
when every member who would hear of an alert snoozed it, who gets its pushes
(notify.recipients), and the beat's pruning of ended snoozes."""

from __future__ import annotations

import pytest

from notify.recipients import queue_deliveries, recipient_phones
from notify.snoozes import (
    PRUNE_MARGIN_S,
    active_snoozes,
    add_snooze,
    everyone_snoozed,
    prune_expired,
)
from tests.factories import make_home
from vigil.vocabulary import PresenceGroup

pytestmark = pytest.mark.integration

PERSON, VEHICLE, ANIMAL = PresenceGroup.PERSON, PresenceGroup.VEHICLE, PresenceGroup.ANIMAL


class Home:
    """A home with two cameras (``camera``, ``garden``), its owner and a member, each with
    a phone."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.id, self.camera = make_home(conn)
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

    def snooze(self, user: int, camera=None, label=None, until="now() + interval '1 hour'"):
        at = self.conn.execute(f"SELECT {until} AS at").fetchone()["at"]
        return add_snooze(self.conn, self.id, user, at, device_id=camera, label=label)

    def alert(self, camera=None, labels=("person",), life_safety=False) -> int:
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

    def phones(self, notification: int) -> list[int]:
        return recipient_phones(self.conn, notification)

    def everyone_snoozed(self, camera=None, groups=(PERSON,)) -> bool:
        return everyone_snoozed(self.conn, self.id, camera or self.camera, groups)

    @property
    def both(self) -> list[int]:
        return sorted([self.owner_phone, self.member_phone])


@pytest.fixture
def home(db_conn) -> Home:
    return Home(db_conn)


# -- what a snooze covers -----------------------------------------------------------------


def test_nobody_snoozed_until_every_member_who_sees_the_camera_did(home):
    assert not home.everyone_snoozed()
    home.snooze(home.owner, home.camera)
    assert not home.everyone_snoozed()  # bob would still hear of it
    home.snooze(home.member)  # the whole home
    assert home.everyone_snoozed()
    assert home.everyone_snoozed(groups=(PERSON, VEHICLE)) and home.everyone_snoozed(groups=())
    assert not home.everyone_snoozed(home.garden)  # the owner snoozed one camera only


def test_a_member_who_may_not_see_the_camera_is_not_asked(home):
    cleo, _ = home.add_member("cleo@example.com", "viewer", [home.garden])
    home.snooze(home.owner)
    home.snooze(home.member)
    assert home.everyone_snoozed()  # cleo never hears of the front camera
    assert not home.everyone_snoozed(home.garden)
    home.snooze(cleo, home.garden)
    assert home.everyone_snoozed(home.garden)


def test_label_snoozes_cover_an_alert_only_when_they_name_every_group_it_names(home):
    home.snooze(home.owner, home.camera)
    home.snooze(home.member, home.camera, VEHICLE)
    assert home.everyone_snoozed(groups=(VEHICLE,))
    assert not home.everyone_snoozed(groups=(PERSON,))
    assert not home.everyone_snoozed(groups=(PERSON, VEHICLE))  # the person is news
    assert not home.everyone_snoozed(groups=())  # what moved is unknown
    assert not home.everyone_snoozed(home.garden, groups=(VEHICLE,))  # another camera
    home.snooze(home.member, home.camera, PERSON)
    assert home.everyone_snoozed(groups=(PERSON, VEHICLE))
    assert not home.everyone_snoozed(groups=(PERSON, VEHICLE, ANIMAL))


def test_an_ended_snooze_covers_nothing(home):
    home.snooze(home.owner, until="now() - interval '1 second'")
    home.snooze(home.member)
    assert not home.everyone_snoozed()
    assert [s.user_id for s in active_snoozes(home.conn, home.id, home.owner)] == []


def test_active_snoozes_are_the_members_own_that_have_not_ended(home):
    later = home.snooze(home.owner, home.camera, VEHICLE, until="now() + interval '2 hours'")
    sooner = home.snooze(home.owner)
    home.snooze(home.owner, until="now() - interval '1 minute'")
    home.snooze(home.member)
    rows = active_snoozes(home.conn, home.id, home.owner)
    assert [row.id for row in rows] == [sooner, later]  # ending soonest first
    assert rows[1].device_id == home.camera and rows[1].label is VEHICLE
    assert rows[0].device_id is None and rows[0].label is None


# -- who hears of an alert ----------------------------------------------------------------


def test_a_snoozed_camera_sends_the_member_no_alert_but_others_do(home):
    home.snooze(home.member, home.camera)
    assert home.phones(home.alert()) == [home.owner_phone]
    assert home.phones(home.alert(home.garden)) == home.both
    notification = home.alert()
    queued = queue_deliveries(home.conn, notification)
    devices = home.conn.execute(
        "SELECT device_id FROM deliveries WHERE id = ANY(%s)", (queued,)
    ).fetchall()
    assert [row["device_id"] for row in devices] == [home.owner_phone]


def test_life_safety_and_summaries_pass_every_snooze(home):
    home.snooze(home.member)
    home.snooze(home.owner, home.camera)
    assert home.phones(home.alert()) == []
    assert home.phones(home.alert(life_safety=True)) == home.both
    assert home.phones(home.summary()) == home.both


def test_a_label_snooze_holds_back_alerts_naming_only_snoozed_groups(home):
    home.snooze(home.member, home.camera, VEHICLE)
    assert home.phones(home.alert(labels=("vehicle",))) == [home.owner_phone]
    assert home.phones(home.alert(labels=("person", "vehicle"))) == home.both
    assert home.phones(home.alert(labels=("motion",))) == home.both  # a fail-safe alert
    assert home.phones(home.alert(home.garden, labels=("vehicle",))) == home.both


def test_a_snooze_applies_with_or_without_a_preferences_row(home):
    home.conn.execute(
        "INSERT INTO member_preferences (home_id, user_id, summaries) VALUES (%s, %s, true)",
        (home.id, home.member),
    )
    home.snooze(home.member, home.camera)
    home.snooze(home.owner, home.camera)
    assert home.phones(home.alert()) == []


def test_an_ended_snooze_has_no_effect_on_pushes(home):
    home.snooze(home.member, until="now() - interval '1 second'")
    assert home.phones(home.alert()) == home.both


# -- pruning ------------------------------------------------------------------------------


def test_prune_deletes_snoozes_ended_past_the_margin_a_bounded_batch_at_a_time(home, db):
    old = [home.snooze(home.member, until=f"now() - interval '{n + 2} minutes'") for n in range(3)]
    just_ended = home.snooze(home.owner, until=f"now() - interval '{PRUNE_MARGIN_S // 2} seconds'")
    active = home.snooze(home.owner)
    home.conn.commit()
    assert prune_expired(db, limit=2) == 2
    assert prune_expired(home.conn, limit=2) == 1
    home.conn.commit()
    assert prune_expired(db) == 0
    left = [row["id"] for row in home.conn.execute("SELECT id FROM snoozes ORDER BY id")]
    assert left == [just_ended, active] and not set(old) & set(left)
