"""schedules.beat: the beat schedule as data."""

from __future__ import annotations

from schedules.beat import beat_schedule
from schedules.config import SchedulerConfig


def test_beat_schedule_ticks_every_second_and_entries_expire_before_the_next():
    config = SchedulerConfig(reap_interval_s=5, expire_interval_s=10)
    schedule = beat_schedule(config)
    assert {entry["task"] for entry in schedule.values()} == {
        "schedules.tick",
        "schedules.reap",
        "schedules.expire",
        "schedules.lite",
    }
    assert schedule["schedules.tick"]["schedule"] == 1.0
    assert schedule["schedules.lite"]["schedule"] == 0.5
    for entry in schedule.values():
        assert 0 < entry["options"]["expires"] < entry["schedule"]
