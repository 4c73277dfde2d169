"""Activity zones of a camera: polygons in normalised frame coordinates (0..1) that decide
where a detection may alert (``zones``).

Where an object stands is its box's bottom centre (``reference_point``): a person whose
head pokes into a zone from the pavement is not in it, one whose feet are is. A detection
counts for alerting when that point lies in an alert zone that applies to its presence
group (or the camera has no such zone: then its whole frame alerts), and in no ignore zone
that applies to it (``zone_verdicts``).

The geometry is plain Python: polygons have at most ``MAX_POINTS`` points, so the quadratic
self-intersection check is a few hundred segment tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, scalar_row
from psycopg.types.json import Jsonb

from vigil.vocabulary import PresenceGroup, ZoneKind

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in the frame's pixels

MIN_POINTS = 3
MAX_POINTS = 32
MAX_ZONES_PER_CAMERA = 16
# Coordinates are in [0, 1], so cross products are at most about 1 in size: below this they
# are float rounding of points that are meant to be collinear (or coincide), not geometry.
EPSILON = 1e-12
# A listing of every crossing of a scribbled polygon helps nobody: the first few do.
MAX_CROSSINGS_LISTED = 5


@dataclass(frozen=True)
class Zone:
    """One activity zone of a camera (``zones``); ``groups`` None: every presence group."""

    id: int
    device_id: int
    name: str
    kind: ZoneKind
    groups: frozenset[PresenceGroup] | None
    polygon: tuple[Point, ...]

    def applies_to(self, group: str) -> bool:
        return self.groups is None or group in self.groups


@dataclass(frozen=True)
class ZoneVerdict:
    """What a camera's zones say of one detection: the names of the zones its reference
    point lies in (in the zones' order), and whether it counts for alerting."""

    zones: tuple[str, ...]
    counts: bool


# -- geometry ------------------------------------------------------------------------------


def _cross(o: Point, a: Point, b: Point) -> float:
    """Twice the signed area of the triangle o, a, b: > 0 when b is left of o→a."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _side(o: Point, a: Point, b: Point) -> int:
    value = _cross(o, a, b)
    return 0 if abs(value) <= EPSILON else (1 if value > 0 else -1)


def _within(a: Point, b: Point, p: Point) -> bool:
    """``p``, collinear with segment a-b, lies on it (ends included)."""
    return (
        min(a[0], b[0]) - EPSILON <= p[0] <= max(a[0], b[0]) + EPSILON
        and min(a[1], b[1]) - EPSILON <= p[1] <= max(a[1], b[1]) + EPSILON
    )


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return _side(a, b, p) == 0 and _within(a, b, p)


def segments_meet(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether the closed segments a-b and c-d share any point: a crossing, one touching
    the other, or a collinear overlap."""
    d1, d2 = _side(c, d, a), _side(c, d, b)
    d3, d4 = _side(a, b, c), _side(a, b, d)
    if d1 * d2 < 0 and d3 * d4 < 0:
        return True
    return (
        (d1 == 0 and _within(c, d, a))
        or (d2 == 0 and _within(c, d, b))
        or (d3 == 0 and _within(a, b, c))
        or (d4 == 0 and _within(a, b, d))
    )


def signed_area(polygon: Sequence[Point]) -> float:
    """The shoelace formula: positive for points counter-clockwise (y up)."""
    n = len(polygon)
    twice = sum(
        polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1]
        for i in range(n)
    )
    return twice / 2


def _coordinate_problems(index: int, point: object) -> list[str]:
    if not isinstance(point, Sequence) or isinstance(point, str) or len(point) != 2:
        return [f"point {index} is not a pair [x, y]"]
    problems = []
    for axis, value in zip("xy", point, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"point {index}: {axis} is not a number")
        elif not math.isfinite(value):
            problems.append(f"point {index}: {axis} is not a finite number")
        elif not 0 <= value <= 1:
            problems.append(f"point {index}: {axis} = {value} is outside 0..1")
    return problems


