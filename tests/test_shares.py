"""schedules.shares: the weighted split of one tick's capacity, and the carried deficit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schedules.shares import quotas, split, water_fill

pytestmark = pytest.mark.unit

WEIGHTS = {"standard": 1.0, "premium": 2.0, "enterprise": 4.0}


def test_water_fill_splits_by_weight_and_hands_on_what_a_tier_does_not_want():
    assert water_fill(70, WEIGHTS, {"standard": 99, "premium": 99, "enterprise": 99}) == {
        "standard": 10.0,
        "premium": 20.0,
        "enterprise": 40.0,
    }
    shares = water_fill(70, WEIGHTS, {"standard": 99, "premium": 99, "enterprise": 5})
    assert shares == pytest.approx({"standard": 65 / 3, "premium": 130 / 3, "enterprise": 5})
    assert water_fill(70, WEIGHTS, {"standard": 3, "premium": 0, "enterprise": 0}) == {
        "standard": 3.0,
        "premium": 0.0,
        "enterprise": 0.0,
    }


def test_a_lone_tier_gets_everything_and_nothing_wanted_gets_nothing():
    given_, carried = quotas(25, WEIGHTS, {"standard": 40}, {})
    assert given_ == {"standard": 25, "premium": 0, "enterprise": 0}
    assert set(carried) == {"standard"}
    assert quotas(25, WEIGHTS, {}, {"premium": 0.5}) == (
        {"standard": 0, "premium": 0, "enterprise": 0},
        {},
    )


def test_three_events_a_tick_among_weights_1_2_4_give_3_6_12_over_seven_ticks():
    deficit: dict[str, float] = {}
    got = dict.fromkeys(WEIGHTS, 0)
    demand = dict.fromkeys(WEIGHTS, 50)
    for _ in range(7):
        given_, deficit = quotas(3, WEIGHTS, demand, deficit)
        assert sum(given_.values()) == 3
        for tier, n in given_.items():
            got[tier] += n
    assert got == {"standard": 3, "premium": 6, "enterprise": 12}


def test_split_hands_leftover_capacity_by_weight_without_a_deficit():
    assert split(6, WEIGHTS, {"standard": 10, "premium": 10}) == {
        "standard": 2,
        "premium": 4,
        "enterprise": 0,
    }


demands = st.dictionaries(st.sampled_from(sorted(WEIGHTS)), st.integers(0, 30))


@given(
    ticks=st.lists(st.tuples(st.integers(0, 12), demands), min_size=1, max_size=40),
)
def test_quotas_use_all_the_capacity_they_can_and_the_deficit_stays_bounded(ticks):
    deficit: dict[str, float] = {}
    for capacity, demand in ticks:
        given_, deficit = quotas(capacity, WEIGHTS, demand, deficit)
        assert sum(given_.values()) == min(capacity, sum(demand.values()))
        assert all(given_[t] <= demand.get(t, 0) for t in WEIGHTS)
        assert set(deficit) == {t for t, n in demand.items() if n > 0}
        assert all(-1 <= v <= 1 for v in deficit.values())


@given(capacities=st.lists(st.integers(1, 10), min_size=50, max_size=200))
def test_under_overload_each_tier_is_within_two_events_of_its_weighted_share(capacities):
    deficit: dict[str, float] = {}
    got = dict.fromkeys(WEIGHTS, 0)
    demand = dict.fromkeys(WEIGHTS, 1000)
    for capacity in capacities:
        given_, deficit = quotas(capacity, WEIGHTS, demand, deficit)
        for tier, n in given_.items():
            got[tier] += n
    total, weights = sum(capacities), sum(WEIGHTS.values())
    for tier, weight in WEIGHTS.items():
        assert abs(got[tier] - total * weight / weights) < 2
