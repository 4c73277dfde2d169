"""Splitting one tick's free capacity among the tiers by weight (pure arithmetic).

``water_fill`` is the fluid split: capacity in proportion to the weights of the tiers that
want some, a tier never given more than it wants, and what it leaves handed on to the
others by their weights. ``quotas`` turns that into whole events for this tick with a
deficit carried between ticks: each tier's credit is its fluid share plus what rounding
left it owed (or owing) from the last tick, each gets the whole part of its credit and the
units still free go to the largest remainders. The carried deficit stays within (-1, 1)
per tier, so over any run of ticks a tier's events differ from its exact weighted share by
less than two, however small each tick's capacity (3 events among weights 1/2/4 give
3, 6 and 12 events over 7 ticks).

A tier with nothing waiting carries no deficit: capacity it did not want is not owed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# What a deficit may carry: only rounding, never capacity a tier could not use.
DEFICIT_BOUND = 1.0


def water_fill(
    capacity: float, weights: Mapping[str, float], demand: Mapping[str, float]
) -> dict[str, float]:
    """``capacity`` split by weight among the tiers with ``demand`` > 0, none above its
    demand; the total is ``min(capacity, total demand)``."""
    share = {tier: 0.0 for tier in weights}
    open_ = {tier for tier in weights if demand.get(tier, 0) > 0 and weights[tier] > 0}
    left = float(max(0.0, capacity))
    while open_ and left > 1e-12:
        total = sum(weights[t] for t in open_)
        full = [t for t in open_ if demand[t] - share[t] <= left * weights[t] / total]
        if not full:
            for t in open_:
                share[t] += left * weights[t] / total
            break
        for t in full:
            left -= demand[t] - share[t]
            share[t] = float(demand[t])
            open_.discard(t)
    return share


def quotas(
    capacity: int,
    weights: Mapping[str, float],
    demand: Mapping[str, int],
    deficit: Mapping[str, float],
) -> tuple[dict[str, int], dict[str, float]]:
    """Whole events per tier for one tick, and the deficit to carry to the next.

    The quotas add up to ``min(capacity, total demand)``; none exceeds its tier's demand.
    Tiers without demand get 0 and carry nothing.
    """
    fluid = water_fill(capacity, weights, demand)
    wanting = [t for t in weights if demand.get(t, 0) > 0]
    credit = {t: fluid[t] + _bounded(deficit.get(t, 0.0)) for t in wanting}
    given = {t: min(demand[t], max(0, math.floor(credit[t]))) for t in wanting}
    target = min(capacity, sum(demand[t] for t in wanting))
    order = list(weights)  # ties go to the tier listed first
    while sum(given.values()) < target:
        room = [t for t in wanting if given[t] < demand[t]]
        best = max(room, key=lambda t: (credit[t] - given[t], -order.index(t)))
        given[best] += 1
    while sum(given.values()) > target:
        held = [t for t in wanting if given[t] > 0]
        worst = min(held, key=lambda t: (credit[t] - given[t], order.index(t)))
        given[worst] -= 1
    out = {t: given.get(t, 0) for t in weights}
    carried = {t: _bounded(credit[t] - given[t]) for t in wanting}
    return out, carried


def split(capacity: int, weights: Mapping[str, float], demand: Mapping[str, int]) -> dict[str, int]:
    """Whole events per tier by weight, without a deficit: leftover capacity within a tick."""
    given, _ = quotas(capacity, weights, demand, {})
    return given


def _bounded(value: float) -> float:
    if not math.isfinite(value):
        return 0.0
    return max(-DEFICIT_BOUND, min(DEFICIT_BOUND, value))
