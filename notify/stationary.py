"""Memory of objects that stay put: a parked car, the bins, a garden statue alert once, not
on every motion event of their camera.

Per camera, Redis remembers the objects recently seen (``Entry``): the presence group,
the box normalised to the frame (0..1), when the object was first and last seen. A
detection of a new event is **stationary** when a remembered object of the same group
overlaps it by at least ``STATIONARY_IOU`` (intersection over union, ``iou``) and was last
seen within ``STATIONARY_WINDOW_S`` of the event. Then every detection updates the memory:
the remembered object it matches takes its box and is seen now; one that matches nothing
is remembered as a new object. So a parked car is new on its first sighting and
stationary from its second on, for as long as it is seen again within the window; once it
moves (the overlap drops below the threshold) it is new again, and its new place is
remembered.

One key per camera (``KEY``) holds the camera's memory as one small JSON value (at most
``MAX_ENTRIES`` objects: the longest unseen go first), with the window as its time to
live, renewed by each event. Callers sift one camera's events one at a time (the digest
holds the home's row lock), so reading, sifting and writing the value needs no lock.

**Lost memory.** Redis may lose a key (a restart, a flush, the time to live after a quiet
window). A camera without its key has its memory rebuilt from PostgreSQL before sifting:
of its events decided and analysed within the window (other than the event being sifted),
with a frame size, the detections the digest sifted (``detections.stationary`` written by
``record_stationary``; for detections decided before zones and this memory existed,
``counts`` and ``stationary`` both NULL, every one with a presence group), replayed oldest
first through the same rule. Replaying what was sifted, rather than every detection that
counts, keeps the rebuild equal to the memory whatever the digest chose to sift (a score
threshold, say). So the answer after a loss is the answer without one, provided the digest
passes as ``now`` the event's ``analyzed_at`` and boxes from ``normalised_box`` (a live
sift at another time differs only at the window's edge).
The rebuilt memory is written even when it is empty, so a camera that saw nothing is not
rebuilt on every event. With Redis away, the answer comes from the rebuild alone.

**Retries.** A sift of an event sifted before (its digest's transaction rolled back after
Redis was written) first undoes that event's own sighting, so an object is never
stationary by virtue of the very event it is in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import psycopg
import redis
from psycopg.rows import class_row

from inference.labels import group_of
from vigil.settings import Settings
from vigil.vocabulary import PresenceGroup

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2, normalised to the frame (0..1)

# ``stationary:{<device_id>}``: the braces keep a camera's key in one Cluster slot.
KEY = "stationary:{{{device_id}}}"
MAX_ENTRIES = 64
# The newest sifted detections a rebuild replays. A memory holds at most MAX_ENTRIES
# objects, the most recently seen, so older rows rarely change it; when they would, the
# rebuilt memory lacks an object, and its next sighting alerts rather than hides.
REBUILD_MAX_ROWS = 4096
# What is stored: boxes to a hundred-thousandth of the frame, times to the millisecond.
BOX_DECIMALS = 5
TIME_DECIMALS = 3
FORMAT = 1  # the stored value's layout; another is rebuilt rather than misread


@dataclass(frozen=True)
class Candidate:
    """One detection of the event being sifted: its id, presence group and box."""

    detection_id: int
    group: PresenceGroup
    box: Box


@dataclass(frozen=True)
class Entry:
    """One remembered object of a camera. Times are Unix seconds. ``event_id`` saw it
    last; ``prior_seen`` and ``prior_box`` are what was remembered before that event saw
    it (None: that event saw it first), which undoes a retried event's sighting."""

    group: PresenceGroup
    box: Box
    first_seen: float
    last_seen: float
    event_id: int
    prior_seen: float | None = None
    prior_box: Box | None = None

    def packed(self) -> list[Any]:
        return [
            str(self.group),
            list(self.box),
            self.first_seen,
            self.last_seen,
            self.event_id,
            self.prior_seen,
            None if self.prior_box is None else list(self.prior_box),
        ]

    @classmethod
    def unpacked(cls, item: Sequence[Any]) -> Entry:
        group, box, first_seen, last_seen, event_id, prior_seen, prior_box = item
        return cls(
            PresenceGroup(group),
            _box(box),
            float(first_seen),
            float(last_seen),
            int(event_id),
            None if prior_seen is None else float(prior_seen),
            None if prior_box is None else _box(prior_box),
        )


def _box(values: Sequence[Any]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2)


def _rounded_box(box: Box) -> Box:
    x1, y1, x2, y2 = (round(v, BOX_DECIMALS) for v in box)
    return (x1, y1, x2, y2)


