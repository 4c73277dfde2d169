"""Who hears of a notification (notify.recipients) against the real PostgreSQL: each
member's camera access, then their own preferences (muted, quiet hours on the home's clock,
cameras, labels, summaries), which life-safety alerts bypass."""

from __future__ import annotations

import pytest

from notify.digest import digest_events
from notify.recipients import queue_deliveries
from tests.factories import analysed_event
from tests.households import SharedHome

pytestmark = pytest.mark.integration

# The home's local wall clock, as the audience query reads it (make_home: Europe/Paris).
LOCAL_NOW = "(now() AT TIME ZONE 'Europe/Paris')::time"


class Home(SharedHome):
    """The shared home, with each member's preferences."""

    def prefer(self, user: int, **columns) -> None:
        """Upsert the member's preferences row (SQL expressions as values)."""
        names = ", ".join(columns)
        values = ", ".join(str(v) for v in columns.values())
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in columns)
        self.conn.execute(
            f"INSERT INTO member_preferences (home_id, user_id, {names})"
            f" VALUES (%s, %s, {values}) ON CONFLICT (home_id, user_id) DO UPDATE SET {updates}",
            (self.id, user),
        )


@pytest.fixture
def home(db_conn) -> Home:
    return Home(db_conn)


def test_without_preferences_every_member_hears_of_alerts_and_summaries(home):
    assert home.phones(home.alert()) == home.both
    assert home.phones(home.alert(home.garden, ("vehicle",))) == home.both
    assert home.phones(home.summary()) == home.both


def test_a_muted_member_hears_only_of_life_safety_until_the_mute_ends(home):
    home.prefer(home.member, muted_until="now() + interval '1 hour'")
    assert home.phones(home.alert()) == [home.owner_phone]
    assert home.phones(home.summary()) == [home.owner_phone]
    assert home.phones(home.alert(life_safety=True)) == home.both
    home.prefer(home.member, muted_until="now() - interval '1 second'")  # a mute that ended
    assert home.phones(home.alert()) == home.both


def test_a_members_quiet_hours_are_on_the_homes_clock(home):
    # Half an hour either side of the time in Paris: an hour or two away from UTC's.
    around = f"{LOCAL_NOW} - interval '30 minutes'", f"{LOCAL_NOW} + interval '30 minutes'"
    home.prefer(home.member, quiet_hours_start=around[0], quiet_hours_end=around[1])
    assert home.phones(home.alert()) == [home.owner_phone]
    assert home.phones(home.summary()) == [home.owner_phone]
    assert home.phones(home.alert(life_safety=True)) == home.both

    later = f"{LOCAL_NOW} + interval '1 hour'", f"{LOCAL_NOW} + interval '2 hours'"
    home.prefer(home.member, quiet_hours_start=later[0], quiet_hours_end=later[1])
    assert home.phones(home.alert()) == home.both


def test_quiet_hours_that_span_midnight_cover_both_sides_of_it(home):
    # start > end: from start to midnight and from midnight to end (wrapping, as a night
    # window does); the window from now + 1 h round the clock to now - 1 h leaves now out.
    gap = f"{LOCAL_NOW} + interval '1 hour'", f"{LOCAL_NOW} - interval '1 hour'"
    home.prefer(home.member, quiet_hours_start=gap[0], quiet_hours_end=gap[1])
    assert home.phones(home.alert()) == home.both
    # ...and the window from now - 1 h round the clock to now - 2 h holds now.
    night = f"{LOCAL_NOW} - interval '1 hour'", f"{LOCAL_NOW} - interval '2 hours'"
    home.prefer(home.member, quiet_hours_start=night[0], quiet_hours_end=night[1])
    assert home.phones(home.alert()) == [home.owner_phone]
    same = f"{LOCAL_NOW} + interval '3 hours'"  # start = end: all day
    home.prefer(home.member, quiet_hours_start=same, quiet_hours_end=same)
    assert home.phones(home.alert()) == [home.owner_phone]


