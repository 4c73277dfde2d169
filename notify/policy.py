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

Nothing is dropped: a folded event still appears in its summary. An analysed event in which
nothing reached the home's threshold is *suppressed* in a disarmed home (no notification;
it stays in the history) and folded into the summary of an armed one.

An event that could not be analysed (failed or skipped) is decided by ``decide_unanalysed``:
a **fail-safe** alert when its quick check (the phone's or the server's lite result) saw
something that alerts, or when the home is armed for that place (away or night, or a door
while armed home) — "Motion at the front door — the picture could not be analysed". The
same cooldown (per place, on "motion"), quiet hours and budget apply; life safety bypasses
them as usual. A disarmed home finds it in its next summary instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from inference.labels import PRESENCE_GROUPS, group_of
from schedules.score import DOOR_LOCATIONS, normalise_location
from vigil.vocabulary import ARMED_MODES, FULLY_ARMED, DecisionKind, PresenceGroup, Reason

# DecisionKind and Reason belong to vigil.vocabulary; importing them from here still works.

GROUPS = tuple(PresenceGroup)  # person, vehicle, animal
MOTION = "motion"  # what a fail-safe alert names: motion was seen, not what moved

NOTIFYING = frozenset({DecisionKind.ALERT, DecisionKind.FAILSAFE})

# What a fail-safe alert tells the household, by the failure's code (prefix match).
_FAILURE_TEXT = (
    ("fetch_", "The camera's picture could not be fetched"),
    ("url_", "The camera's picture address was refused"),
    ("image_", "The camera's picture could not be read"),
    ("expired", "There was no time to analyse the picture"),
)
_FAILURE_DEFAULT = "The picture could not be analysed"


@dataclass(frozen=True)
class HomePolicy:
    """What a home chose (``PUT /homes/<id>/policy``); the defaults suit most homes."""

    cooldown_s: int = 300
    hourly_budget: int = 10
    alert_labels: frozenset[str] = frozenset({PresenceGroup.PERSON, PresenceGroup.VEHICLE})
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
    kind: DecisionKind
    reason: Reason
    labels: tuple[str, ...]  # presence groups seen at or above min_score, or ("motion",)
    life_safety: bool
    title: str
    body: str

    @property
    def notifies(self) -> bool:
        """Whether this decision pushes an alert now (an alert or a fail-safe alert)."""
        return self.kind in NOTIFYING


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
    return PresenceGroup.PERSON in groups and armed_here(arm_mode, location)


def _what(groups: Sequence[str]) -> str:
    named = list(groups) or ["motion"]
    return " and ".join(g.capitalize() if i == 0 else g for i, g in enumerate(named))


def _gates(
    labels: Sequence[str],
    location: str,
    life_safety: bool,
    policy: HomePolicy,
    history: AlertHistory,
    now: datetime,
) -> tuple[tuple[str, ...], Reason | None]:
    """The labels still fresh after the cooldown, and the gate that folds the alert, if any."""
    cooldown = timedelta(seconds=policy.cooldown_s)
    fresh = tuple(
        g
        for g in labels
        if (last := history.last_alerted.get((location, g))) is None or now - last >= cooldown
    )
    if not fresh:
        return fresh, Reason.COOLDOWN
    if not life_safety and in_quiet_hours(now, policy):
        return fresh, Reason.QUIET_HOURS
    if not life_safety and history.alerts_last_hour >= policy.hourly_budget:
        return fresh, Reason.BUDGET
    return fresh, None