def validate_polygon(points: Sequence[Sequence[float]]) -> list[str]:
    """What is wrong with ``points`` as a zone's polygon ([] when nothing is).

    A polygon has ``MIN_POINTS``..``MAX_POINTS`` points, each a pair of finite numbers in
    [0, 1] (normalised frame coordinates); it is simple (no point repeated, no two edges
    meeting except neighbours at their shared point, no edge folding back over its
    neighbour) and encloses a non-zero area. The edge from the last point back to the
    first closes it: the first point is not repeated at the end.
    """
    n = len(points)
    if n < MIN_POINTS:
        return [f"has {n} point(s); a zone needs at least {MIN_POINTS}"]
    if n > MAX_POINTS:
        return [f"has {n} points; a zone has at most {MAX_POINTS}"]
    problems = [p for i, point in enumerate(points) for p in _coordinate_problems(i, point)]
    if problems:
        return problems
    polygon = [(float(x), float(y)) for x, y in points]
    for j in range(n):
        for i in range(j):
            if polygon[i] == polygon[j]:
                problems.append(f"point {j} repeats point {i}")
    if problems:
        return problems  # every edge touching a repeated point would be reported again
    crossings = []
    for i in range(n):
        a, b = polygon[i], polygon[(i + 1) % n]
        c = polygon[(i + 2) % n]
        # Neighbours share b; they overlap only if the outline turns back on itself there.
        if n > 3 and _side(a, b, c) == 0 and _dot(a, b, c) < 0:
            crossings.append(f"edges {i} and {(i + 1) % n} fold back over each other")
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # the closing edge is the first edge's neighbour
            if segments_meet(a, b, polygon[j], polygon[(j + 1) % n]):
                crossings.append(f"edges {i} and {j} cross or touch")
    if len(crossings) > MAX_CROSSINGS_LISTED:
        more = len(crossings) - MAX_CROSSINGS_LISTED
        crossings = [*crossings[:MAX_CROSSINGS_LISTED], f"and {more} more crossing(s)"]
    if crossings:
        return crossings  # the shoelace area of an outline that crosses itself means nothing
    if abs(signed_area(polygon)) <= EPSILON:
        return ["encloses no area (its points are collinear)"]
    return []


def _dot(a: Point, b: Point, c: Point) -> float:
    """Dot product of a→b and b→c: negative when the path turns back at b."""
    return (b[0] - a[0]) * (c[0] - b[0]) + (b[1] - a[1]) * (c[1] - b[1])


def contains(polygon: Sequence[Point], point: Point) -> bool:
    """Whether ``point`` lies in ``polygon`` by the even-odd rule (a ray from the point
    crosses its outline an odd number of times).

    A point on an edge or a vertex counts as inside: a zone drawn along a path's edge
    takes the objects standing on that edge, and adjacent zones sharing an edge leave no
    gap between them.
    """
    n = len(polygon)
    for i in range(n):
        if _on_segment(polygon[i], polygon[(i + 1) % n], point):
            return True
    x, y = point
    inside = False
    for i in range(n):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
        # Half-open in y: a ray through a vertex counts the two edges meeting there once.
        if (y1 > y) != (y2 > y):
            crossing_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < crossing_x:
                inside = not inside
    return inside


def reference_point(box: Sequence[float], frame_size: tuple[int, int]) -> Point:
    """Where a detected object stands, in normalised frame coordinates: the bottom centre
    of its ``box`` (x1, y1, x2, y2 in pixels of a ``frame_size`` (width, height) frame),
    clamped into the frame."""
    width, height = frame_size
    x = (box[0] + box[2]) / 2 / width
    y = box[3] / height
    return min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)


# -- verdicts ------------------------------------------------------------------------------


def zone_verdicts(
    zones: Sequence[Zone],
    frame_size: tuple[int, int],
    detections: Sequence[tuple[str | None, Sequence[float]]],
) -> list[ZoneVerdict]:
    """For each (presence group or None, box) detection, the zones it stands in and
    whether it counts for alerting.

    It counts if it stands in an alert zone that applies to its group (or the camera has
    no alert zone for that group, so the whole frame alerts) and in no ignore zone that
    applies to its group. A detection of no presence group never counts: nothing alerts on
    it.
    """
    verdicts = []
    for group, box in detections:
        point = reference_point(box, frame_size)
        inside = [zone for zone in zones if contains(zone.polygon, point)]
        counts = False
        if group is not None:
            alerting = [z for z in zones if z.kind == ZoneKind.ALERT and z.applies_to(group)]
            allowed = not alerting or any(zone in inside for zone in alerting)
            ignored = any(z.kind == ZoneKind.IGNORE and z.applies_to(group) for z in inside)
            counts = allowed and not ignored
        verdicts.append(ZoneVerdict(tuple(zone.name for zone in inside), counts))
    return verdicts