def test_alert_cameras_choose_which_cameras_alert_but_not_summaries(home):
    home.prefer(home.member, alert_cameras=f"ARRAY[{home.garden}]::bigint[]")
    assert home.phones(home.alert()) == [home.owner_phone]
    assert home.phones(home.alert(home.garden)) == home.both
    assert home.phones(home.summary()) == home.both
    assert home.phones(home.alert(life_safety=True)) == home.both
    home.prefer(home.member, alert_cameras="'{}'")  # no camera: summaries and life safety
    assert home.phones(home.alert(home.garden)) == [home.owner_phone]
    assert home.phones(home.summary()) == home.both


def test_alert_labels_choose_what_alerts_and_unverified_motion_still_does(home):
    home.prefer(home.member, alert_labels="'{person}'")
    assert home.phones(home.alert(labels=("vehicle",))) == [home.owner_phone]
    assert home.phones(home.alert(labels=("person", "vehicle"))) == home.both
    assert home.phones(home.summary()) == home.both
    # A fail-safe alert on motion: nobody knows what moved, so it may be a person.
    assert home.phones(home.alert(labels=("motion",))) == home.both
    # A fail-safe alert whose quick check saw a vehicle is filtered as a vehicle alert.
    assert home.phones(home.alert(labels=("vehicle",))) == [home.owner_phone]
    home.prefer(home.member, alert_labels="'{animal}'")
    assert home.phones(home.alert(labels=("person",), life_safety=True)) == home.both


def test_summaries_off_leaves_the_alerts(home):
    home.prefer(home.member, summaries="false")
    assert home.phones(home.summary()) == [home.owner_phone]
    assert home.phones(home.alert()) == home.both


def test_a_viewer_with_a_camera_list_hears_of_those_cameras_only_life_safety_or_not(home):
    _, viewer_phone = home.add_member("zoe@example.com", "viewer", [home.garden])
    assert home.phones(home.alert(home.garden)) == [*home.both, viewer_phone]
    assert home.phones(home.alert()) == home.both
    # Access is not a preference: life safety does not open another camera to them.
    assert home.phones(home.alert(life_safety=True)) == home.both
    assert home.phones(home.summary()) == home.both  # a summary speaks of every camera


def test_only_users_narrows_the_audience_and_life_safety_reaches_a_muted_member(home):
    home.prefer(home.member, muted_until="now() + interval '1 day'")
    alert = home.alert(life_safety=True)
    assert home.phones(alert, only_users=[home.member]) == [home.member_phone]
    assert home.phones(alert, only_users=[home.owner]) == [home.owner_phone]
    assert home.phones(alert, only_users=[]) == []
    assert home.phones(home.alert(), only_users=[home.member]) == []  # muted


def test_queueing_twice_queues_nothing_new(home):
    alert = home.alert(life_safety=True)
    first = queue_deliveries(home.conn, alert, only_users=[home.owner])
    assert len(first) == 1
    rest = queue_deliveries(home.conn, alert, escalation_step=1, critical=True)
    assert len(rest) == 1  # the member's phone; the owner's already has its delivery
    assert queue_deliveries(home.conn, alert) == []
    rows = home.conn.execute(
        "SELECT device_id, escalation_step, critical FROM deliveries ORDER BY id"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        (home.owner_phone, None, False),
        (home.member_phone, 1, True),
    ]


def test_the_digest_pushes_to_members_as_their_preferences_say(db):
    with db.connection() as conn:
        home = Home(conn, arm_mode="home")
        home.prefer(home.member, muted_until="now() + interval '1 hour'")
    # A car at the door while armed home: an alert, not life safety.
    car = analysed_event(db, home.id, home.camera, "front_door", [("car", 0.9)])
    report = digest_events(db, [car])
    assert [a.event_id for a in report.alerts] == [car]
    # A person at the door while armed: life safety, which the mute does not hold back.
    person = analysed_event(db, home.id, home.camera, "front_door", [("person", 0.9)])
    report = digest_events(db, [person])
    assert len(report.alerts) == 1
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT n.event_id, n.life_safety, d.device_id FROM deliveries d"
            " JOIN notifications n ON n.id = d.notification_id ORDER BY d.id"
        ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        (car, False, home.owner_phone),
        (person, True, home.owner_phone),
        (person, True, home.member_phone),
    ]
