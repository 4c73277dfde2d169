"""schedules.score: exact values, ordering properties, and input validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedules.score import (
    ARM_MODES,
    DEFAULT_WEIGHTS,
    ScoreWeights,
    is_critical,
    normalise_location,
    priority,
)

pytestmark = pytest.mark.unit

unit = st.floats(min_value=0.0, max_value=1.0)
ages = st.floats(min_value=0.0, max_value=10_000.0)
lites = st.none() | st.fixed_dictionaries(
    {}, optional={"person": unit, "vehicle": unit, "animal": unit}
)
modes = st.sampled_from(ARM_MODES)
places = st.sampled_from(["front_door", "garage", "yard", "kitchen", "attic", "Front Door"])


def test_motion_alone_sets_the_score_when_lite_is_unknown():
    assert priority(0.8, None, "away", "front_door", 0) == pytest.approx(0.8)


def test_lite_presence_mixes_with_motion_and_weights_apply():
    # evidence = 0.2 * 0.5 + 0.8 * 0.9 = 0.82; home 0.6; kitchen 0.5
    assert priority(0.5, {"person": 0.9}, "home", "kitchen", 0) == pytest.approx(0.246)


def test_a_vehicle_counts_less_than_a_person_and_an_animal_least():
    person = priority(0.5, {"person": 0.9}, "home", "garage", 0)
    vehicle = priority(0.5, {"vehicle": 0.9}, "home", "garage", 0)
    animal = priority(0.5, {"animal": 0.9}, "home", "garage", 0)
    assert person > vehicle > animal


def test_a_critical_event_gets_the_boost_on_top():
    assert priority(0.5, {"person": 0.9}, "away", "front_door", 0) == pytest.approx(2.82)


def test_a_routine_event_at_full_strength_still_ranks_below_a_stale_critical_one():
    routine = priority(1.0, None, "away", "front_door", 0)
    stale_critical = priority(0.0, {"person": 0.5}, "home", "front_door", 1e6)
    assert routine == pytest.approx(1.0) and stale_critical > routine


def test_age_halves_the_score_every_half_life():
    assert priority(0.8, None, "away", "front_door", 120) == pytest.approx(0.4)
    slow = ScoreWeights(half_life_s=60.0)
    assert priority(0.8, None, "away", "front_door", 120, slow) == pytest.approx(0.2)


def test_unknown_location_gets_the_default_weight_and_names_are_normalised():
    assert priority(1.0, None, "away", "attic", 0) == pytest.approx(0.6)
    assert normalise_location("  Front-Door ") == "front_door"
    assert priority(1.0, None, "away", "Front Door", 0) == pytest.approx(1.0)


def test_arm_modes_rank_away_and_night_over_home_over_disarmed():
    scores = [priority(0.7, None, mode, "yard", 0) for mode in ("away", "night", "home")]
    assert scores[0] == scores[1] > scores[2] > priority(0.7, None, "disarmed", "yard", 0)


def test_locations_rank_doors_over_outside_over_indoor_rooms():
    door, garage, yard, room = (
        priority(0.7, None, "home", place, 0)
        for place in ("front_door", "garage", "yard", "living_room")
    )
    assert door > garage > yard > room


@pytest.mark.parametrize(
    ("lite", "mode", "place", "expected"),
    [
        ({"person": 0.9}, "away", "kitchen", True),
        ({"person": 0.9}, "night", "yard", True),
        ({"person": 0.9}, "home", "front_door", True),
        ({"person": 0.9}, "home", "kitchen", False),
        ({"person": 0.9}, "disarmed", "front_door", False),
        ({"person": 0.3}, "away", "front_door", False),
        ({"vehicle": 1.0}, "away", "front_door", False),
        (None, "away", "front_door", False),
        ({"person": 0.9}, "home", "indoor", False),
    ],
)
def test_is_critical_means_a_person_while_armed_away_or_at_night_or_at_a_door(
    lite, mode, place, expected
):
    assert is_critical(lite, mode, place) is expected


@pytest.mark.parametrize(
    "call",
    [
        lambda: priority(1.5, None, "away", "door", 0),
        lambda: priority(-0.1, None, "away", "door", 0),
        lambda: priority(math.nan, None, "away", "door", 0),
        lambda: priority(0.5, {"person": 1.2}, "away", "door", 0),
        lambda: priority(0.5, {"ghost": 0.5}, "away", "door", 0),
        lambda: priority(0.5, None, "vacation", "door", 0),
        lambda: priority(0.5, None, "away", "door", -1),
        lambda: priority(0.5, None, "away", "door", math.inf),
        lambda: is_critical({"person": 2.0}, "away", "door"),
        lambda: ScoreWeights(half_life_s=0),
        lambda: ScoreWeights(arm={"away": 1.0}),
        lambda: ScoreWeights(locations={"door": 1.5}),
        lambda: ScoreWeights(motion_share=1.1),
    ],
)
def test_out_of_range_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_weights_are_frozen():
    with pytest.raises(TypeError):
        DEFAULT_WEIGHTS.arm["away"] = 0.1  # type: ignore[index]


@settings(max_examples=50, deadline=None, database=None)
@given(a=unit, b=unit, lite=lites, mode=modes, place=places, age=ages)
def test_more_motion_never_lowers_the_score(a, b, lite, mode, place, age):
    lo, hi = sorted((a, b))
    assert priority(lo, lite, mode, place, age) <= priority(hi, lite, mode, place, age)


@settings(max_examples=50, deadline=None, database=None)
@given(m=unit, lite=lites, mode=modes, place=places, a=ages, b=ages)
def test_older_events_never_score_higher(m, lite, mode, place, a, b):
    young, old = sorted((a, b))
    assert priority(m, lite, mode, place, old) <= priority(m, lite, mode, place, young)


@settings(max_examples=50, deadline=None, database=None)
@given(m=unit, p1=unit, p2=unit, mode=modes, place=places, age=ages)
def test_a_more_confident_person_never_lowers_the_score(m, p1, p2, mode, place, age):
    lo, hi = sorted((p1, p2))
    low = priority(m, {"person": lo}, mode, place, age)
    assert low <= priority(m, {"person": hi}, mode, place, age)


# priority's arguments: motion, lite, arm mode, location, age
scored_events = st.tuples(unit, lites, modes, places, ages)


@settings(max_examples=50, deadline=None, database=None)
@given(first=scored_events, second=scored_events)
def test_every_critical_event_outranks_every_routine_one(first, second):
    s1, s2 = priority(*first), priority(*second)
    c1, c2 = is_critical(*first[1:4]), is_critical(*second[1:4])
    assert (s1 > 1.0) == c1 and 0.0 <= s1 <= 3.0
    if c1 and not c2:
        assert s1 > s2
