"""Which of an analysed event's detections may alert: the camera's activity zones first, then
the memory of objects that stay put.

The digest decides an event three times over the same policy: on everything seen, on what
stood where the camera's zones allow, and on what of that is new. The first decision that
stops alerting names why (``notify.digest``): nothing worth it (as before), ``zone`` or
``stationary``. What was seen is never dropped: each detection records its zones, whether
it counted, and whether it stayed put, and the event still appears in its summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from inference.labels import group_of
from notify.stationary import Candidate, StationaryMemory, normalised_box, record_stationary
from notify.zones import camera_zones, record_verdicts, zone_verdicts
from vigil.vocabulary import PresenceGroup

Seen = list[tuple[str, float]]  # (label, score), as notify.policy.decide takes them


@dataclass(frozen=True)
class DetectionRow:
    id: int
    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


@dataclass(frozen=True)
class Sifted:
    """An event's detections, and those that may alert at each stage."""

    seen: Seen  # everything the detector reported
    in_zones: Seen  # of those, what stood where the camera's zones let it alert
    moving: Seen  # of those, what was not an object that stayed put


def sift(
    conn: psycopg.Connection[Any],
    event_id: int,
    device_id: int | None,
    frame: tuple[int, int] | None,
    seen_at: datetime,
    min_score: float,
    memory: StationaryMemory | None,
) -> Sifted:
    """Read the event's detections, decide which count (zones) and which stayed put
    (``memory``, as of ``seen_at``: when the event was analysed, so a memory rebuilt from
    the rows gives the same answers), and record both on the detection rows.

    Without a camera (removed since) or a frame size, zones cannot be placed: everything
    counts. Without ``memory`` nothing is stationary. Only detections at or above the
    home's ``min_score`` enter the memory: what the policy ignores is not remembered either.
    """
    rows = (
        conn.cursor(row_factory=class_row(DetectionRow))
        .execute(
            "SELECT id, label, score, x1, y1, x2, y2 FROM detections WHERE event_id = %s"
            " ORDER BY id",
            (event_id,),
        )
        .fetchall()
    )
    seen = [(row.label, row.score) for row in rows]
    counted = list(rows)
    if device_id is not None and frame is not None and rows:
        verdicts = zone_verdicts(
            camera_zones(conn, device_id), frame, [(group_of(r.label), r.box) for r in rows]
        )
        record_verdicts(conn, event_id, [r.id for r in rows], verdicts)
        counted = [row for row, verdict in zip(rows, verdicts, strict=True) if verdict.counts]
    stationary: frozenset[int] = frozenset()
    if memory is not None and device_id is not None and frame is not None:
        candidates = [
            Candidate(row.id, PresenceGroup(group), normalised_box(*row.box, *frame))
            for row in counted
            if (group := group_of(row.label)) is not None and row.score >= min_score
        ]
        if candidates:
            stationary = memory.sift(conn, device_id, event_id, seen_at, candidates)
            record_stationary(conn, event_id, [c.detection_id for c in candidates], stationary)
    return Sifted(
        seen=seen,
        in_zones=[(row.label, row.score) for row in counted],
        moving=[(row.label, row.score) for row in counted if row.id not in stationary],
    )
