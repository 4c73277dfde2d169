"""Snoozes against the real PostgreSQL (notify.snoozes): what a member's snoozes cover,
when every member who would hear of an alert snoozed it, who gets its pushes
(notify.recipients), and the beat's pruning of ended snoozes."""

from __future__ import annotations

import pytest

from notify.recipients import queue_deliveries
from notify.snoozes import (
    PRUNE_MARGIN_S,
    active_snoozes,
    add_snooze,
    everyone_snoozed,
    prune_expired,
)
from tests.households import SharedHome
from vigil.vocabulary import PresenceGroup

pytestmark = pytest.mark.integration

PERSON, VEHICLE, ANIMAL = PresenceGroup.PERSON, PresenceGroup.VEHICLE, PresenceGroup.ANIMAL


class Home(SharedHome):
    """The shared home, with its members' snoozes."""

    def snooze(self, user: int, camera=None, label=None, until="now() + interval '1 hour'"):
        at = self.conn.execute(f"SELECT {until} AS at").fetchone()["at"]
        return add_snooze(self.conn, self.id, user, at, device_id=camera, label=label)

    def everyone_snoozed(self, camera=None, groups=(PERSON,)) -> bool:
        return everyone_snoozed(self.conn, self.id, camera or self.camera, groups)


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
