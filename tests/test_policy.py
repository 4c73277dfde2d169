"""The alert policy as a pure function: cooldowns, budget, life-safety bypass, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from notify.policy import AlertHistory, HomePolicy, decide, in_quiet_hours

pytestmark = pytest.mark.unit

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PERSON = [("person", 0.9)]
CAR = [("car", 0.8)]
NONE = AlertHistory()


def test_a_person_while_armed_away_is_a_life_safety_alert():
    d = decide(PERSON, "away", "backyard", HomePolicy(), NONE, NOW)
    assert (d.kind, d.reason, d.life_safety, d.labels) == (
        "alert",
        "life_safety",
        True,
        ("person",),
    )
    assert d.title == "Person at the backyard" and "armed away" in d.body


def test_a_car_at_the_door_while_home_is_an_alert_but_not_life_safety():
    d = decide(CAR, "home", "front_door", HomePolicy(), NONE, NOW)
    assert (d.kind, d.reason, d.life_safety) == ("alert", "armed", False)


@pytest.mark.parametrize(
    "detections, mode, location, reason",
    [
        (PERSON, "disarmed", "front_door", "not_armed"),
        (CAR, "home", "driveway", "routine"),  # armed home: only doors alert
        ([("cat", 0.9)], "away", "front_door", "routine"),  # animals are not alert labels
        ([("person", 0.3)], "away", "front_door", "below_threshold"),  # below min_score
        ([], "away", "front_door", "below_threshold"),
    ],
)
def test_what_is_folded_into_a_summary(detections, mode, location, reason):
    d = decide(detections, mode, location, HomePolicy(), NONE, NOW)
    assert (d.kind, d.reason) == ("summary", reason)


def test_a_home_may_ask_for_animal_alerts():
    policy = HomePolicy(alert_labels=frozenset({"person", "animal"}))
    assert decide([("dog", 0.8)], "away", "yard", policy, NONE, NOW).kind == "alert"


def test_cooldown_is_per_location_and_label():
    last = {("front_door", "person"): NOW - timedelta(seconds=100)}
    history = AlertHistory(last_alerted=last, alerts_last_hour=1)
    policy = HomePolicy(cooldown_s=300)
    assert decide(PERSON, "away", "front_door", policy, history, NOW).reason == "cooldown"
    # another place, or another label at the same place, is news
    assert decide(PERSON, "away", "back_door", policy, history, NOW).kind == "alert"
    both = decide(PERSON + CAR, "away", "front_door", policy, history, NOW)
    assert (both.kind, both.labels, both.title) == (
        "alert",
        ("vehicle",),
        "Vehicle at the front door",
    )
    # and the cooldown ends
    later = NOW + timedelta(seconds=200)
    assert decide(PERSON, "away", "front_door", policy, history, later).kind == "alert"


def test_cooldown_holds_even_for_life_safety():
    history = AlertHistory(last_alerted={("front_door", "person"): NOW - timedelta(seconds=5)})
    assert decide(PERSON, "away", "front_door", HomePolicy(), history, NOW).reason == "cooldown"


def test_budget_folds_routine_alerts_but_life_safety_bypasses_it():
    spent = AlertHistory(alerts_last_hour=10)
    policy = HomePolicy(hourly_budget=10)
    assert decide(CAR, "home", "front_door", policy, spent, NOW).reason == "budget"
    bypass = decide(PERSON, "away", "front_door", policy, spent, NOW)
    assert (bypass.kind, bypass.reason) == ("alert", "life_safety")
    assert (
        decide(CAR, "home", "front_door", policy, AlertHistory(alerts_last_hour=9), NOW).kind
        == "alert"
    )


def test_a_zero_budget_silences_everything_but_life_safety():
    policy = HomePolicy(hourly_budget=0)
    assert decide(CAR, "away", "front_door", policy, NONE, NOW).reason == "budget"
    assert decide(PERSON, "night", "garden", policy, NONE, NOW).kind == "alert"


def quiet(tz: str, start: str = "22:00", end: str = "07:00", **kw) -> HomePolicy:
    return HomePolicy(
        timezone=tz, quiet_start=time.fromisoformat(start), quiet_end=time.fromisoformat(end), **kw
    )


def test_quiet_hours_fold_routine_alerts_and_life_safety_bypasses_them():
    policy = quiet("Europe/Paris")
    night = datetime(2026, 6, 1, 23, 30, tzinfo=UTC)  # 01:30 in Paris (UTC+2)
    assert decide(CAR, "home", "front_door", policy, NONE, night).reason == "quiet_hours"
    assert decide(PERSON, "night", "front_door", policy, NONE, night).kind == "alert"
    day = datetime(2026, 6, 1, 6, 30, tzinfo=UTC)  # 08:30 in Paris
    assert decide(CAR, "home", "front_door", policy, NONE, day).kind == "alert"


@pytest.mark.parametrize(
    "tz, utc_hour, quiet_now",
    [
        ("UTC", 23, True),
        ("America/New_York", 23, False),  # 19:00 EDT
        ("America/New_York", 3, True),  # 23:00 EDT
        ("Asia/Tokyo", 13, True),  # 22:00 JST
        ("Asia/Tokyo", 22, False),  # 07:00 JST: the end is exclusive
        ("Australia/Sydney", 20, True),  # 06:00 AEST
        ("Asia/Kolkata", 16, True),  # 22:00 IST (UTC+5:30) — half-hour zones too
        ("Asia/Kolkata", 16 - 1, False),  # 21:00 IST
    ],
)
def test_quiet_hours_follow_the_homes_own_clock(tz, utc_hour, quiet_now):
    now = datetime(2026, 6, 1, utc_hour, 30 if tz == "Asia/Kolkata" else 0, tzinfo=UTC)
    assert in_quiet_hours(now, quiet(tz)) is quiet_now


def test_quiet_hours_move_with_the_clocks_across_a_dst_change():
    policy = quiet("America/New_York", "22:00", "07:00")
    # 11:30 UTC is 07:30 EDT in summer (awake) but 06:30 EST after the clocks fall back.
    assert not in_quiet_hours(datetime(2026, 10, 31, 11, 30, tzinfo=UTC), policy)
    assert in_quiet_hours(datetime(2026, 11, 1, 11, 30, tzinfo=UTC), policy)
    # Spring forward: 02:00-03:00 local does not exist; 06:30 UTC is 01:30 EST then 02:30...
    assert in_quiet_hours(datetime(2026, 3, 8, 6, 30, tzinfo=UTC), policy)  # 01:30 EST
    assert in_quiet_hours(datetime(2026, 3, 8, 7, 30, tzinfo=UTC), policy)  # 03:30 EDT
    # 11:30 UTC: 06:30 EST the day before, 07:30 EDT the day after the change
    assert in_quiet_hours(datetime(2026, 3, 7, 11, 30, tzinfo=UTC), policy)
    assert not in_quiet_hours(datetime(2026, 3, 9, 11, 30, tzinfo=UTC), policy)


def test_a_quiet_window_within_the_day_and_an_all_day_one():
    afternoon = quiet("UTC", "13:00", "15:00")
    assert in_quiet_hours(datetime(2026, 6, 1, 14, 0, tzinfo=UTC), afternoon)
    assert not in_quiet_hours(datetime(2026, 6, 1, 15, 0, tzinfo=UTC), afternoon)
    assert in_quiet_hours(NOW, quiet("UTC", "09:00", "09:00"))
    assert not in_quiet_hours(NOW, HomePolicy())


def test_the_alert_shows_the_homes_local_time():
    d = decide(PERSON, "away", "front_door", HomePolicy(timezone="Asia/Tokyo"), NONE, NOW)
    assert d.body == "Seen at 21:00 while armed away."


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alert_labels": frozenset({"ghost"})},
        {"quiet_start": time(22, 0)},
        {"timezone": "Mars/Olympus"},
    ],
)
def test_invalid_policies_are_refused(kwargs):
    with pytest.raises(Exception):  # noqa: B017 - ValueError or ZoneInfoNotFoundError
        HomePolicy(**kwargs)


def test_a_door_is_a_door_however_the_camera_names_it_as_in_triage():
    for location in ("Front Door", "front-door", "garage_door"):
        assert decide(CAR, "home", location, HomePolicy(), NONE, NOW).kind == "alert"
