"""Alert now or fold into a summary: a pure function of the event, the home and its history.

An event is worth an alert when what the detector saw matters for how the home is armed:

* **life safety** — a person while armed away or at night, or a person at a door while
  armed at all. These bypass quiet hours and the hourly budget.
* **armed** — any of the home's alert labels (person and vehicle by default) at a door
  while armed, or anywhere while armed away or at night.

Then, in this order, an alert is folded into the next summary instead when

1. every label it would alert on was already alerted at the same location within the
   cooldown (one intruder lingering at the door is one alert, not forty);
2. it is not life safety and the home is in its quiet hours (local wall clock, so a DST
   change moves them with the clocks);
3. it is not life safety and the home already had ``hourly_budget`` alerts in the last hour.

Nothing is dropped: a folded event still appears in its summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from inference.labels import PRESENCE_GROUPS, group_of
from schedules.score import ARMED_MODES, DOOR_LOCATIONS, normalise_location

FULLY_ARMED = frozenset({"away", "night"})
GROUPS = tuple(PRESENCE_GROUPS)  # person, vehicle, animal


@dataclass(frozen=True)
class HomePolicy:
    """What a home chose (``PUT /homes/<id>/policy``); the defaults suit most homes."""

    cooldown_s: int = 300
    hourly_budget: int = 10
    alert_labels: frozenset[str] = frozenset({"person", "vehicle"})
    min_score: float = 0.45
    summary_window_s: int = 90  # the source's batching window...
    summary_idle_s: int = 30  # ...closed early after this long without a new event
    summary_interval_s: int = 0  # 0: summary when the window closes; else periodic digest
    timezone: str = "UTC"
    quiet_start: time | None = None
    quiet_end: time | None = None

    def __post_init__(self) -> None:
        unknown = set(self.alert_labels) - set(GROUPS)
        if unknown:
            raise ValueError(f"alert_labels must be among {GROUPS}, got {sorted(unknown)}")
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValueError("quiet hours need both a start and an end")
        ZoneInfo(self.timezone)  # raises for an unknown zone


@dataclass(frozen=True)
class AlertHistory:
    """The home's recent alerts, as the store knows them when deciding."""

    # (location, label) → when it was last alerted
    last_alerted: Mapping[tuple[str, str], datetime] = field(default_factory=dict)
    alerts_last_hour: int = 0


@dataclass(frozen=True)
class Decision:
    kind: str  # "alert" or "summary"
    reason: str  # life_safety | armed | cooldown | quiet_hours | budget | not_armed | routine
    labels: tuple[str, ...]  # presence groups seen at or above min_score
    life_safety: bool
    title: str
    body: str


def place_name(location: str) -> str:
    return location.replace("_", " ").strip() or "home"


def in_quiet_hours(now: datetime, policy: HomePolicy) -> bool:
    """Whether ``now`` (aware) falls in the home's quiet hours on its local wall clock.

    ``start > end`` spans midnight (22:00–07:00); ``start == end`` means all day.
    """
    if policy.quiet_start is None or policy.quiet_end is None:
        return False
    local = now.astimezone(ZoneInfo(policy.timezone)).time().replace(tzinfo=None)
    start, end = policy.quiet_start, policy.quiet_end
    if start == end:
        return True
    if start < end:
        return start <= local < end
    return local >= start or local < end


def seen_groups(detections: Iterable[tuple[str, float]], min_score: float) -> tuple[str, ...]:
    """Presence groups among (label, score) detections, in PRESENCE_GROUPS order."""
    found = {
        label if label in PRESENCE_GROUPS else group_of(label)  # lite results name groups
        for label, score in detections
        if score >= min_score
    }
    return tuple(g for g in GROUPS if g in found)


def at_a_door(location: str) -> bool:
    """``"Front Door"``, ``"front-door"`` and ``"front_door"`` all are (as in triage)."""
    return normalise_location(location) in DOOR_LOCATIONS


def is_life_safety(groups: Sequence[str], arm_mode: str, location: str) -> bool:
    if "person" not in groups:
        return False
    return arm_mode in FULLY_ARMED or (arm_mode in ARMED_MODES and at_a_door(location))


def _what(groups: Sequence[str]) -> str:
    named = list(groups) or ["motion"]
    return " and ".join(g.capitalize() if i == 0 else g for i, g in enumerate(named))


def decide(
    detections: Iterable[tuple[str, float]],
    arm_mode: str,
    location: str,
    policy: HomePolicy,
    history: AlertHistory,
    now: datetime,
) -> Decision:
    """Alert or summary for one analysed event; ``now`` is timezone-aware."""
    groups = seen_groups(detections, policy.min_score)
    life_safety = is_life_safety(groups, arm_mode, location)
    # A person while armed away is life safety whatever the home chose to hear about.
    alerting = tuple(
        g for g in groups if g in policy.alert_labels or (life_safety and g == "person")
    )
    place = place_name(location)
    local = now.astimezone(ZoneInfo(policy.timezone))

    def summary(reason: str) -> Decision:
        return Decision(
            "summary", reason, groups, False, f"Activity at the {place}",
            f"{_what(groups)} seen at the {place} at {local:%H:%M}.",
        )  # fmt: skip

    if arm_mode not in ARMED_MODES:
        return summary("not_armed")
    if not alerting or not (life_safety or arm_mode in FULLY_ARMED or at_a_door(location)):
        return summary("routine")
    cooldown = timedelta(seconds=policy.cooldown_s)
    fresh = tuple(
        g
        for g in alerting
        if (last := history.last_alerted.get((location, g))) is None or now - last >= cooldown
    )
    if not fresh:
        return summary("cooldown")
    if not life_safety and in_quiet_hours(now, policy):
        return summary("quiet_hours")
    if not life_safety and history.alerts_last_hour >= policy.hourly_budget:
        return summary("budget")
    return Decision(
        "alert",
        "life_safety" if life_safety else "armed",
        fresh,
        life_safety,
        f"{_what(fresh)} at the {place}",
        f"Seen at {local:%H:%M} while armed {arm_mode}.",
    )
