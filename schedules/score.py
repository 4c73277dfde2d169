"""Priority of a motion event: a pure, configurable function of what we know about it.

    priority = evidence × arm weight × location weight × 0.5 ** (age_s / half_life_s)
               + critical_boost   (only when ``is_critical``)

* **evidence** (0..1): with no lite result (``lite is None``) it is the motion score alone.
  With one, it mixes motion with the strongest weighted presence,
  ``motion_share × motion + (1 − motion_share) × max(label weight × confidence)``, so a
  confident person outranks a vehicle, which outranks an animal.
* **arm weight**: away/night > home > disarmed.
* **location weight**: doors > porch/garage/driveway/yard > indoor rooms; names are
  normalised (``"Front Door"`` → ``front_door``) and an unknown location gets
  ``default_location_weight``.
* **age decay**: exponential with ``half_life_s``; the age is the event's age when it is
  scored (the score is stored in Redis and not re-decayed as it waits).

Every weight is in (0, 1], so a routine event scores in [0, 1]; ``critical_boost`` (2 by
default, any value > 1 does) puts every critical event strictly above every routine one,
whatever its age: a routine event can reach exactly 1 (full motion, armed away, at a door).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from vigil.vocabulary import ARMED_MODES, FULLY_ARMED, ArmMode, PresenceGroup

# Plain values, not members: request models build Literal types from these, and a member
# would show as its repr in their validation errors.
LABELS = tuple(group.value for group in PresenceGroup)  # what lite models report
ARM_MODES = tuple(
    mode.value for mode in (ArmMode.AWAY, ArmMode.NIGHT, ArmMode.HOME, ArmMode.DISARMED)
)


def _frozen(values: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(values))


def _factory(values: Mapping[str, float]) -> Callable[[], Mapping[str, float]]:
    return lambda: _frozen(values)


_ARM: dict[str, float] = {
    ArmMode.AWAY: 1.0,
    ArmMode.NIGHT: 1.0,
    ArmMode.HOME: 0.6,
    ArmMode.DISARMED: 0.3,
}
_LABEL: dict[str, float] = {
    PresenceGroup.PERSON: 1.0,
    PresenceGroup.VEHICLE: 0.6,
    PresenceGroup.ANIMAL: 0.3,
}
_LOCATION = {
    "front_door": 1.0,
    "back_door": 1.0,
    "side_door": 1.0,
    "door": 1.0,
    "entrance": 1.0,
    "garage_door": 1.0,
    "porch": 0.9,
    "garage": 0.8,
    "driveway": 0.8,
    "yard": 0.7,
    "backyard": 0.7,
    "front_yard": 0.7,
    "garden": 0.7,
    "living_room": 0.5,
    "kitchen": 0.5,
    "hallway": 0.5,
    "bedroom": 0.4,
    "indoor": 0.5,
}
# Entry points: what counts as "at a door" for triage and for the alert policy alike.
DOOR_LOCATIONS = frozenset(
    {"front_door", "back_door", "side_door", "garage_door", "door", "entrance"}
)


def _listed(words: tuple[str, ...]) -> str:
    return ", ".join(words)


def _check_unit(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_lite(lite: Mapping[str, float] | None) -> None:
    if lite is None:
        return
    for label, conf in lite.items():
        if label not in LABELS:
            raise ValueError(f"unknown lite label {label!r}; expected one of {_listed(LABELS)}")
        _check_unit(f"lite[{label!r}]", conf)


def _check_arm(arm_mode: str, weights: ScoreWeights) -> None:
    if arm_mode not in weights.arm:
        raise ValueError(f"arm_mode must be one of {_listed(ARM_MODES)}, got {arm_mode!r}")


@dataclass(frozen=True)
class ScoreWeights:
    """Tunable weights of ``priority``; the defaults are ``DEFAULT_WEIGHTS``."""

    arm: Mapping[str, float] = field(default_factory=_factory(_ARM))
    labels: Mapping[str, float] = field(default_factory=_factory(_LABEL))
    locations: Mapping[str, float] = field(default_factory=_factory(_LOCATION))
    door_locations: frozenset[str] = DOOR_LOCATIONS
    default_location_weight: float = 0.6
    motion_share: float = 0.2
    half_life_s: float = 120.0
    critical_boost: float = 2.0
    critical_person_confidence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("arm", "labels", "locations"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if set(self.arm) != set(ARM_MODES):
            raise ValueError(f"arm weights must name exactly {_listed(ARM_MODES)}")
        if set(self.labels) != set(LABELS):
            raise ValueError(f"label weights must name exactly {_listed(LABELS)}")
        weights = [*self.arm.values(), *self.labels.values(), *self.locations.values()]
        for w in (*weights, self.default_location_weight):
            if not (math.isfinite(w) and 0.0 < w <= 1.0):
                raise ValueError(f"weights must be in (0, 1], got {w!r}")
        _check_unit("motion_share", self.motion_share)
        _check_unit("critical_person_confidence", self.critical_person_confidence)
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0):
            raise ValueError("half_life_s must be > 0")
        if not (math.isfinite(self.critical_boost) and self.critical_boost >= 0):
            raise ValueError("critical_boost must be >= 0")


DEFAULT_WEIGHTS = ScoreWeights()


def normalise_location(location: str) -> str:
    """``"Front Door"`` / ``"front-door"`` → ``"front_door"``."""
    return "_".join(location.strip().lower().replace("-", " ").split())


def priority(
    motion_score: float,
    lite: Mapping[str, float] | None,
    arm_mode: str,
    location: str,
    age_s: float,
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> float:
    """The event's priority (higher first); ValueError on an out-of-range input."""
    _check_unit("motion_score", motion_score)
    _check_lite(lite)
    _check_arm(arm_mode, weights)
    if not (isinstance(age_s, int | float) and math.isfinite(age_s) and age_s >= 0):
        raise ValueError(f"age_s must be a finite number >= 0, got {age_s!r}")
    if lite is None:
        evidence = motion_score
    else:
        presence = max((weights.labels[label] * conf for label, conf in lite.items()), default=0.0)
        evidence = weights.motion_share * motion_score + (1 - weights.motion_share) * presence
    place = weights.locations.get(normalise_location(location), weights.default_location_weight)
    decay = 0.5 ** (age_s / weights.half_life_s)
    score = evidence * weights.arm[arm_mode] * place * decay
    if is_critical(lite, arm_mode, location, weights):
        score += weights.critical_boost
    return score


def is_critical(
    lite: Mapping[str, float] | None,
    arm_mode: str,
    location: str,
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> bool:
    """A person (confidence ≥ threshold) while armed away or at night, or at a door while
    armed at all. Without a lite result nothing is critical: motion alone is not enough."""
    _check_lite(lite)
    _check_arm(arm_mode, weights)
    if lite is None or lite.get(PresenceGroup.PERSON, 0.0) < weights.critical_person_confidence:
        return False
    if arm_mode in FULLY_ARMED:
        return True
    return arm_mode in ARMED_MODES and normalise_location(location) in weights.door_locations
