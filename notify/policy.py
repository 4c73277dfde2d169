"""Alert now or fold into a summary: the first, deliberately simple policy.

An event is an alert when what the detector saw matters for how the home is armed:
a person while the home is armed away or at night, or a person or vehicle at a door while
armed at all. Everything else is folded into the home's next summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from inference.labels import PRESENCE_GROUPS, group_of

ALERT_SCORE = 0.45
DOOR_LOCATIONS = frozenset({"front_door", "back_door", "side_door", "garage_door", "door"})
ARMED = frozenset({"home", "away", "night"})


@dataclass(frozen=True)
class Decision:
    kind: str  # "alert" or "summary"
    title: str
    body: str


def _place(location: str) -> str:
    return location.replace("_", " ").strip() or "home"


def decide(labels: Sequence[tuple[str, float]], arm_mode: str, location: str) -> Decision:
    """Alert or summary for one analysed event from its (label, score) detections."""
    groups = {group_of(label) for label, score in labels if score >= ALERT_SCORE}
    groups.discard(None)
    place = _place(location)
    alert = ("person" in groups and arm_mode in ("away", "night")) or (
        arm_mode in ARMED and location in DOOR_LOCATIONS and groups & {"person", "vehicle"}
    )
    seen = [g for g in PRESENCE_GROUPS if g in groups] or ["motion"]
    what = " and ".join(g.capitalize() if i == 0 else g for i, g in enumerate(seen))
    if alert:
        return Decision("alert", f"{what} at the {place}", f"Seen while armed {arm_mode}.")
    return Decision("summary", f"Activity at the {place}", f"{what} seen at the {place}.")