# -- storage -------------------------------------------------------------------------------


def zone_from_row(row: dict[str, Any]) -> Zone:
    """A ``zones`` row (as a dict) as a ``Zone``."""
    groups = row["groups"]
    return Zone(
        id=row["id"],
        device_id=row["device_id"],
        name=row["name"],
        kind=ZoneKind(row["kind"]),
        groups=None if groups is None else frozenset(PresenceGroup(g) for g in groups),
        polygon=tuple((float(x), float(y)) for x, y in row["polygon"]),
    )


def camera_zones(conn: psycopg.Connection[Any], device_id: int) -> list[Zone]:
    """The zones of a camera, oldest first."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT id, device_id, name, kind, groups, polygon FROM zones"
            " WHERE device_id = %s ORDER BY id",
            (device_id,),
        )
        .fetchall()
    )
    return [zone_from_row(row) for row in rows]


class TooManyZones(Exception):
    """The camera has its ``MAX_ZONES_PER_CAMERA`` zones already."""


def insert_zone(
    conn: psycopg.Connection[Any],
    device_id: int,
    home_id: int,
    name: str,
    kind: ZoneKind,
    polygon: Sequence[Point],
    groups: Sequence[PresenceGroup] | None = None,
) -> int:
    """Store a zone whose polygon was already validated; its id. ``TooManyZones`` when the
    camera has its ``MAX_ZONES_PER_CAMERA`` already, whichever way it is asked (the API, a
    push action): the camera's row is locked, so two at once take turns for the last place."""
    (existing,) = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "WITH camera AS (SELECT 1 FROM devices WHERE id = %(device)s FOR NO KEY UPDATE)"
            " SELECT count(*) FROM zones, camera WHERE device_id = %(device)s",
            {"device": device_id},
        )
        .fetchall()
    )
    if existing >= MAX_ZONES_PER_CAMERA:
        raise TooManyZones(f"camera {device_id} has {existing} zones")
    (zone_id,) = (
        conn.cursor(row_factory=scalar_row)
        .execute(
            "INSERT INTO zones (device_id, home_id, name, kind, groups, polygon)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (
                device_id,
                home_id,
                name,
                kind,
                None if groups is None else list(groups),
                Jsonb([[x, y] for x, y in polygon]),
            ),
        )
        .fetchall()
    )
    return int(zone_id)


# Each detection's zones and whether it counts, and the event's zones, in one statement.
# A detection's names travel as a JSON array: unnest would flatten a text[][] into one list.
_RECORD = """
WITH given AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(zones)s::jsonb[], %(counts)s::boolean[])
        AS g(id, zones, counts)
), marked AS (
    UPDATE detections AS d
    SET zones = ARRAY(SELECT jsonb_array_elements_text(g.zones)), counts = g.counts
    FROM given AS g
    WHERE d.id = g.id AND d.event_id = %(event_id)s
)
UPDATE events SET zones = %(event_zones)s::text[] WHERE id = %(event_id)s
"""


def record_verdicts(
    conn: psycopg.Connection[Any],
    event_id: int,
    detection_ids: Sequence[int],
    verdicts: Sequence[ZoneVerdict],
) -> None:
    """Write each detection's verdict (``detections.zones``, ``counts``) and the zones
    its detections stood in on the event (``events.zones``, first seen first), in one
    statement. ``detection_ids`` and ``verdicts`` pair up in order; ids of another event's
    detections are left alone."""
    if len(detection_ids) != len(verdicts):
        raise ValueError(f"{len(detection_ids)} detection ids for {len(verdicts)} verdicts")
    conn.execute(
        _RECORD,
        {
            "ids": list(detection_ids),
            "zones": [Jsonb(list(v.zones)) for v in verdicts],
            "counts": [v.counts for v in verdicts],
            "event_id": event_id,
            "event_zones": _names(v.zones for v in verdicts),
        },
    )


def _names(per_detection: Iterable[Sequence[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in per_detection for name in names))