def decide(
    detections: Iterable[tuple[str, float]],
    arm_mode: str,
    location: str,
    policy: HomePolicy,
    history: AlertHistory,
    now: datetime,
) -> Decision:
    """Alert, summary or suppressed for one analysed event; ``now`` is timezone-aware."""
    groups = seen_groups(detections, policy.min_score)
    life_safety = is_life_safety(groups, arm_mode, location)
    # A person while armed away is life safety whatever the home chose to hear about.
    alerting = tuple(
        g for g in groups if g in policy.alert_labels or (life_safety and g == PresenceGroup.PERSON)
    )
    place = place_name(location)
    local = now.astimezone(ZoneInfo(policy.timezone))

    def summary(reason: Reason) -> Decision:
        return held(groups, location, policy, now, reason)

    if not groups:
        if arm_mode not in ARMED_MODES:
            return Decision(DecisionKind.SUPPRESSED, Reason.BELOW_THRESHOLD, groups, False, "", "")
        return summary(Reason.BELOW_THRESHOLD)
    if arm_mode not in ARMED_MODES:
        return summary(Reason.NOT_ARMED)
    if not alerting or not (life_safety or arm_mode in FULLY_ARMED or at_a_door(location)):
        return summary(Reason.ROUTINE)
    fresh, gate = _gates(alerting, location, life_safety, policy, history, now)
    if gate is not None:
        return summary(gate)
    return Decision(
        DecisionKind.ALERT,
        Reason.LIFE_SAFETY if life_safety else Reason.ARMED,
        fresh,
        life_safety,
        f"{_what(fresh)} at the {place}",
        f"Seen at {local:%H:%M} while armed {arm_mode}.",
    )


def held(
    groups: tuple[str, ...], location: str, policy: HomePolicy, now: datetime, reason: Reason
) -> Decision:
    """What was seen, held for the next summary for ``reason``."""
    place = place_name(location)
    local = now.astimezone(ZoneInfo(policy.timezone))
    title = f"Activity at the {place}"
    body = f"{_what(groups)} seen at the {place} at {local:%H:%M}."
    return Decision(DecisionKind.SUMMARY, reason, groups, False, title, body)


def armed_here(arm_mode: str, location: str) -> bool:
    """Armed for this place: away or night anywhere, or a door while armed home."""
    return arm_mode in FULLY_ARMED or (arm_mode in ARMED_MODES and at_a_door(location))


def alerted_here_lately(
    history: AlertHistory, location: str, policy: HomePolicy, now: datetime
) -> bool:
    """Whether any alert at this place, whatever it named, is within the cooldown: it
    already sent the household there."""
    cooldown = timedelta(seconds=policy.cooldown_s)
    return any(
        now - at < cooldown for (where, _), at in history.last_alerted.items() if where == location
    )


def failure_text(code: str | None) -> str:
    """A sentence a household understands for an analysis failure's code."""
    for prefix, text in _FAILURE_TEXT:
        if code and code.startswith(prefix):
            return text
    return _FAILURE_DEFAULT


def decide_unanalysed(
    lite: Iterable[tuple[str, float]],
    arm_mode: str,
    location: str,
    policy: HomePolicy,
    history: AlertHistory,
    now: datetime,
    failure: str | None = None,
) -> Decision:
    """The fail-safe for an event that failed or expired before deep analysis.

    ``lite``: the quick check's (group, score) pairs, if any; ``failure``: the error code.
    """
    place = place_name(location)
    local = now.astimezone(ZoneInfo(policy.timezone))
    why = failure_text(failure)
    quick = decide(lite, arm_mode, location, policy, history, now)
    if quick.kind is DecisionKind.ALERT:
        what = " and ".join(quick.labels)
        return Decision(
            DecisionKind.FAILSAFE,
            quick.reason,
            quick.labels,
            quick.life_safety,
            title=f"Possible {what} at the {place}",
            body=f"Not verified: seen by the quick check only. {why}.",
        )

    def summary(reason: Reason) -> Decision:
        title = f"Activity at the {place}"
        body = f"Motion at the {place} at {local:%H:%M}; {why[0].lower()}{why[1:]}."
        return Decision(DecisionKind.SUMMARY, reason, (), False, title, body)

    if quick.reason in (Reason.COOLDOWN, Reason.QUIET_HOURS, Reason.BUDGET):
        return summary(quick.reason)  # the quick check alerted, the gates folded it
    if arm_mode not in ARMED_MODES:
        return summary(Reason.NOT_ARMED)
    if not armed_here(arm_mode, location):
        return summary(Reason.ROUTINE)
    if alerted_here_lately(history, location, policy, now):
        return summary(Reason.COOLDOWN)
    _, gate = _gates((MOTION,), location, False, policy, history, now)
    if gate is not None:
        return summary(gate)
    return Decision(
        DecisionKind.FAILSAFE,
        Reason.ARMED,
        (MOTION,),
        life_safety=False,
        title=f"Motion at the {place} — the picture could not be analysed",
        body=f"{why}. Seen at {local:%H:%M} while armed {arm_mode}.",
    )