def _clamped(value: float) -> float:
    return min(1.0, max(0.0, value))


def normalised_box(
    x1: float, y1: float, x2: float, y2: float, frame_width: int, frame_height: int
) -> Box:
    """A detection's box (the frame's pixels) normalised to the frame, clamped to it."""
    return (
        _clamped(x1 / frame_width),
        _clamped(y1 / frame_height),
        _clamped(x2 / frame_width),
        _clamped(y2 / frame_height),
    )


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes: 1 for the same box, 0 for boxes apart (or
    without area)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Sifted:
    """What one event's sift found: its stationary detections, and the memory after it."""

    stationary: frozenset[int]
    entries: tuple[Entry, ...]


def _undone(entry: Entry, event_id: int) -> Entry | None:
    """The entry as it was before ``event_id`` saw it (None: that event first saw it)."""
    if entry.event_id != event_id:
        return entry
    if entry.prior_seen is None or entry.prior_box is None:
        return None
    return Entry(entry.group, entry.prior_box, entry.first_seen, entry.prior_seen, 0)


def sift_entries(
    entries: Iterable[Entry],
    event_id: int,
    now: float,
    candidates: Sequence[Candidate],
    min_iou: float,
    window_s: float,
) -> Sifted:
    """The rule, on a camera's memory (``entries``) and one event's candidates seen at
    ``now`` (Unix seconds).

    A candidate is stationary when some remembered object of its group, last seen within
    ``window_s``, overlaps it by ``min_iou`` or more. Each remembered object then takes
    at most one candidate, best overlaps first, so two cars parked side by side stay two
    objects; a candidate left without one is remembered as new. Objects last seen longer
    ago than the window are forgotten, and only the ``MAX_ENTRIES`` seen last are kept.
    """
    remembered = [
        entry
        for entry in (_undone(e, event_id) for e in entries)
        if entry is not None and now - entry.last_seen <= window_s
    ]
    matches = [
        (overlap, c, e)
        for c, candidate in enumerate(candidates)
        for e, entry in enumerate(remembered)
        if entry.group == candidate.group and (overlap := iou(candidate.box, entry.box)) >= min_iou
    ]
    stationary = frozenset(candidates[c].detection_id for _, c, _ in matches)
    seen_now = round(now, TIME_DECIMALS)
    after = list(remembered)
    taken_candidates: set[int] = set()
    taken_entries: set[int] = set()
    for _, c, e in sorted(matches, key=lambda match: (-match[0], match[1], match[2])):
        if c in taken_candidates or e in taken_entries:
            continue
        taken_candidates.add(c)
        taken_entries.add(e)
        old = remembered[e]
        after[e] = Entry(
            old.group,
            _rounded_box(candidates[c].box),
            old.first_seen,
            max(old.last_seen, seen_now),
            event_id,
            old.last_seen,
            old.box,
        )
    after.extend(
        Entry(
            PresenceGroup(candidate.group),
            _rounded_box(candidate.box),
            seen_now,
            seen_now,
            event_id,
        )
        for c, candidate in enumerate(candidates)
        if c not in taken_candidates
    )
    # A stable sort: of objects last seen at once, the ones remembered later are kept.
    kept = sorted(after, key=lambda entry: entry.last_seen)[-MAX_ENTRIES:]
    return Sifted(stationary, tuple(kept))


@dataclass(frozen=True)
class _SiftedRow:
    """One detection a rebuild replays, with its event's analysis time and frame size."""

    event_id: int
    analyzed_at: datetime
    frame_width: int
    frame_height: int
    detection_id: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float


# The newest detections of the camera's decided events analysed since %(since)s (but
# %(event_id)s) that the digest sifted, or that were decided before the memory existed;
# oldest first once read.
_REBUILD = """
SELECT * FROM (
    SELECT e.id AS event_id, e.analyzed_at, e.frame_width, e.frame_height,
           d.id AS detection_id, d.label, d.x1, d.y1, d.x2, d.y2
    FROM events e
    JOIN detections d ON d.event_id = e.id
    WHERE e.device_id = %(device_id)s AND e.id <> %(event_id)s
      AND e.analyzed_at >= %(since)s AND e.digest IS NOT NULL
      AND e.frame_width IS NOT NULL AND e.frame_height IS NOT NULL
      AND (d.stationary IS NOT NULL OR d.counts IS NULL)
    ORDER BY e.analyzed_at DESC, e.id DESC, d.id DESC
    LIMIT %(limit)s
) newest
ORDER BY analyzed_at, event_id, detection_id
"""


def rebuild_entries(
    conn: psycopg.Connection[Any],
    device_id: int,
    event_id: int,
    now: datetime,
    min_iou: float,
    window_s: float,
) -> tuple[Entry, ...]:
    """The camera's memory as its rows in PostgreSQL tell it, before ``event_id``."""
    rows = (
        conn.cursor(row_factory=class_row(_SiftedRow))
        .execute(
            _REBUILD,
            {
                "device_id": device_id,
                "event_id": event_id,
                "since": now - timedelta(seconds=window_s),
                "limit": REBUILD_MAX_ROWS,
            },
        )
        .fetchall()
    )
    entries: tuple[Entry, ...] = ()
    for (past_event, analyzed_at), event_rows in groupby(
        rows, key=lambda row: (row.event_id, row.analyzed_at)
    ):
        candidates = [
            Candidate(
                row.detection_id,
                PresenceGroup(group),
                normalised_box(row.x1, row.y1, row.x2, row.y2, row.frame_width, row.frame_height),
            )
            for row in event_rows
            if (group := group_of(row.label)) is not None
        ]
        seen = analyzed_at.timestamp()
        entries = sift_entries(entries, past_event, seen, candidates, min_iou, window_s).entries
    return entries


def _key(device_id: int) -> str:
    return KEY.format(device_id=device_id)


def _decoded(raw: str | bytes) -> tuple[Entry, ...] | None:
    """The stored memory, or None for a value this version cannot read."""
    try:
        value = json.loads(raw)
        if value.get("v") != FORMAT:
            return None
        return tuple(Entry.unpacked(item) for item in value["entries"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _encoded(entries: Iterable[Entry]) -> str:
    value = {"v": FORMAT, "entries": [entry.packed() for entry in entries]}
    return json.dumps(value, separators=(",", ":"))


class StationaryMemory:
    """Each camera's remembered objects, in Redis (``KEY``), rebuilt from PostgreSQL when
    lost."""

    def __init__(self, redis_client: redis.Redis, iou: float, window_s: float) -> None:
        self.redis = redis_client
        self.iou = iou
        self.window_s = window_s

    @classmethod
    def from_settings(cls, redis_client: redis.Redis, settings: Settings) -> StationaryMemory:
        return cls(redis_client, settings.stationary_iou, settings.stationary_window_s)

    def _stored(self, device_id: int) -> tuple[Entry, ...] | None:
        try:
            raw = self.redis.get(_key(device_id))
        except redis.RedisError as exc:
            log.warning("stationary memory of camera %s unread, rebuilt: %s", device_id, exc)
            return None
        if not isinstance(raw, str | bytes):  # None: no key (or it expired)
            return None
        return _decoded(raw)

    def _store(self, device_id: int, entries: Iterable[Entry]) -> None:
        try:
            self.redis.set(_key(device_id), _encoded(entries), ex=max(1, round(self.window_s)))
        except redis.RedisError as exc:
            log.warning("stationary memory of camera %s not stored: %s", device_id, exc)

    def sift(
        self,
        conn: psycopg.Connection[Any],
        device_id: int,
        event_id: int,
        now: datetime,
        detections: Sequence[Candidate],
    ) -> frozenset[int]:
        """The ids of ``detections`` (event ``event_id`` of camera ``device_id``, seen at
        ``now``, timezone-aware) that are stationary; the camera's memory then holds them.
        ``conn`` reads the camera's rows when its memory is lost."""
        entries = self._stored(device_id)
        if entries is None:
            entries = rebuild_entries(conn, device_id, event_id, now, self.iou, self.window_s)
        sifted = sift_entries(
            entries, event_id, now.timestamp(), detections, self.iou, self.window_s
        )
        self._store(device_id, sifted.entries)
        return sifted.stationary


def record_stationary(
    conn: psycopg.Connection[Any],
    event_id: int,
    detection_ids: Sequence[int],
    stationary_ids: Iterable[int],
) -> None:
    """Write ``detections.stationary`` for the event's sifted detections (``detection_ids``):
    true for those in ``stationary_ids``, false for the others. A rebuild replays exactly
    the detections written here."""
    conn.execute(
        "UPDATE detections SET stationary = (id = ANY(%(stationary)s))"
        " WHERE event_id = %(event_id)s AND id = ANY(%(ids)s)",
        {"event_id": event_id, "ids": list(detection_ids), "stationary": list(stationary_ids)},
    )
