"""Activity zones' geometry and verdicts: which polygons are zones, which points lie in them,
where an object stands, which detections count for alerting, and how that is stored."""

from __future__ import annotations

import math

import pytest

from notify.zones import (
    MAX_POINTS,
    Zone,
    ZoneVerdict,
    camera_zones,
    contains,
    insert_zone,
    record_verdicts,
    reference_point,
    validate_polygon,
    zone_verdicts,
)
from tests.factories import analysed_event, make_home
from vigil.vocabulary import PresenceGroup, ZoneKind

pytestmark = pytest.mark.unit

SQUARE = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]
# A U opening upwards: two arms 0.1..0.3 and 0.7..0.9 wide, joined below y = 0.6.
U_SHAPE = [
    (0.1, 0.1),
    (0.3, 0.1),
    (0.3, 0.6),
    (0.7, 0.6),
    (0.7, 0.1),
    (0.9, 0.1),
    (0.9, 0.9),
    (0.1, 0.9),
]


# -- contains ------------------------------------------------------------------------------


@pytest.mark.parametrize("point", [(0.5, 0.5), (0.21, 0.79), (0.79, 0.21)])
def test_a_point_inside_the_square_is_in_it(point):
    assert contains(SQUARE, point)


@pytest.mark.parametrize("point", [(0.1, 0.5), (0.9, 0.5), (0.5, 0.1), (0.5, 0.95), (0, 0)])
def test_a_point_outside_the_square_is_not_in_it(point):
    assert not contains(SQUARE, point)


@pytest.mark.parametrize("point", [(0.5, 0.2), (0.8, 0.5), (0.5, 0.8), (0.2, 0.3)])
def test_a_point_on_an_edge_counts_as_inside(point):
    assert contains(SQUARE, point)


@pytest.mark.parametrize("point", SQUARE)
def test_a_vertex_counts_as_inside(point):
    assert contains(SQUARE, point)


def test_a_point_in_the_notch_of_a_concave_polygon_is_outside():
    assert not contains(U_SHAPE, (0.5, 0.3))  # between the arms
    assert not contains(U_SHAPE, (0.5, 0.59))  # just above the notch's floor
    assert contains(U_SHAPE, (0.5, 0.6))  # on the notch's floor: an edge
    assert contains(U_SHAPE, (0.5, 0.7))  # the U's base
    assert contains(U_SHAPE, (0.2, 0.3)) and contains(U_SHAPE, (0.8, 0.3))  # the arms
    # a ray from here passes through the notch's corners: still counted once each
    assert contains(U_SHAPE, (0.2, 0.6)) and not contains(U_SHAPE, (0.05, 0.6))


def test_a_triangle_along_its_slanted_edge():
    triangle = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    assert contains(triangle, (0.5, 0.5))  # on the hypotenuse
    assert contains(triangle, (0.25, 0.25))
    assert not contains(triangle, (0.51, 0.51))


# -- validate_polygon ----------------------------------------------------------------------


def test_simple_polygons_are_zones():
    assert validate_polygon(SQUARE) == []
    assert validate_polygon(U_SHAPE) == []
    assert validate_polygon([(0, 0), (1, 0), (1, 1)]) == []  # the frame's edges are fine
    # a point in the middle of a straight edge is redundant, not wrong
    assert validate_polygon([(0, 0), (0.5, 0), (1, 0), (1, 1), (0, 1)]) == []
    assert validate_polygon([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]) == []  # JSON's lists


def test_a_bowtie_crosses_itself():
    bowtie = [(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)]
    assert validate_polygon(bowtie) == ["edges 0 and 2 cross or touch"]


def test_a_polygon_touching_itself_is_refused():
    # point 3 lies on edge 0: the edges either side of it touch edge 0 there
    touching = [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.5, 0.1), (0.1, 0.9)]
    assert validate_polygon(touching) == [
        "edges 0 and 2 cross or touch",
        "edges 0 and 3 cross or touch",
    ]
    # an hourglass whose waist is two points: pinched to one, it is two polygons
    waist = [(0.1, 0.1), (0.5, 0.5), (0.9, 0.1), (0.9, 0.9), (0.5, 0.5001), (0.1, 0.9)]
    assert validate_polygon(waist) == []
    pinched = [(0.1, 0.1), (0.5, 0.5), (0.9, 0.1), (0.9, 0.9), (0.5, 0.5), (0.1, 0.9)]
    assert validate_polygon(pinched) == ["point 4 repeats point 1"]


def test_collinear_overlapping_edges_are_refused():
    # edge 0 runs along the bottom, edge 2 runs back over part of it
    overlap = [(0.1, 0.1), (0.9, 0.1), (0.9, 0.5), (0.5, 0.5), (0.5, 0.1), (0.3, 0.1), (0.3, 0.9)]
    problems = validate_polygon(overlap)
    assert any("cross or touch" in p for p in problems), problems
    spike = [(0.1, 0.1), (0.9, 0.1), (0.5, 0.1), (0.5, 0.9)]  # edge 1 folds back on edge 0
    assert "edges 0 and 1 fold back over each other" in validate_polygon(spike)


def test_a_repeated_point_is_refused():
    assert validate_polygon([(0.1, 0.1), (0.9, 0.1), (0.9, 0.1), (0.5, 0.9)]) == [
        "point 2 repeats point 1"
    ]
    closed = [*SQUARE, SQUARE[0]]  # the first point again at the end
    assert validate_polygon(closed) == ["point 4 repeats point 0"]


@pytest.mark.parametrize(
    "points",
    [
        [(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)],
        [(0.1, 0.3), (0.7, 0.3), (0.4, 0.3)],
        [(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)],  # collinear up to float rounding
    ],
)
def test_collinear_points_enclose_no_area(points):
    assert validate_polygon(points) == ["encloses no area (its points are collinear)"]


def test_more_collinear_points_run_back_over_their_own_edges():
    problems = validate_polygon([(0.1, 0.3), (0.2, 0.3), (0.4, 0.3), (0.7, 0.3)])
    assert "edges 2 and 3 fold back over each other" in problems
    assert "edges 1 and 3 cross or touch" in problems


def circle_point(k: int, n: int) -> tuple[float, float]:
    angle = 2 * math.pi * k / n
    return 0.5 + 0.4 * math.cos(angle), 0.5 + 0.4 * math.sin(angle)


def test_too_few_or_too_many_points_are_refused():
    assert validate_polygon([]) == ["has 0 point(s); a zone needs at least 3"]
    assert validate_polygon([(0.1, 0.1), (0.9, 0.9)]) == ["has 2 point(s); a zone needs at least 3"]
    circle = [circle_point(k, MAX_POINTS) for k in range(MAX_POINTS)]
    assert validate_polygon(circle) == []
    more = [circle_point(k, MAX_POINTS + 1) for k in range(MAX_POINTS + 1)]
    assert validate_polygon(more) == ["has 33 points; a zone has at most 32"]
    assert validate_polygon([(0.5, 0.5)] * 100_000) == ["has 100000 points; a zone has at most 32"]


@pytest.mark.parametrize(
    ("point", "problem"),
    [
        ((1.5, 0.5), "point 1: x = 1.5 is outside 0..1"),
        ((0.5, -0.01), "point 1: y = -0.01 is outside 0..1"),
        ((math.nan, 0.5), "point 1: x is not a finite number"),
        ((0.5, math.inf), "point 1: y is not a finite number"),
        ((True, 0.5), "point 1: x is not a number"),
        (("0.5", 0.5), "point 1: x is not a number"),
        ((0.5,), "point 1 is not a pair [x, y]"),
        ((0.5, 0.5, 0.5), "point 1 is not a pair [x, y]"),
    ],
)
def test_coordinates_must_be_finite_numbers_in_the_frame(point, problem):
    assert validate_polygon([(0.1, 0.1), point, (0.1, 0.9)]) == [problem]


def test_every_problem_is_listed():
    problems = validate_polygon([(2, 0.1), (0.5, math.nan), (0.1, -1)])
    assert problems == [
        "point 0: x = 2 is outside 0..1",
        "point 1: y is not a finite number",
        "point 2: y = -1 is outside 0..1",
    ]


def test_a_scribble_lists_its_first_crossings():
    zigzag = [(0.05 + 0.9 * (k % 2), 0.05 + 0.03 * k) for k in range(30)]
    problems = validate_polygon(zigzag)
    assert len(problems) == 6 and problems[-1].startswith("and ")


# -- reference_point -----------------------------------------------------------------------


def test_the_reference_point_is_the_boxs_bottom_centre_normalised():
    # (100 + 300) / 2 = 200 of 640; 400 of 480
    assert reference_point((100, 50, 300, 400), (640, 480)) == pytest.approx((0.3125, 5 / 6))
    assert reference_point((0.0, 0.0, 1920.0, 1080.0), (1920, 1080)) == (0.5, 1.0)
    assert reference_point((10, 20, 30, 40), (100, 50)) == pytest.approx((0.2, 0.8))


def test_a_box_past_the_frame_is_clamped_into_it():
    assert reference_point((600, 400, 700, 500), (640, 480)) == (1.0, 1.0)
    assert reference_point((-50, -30, -10, -5), (640, 480)) == (0.0, 0.0)


# -- zone_verdicts -------------------------------------------------------------------------

FRAME = (1000, 1000)
LEFT = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
RIGHT = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]
CORNER = [(0.0, 0.5), (0.25, 0.5), (0.25, 1.0), (0.0, 1.0)]


def zone(name, kind, polygon, groups=None, zone_id=1) -> Zone:
    return Zone(
        id=zone_id,
        device_id=1,
        name=name,
        kind=kind,
        groups=None if groups is None else frozenset(PresenceGroup(g) for g in groups),
        polygon=tuple(polygon),
    )


def standing_at(x: float, y: float) -> tuple[float, float, float, float]:
    """A box whose bottom centre is (x, y) in the 1000 px frame."""
    return (x * 1000 - 20, y * 1000 - 100, x * 1000 + 20, y * 1000)


def test_without_zones_the_whole_frame_alerts():
    verdicts = zone_verdicts(
        [], FRAME, [("person", standing_at(0.1, 0.1)), ("vehicle", (0, 0, 1, 1))]
    )
    assert verdicts == [ZoneVerdict((), True), ZoneVerdict((), True)]


def test_only_detections_in_an_alert_zone_count():
    zones = [zone("drive", ZoneKind.ALERT, LEFT)]
    verdicts = zone_verdicts(
        zones, FRAME, [("person", standing_at(0.2, 0.5)), ("person", standing_at(0.8, 0.5))]
    )
    assert verdicts == [ZoneVerdict(("drive",), True), ZoneVerdict((), False)]


def test_the_feet_decide_not_the_head():
    zones = [zone("drive", ZoneKind.ALERT, [(0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5)])]
    head_in = (400, 300, 600, 700)  # top in the zone, bottom centre at y = 0.7 below it
    assert zone_verdicts(zones, FRAME, [("person", head_in)]) == [ZoneVerdict((), False)]


def test_ignore_beats_alert():
    zones = [zone("drive", ZoneKind.ALERT, LEFT), zone("bins", ZoneKind.IGNORE, CORNER)]
    verdicts = zone_verdicts(
        zones, FRAME, [("person", standing_at(0.1, 0.9)), ("person", standing_at(0.4, 0.3))]
    )
    assert verdicts == [ZoneVerdict(("drive", "bins"), False), ZoneVerdict(("drive",), True)]


def test_an_ignore_zone_alone_leaves_the_rest_of_the_frame_alerting():
    zones = [zone("tree", ZoneKind.IGNORE, RIGHT)]
    verdicts = zone_verdicts(
        zones, FRAME, [("animal", standing_at(0.8, 0.5)), ("animal", standing_at(0.2, 0.5))]
    )
    assert verdicts == [ZoneVerdict(("tree",), False), ZoneVerdict((), True)]


def test_zones_apply_only_to_their_groups():
    zones = [
        zone("street", ZoneKind.ALERT, RIGHT, groups=["vehicle"]),
        zone("lawn", ZoneKind.IGNORE, LEFT, groups=["animal"]),
    ]
    detections = [
        ("vehicle", standing_at(0.8, 0.5)),  # in its alert zone
        ("vehicle", standing_at(0.2, 0.5)),  # outside the only alert zone for vehicles
        ("person", standing_at(0.2, 0.5)),  # no alert zone for people: whole frame; lawn
        ("animal", standing_at(0.2, 0.5)),  # in the animals' ignore zone
        ("animal", standing_at(0.8, 0.5)),  # street alerts only for vehicles
    ]
    assert zone_verdicts(zones, FRAME, detections) == [
        ZoneVerdict(("street",), True),
        ZoneVerdict(("lawn",), False),
        ZoneVerdict(("lawn",), True),  # the ignore zone is the animals' only
        ZoneVerdict(("lawn",), False),
        ZoneVerdict(("street",), True),
    ]


def test_a_detection_of_no_presence_group_never_counts_but_gets_its_zones():
    zones = [zone("drive", ZoneKind.ALERT, LEFT)]
    verdicts = zone_verdicts(zones, FRAME, [(None, standing_at(0.2, 0.5))])
    assert verdicts == [ZoneVerdict(("drive",), False)]
    assert zone_verdicts([], FRAME, [(None, standing_at(0.2, 0.5))]) == [ZoneVerdict((), False)]


def test_a_detection_on_the_zones_edge_is_in_it():
    zones = [zone("drive", ZoneKind.ALERT, LEFT)]
    # bottom centre at x = 0.5: on the zone's right edge
    assert zone_verdicts(zones, FRAME, [("person", standing_at(0.5, 0.5))]) == [
        ZoneVerdict(("drive",), True)
    ]


def test_groups_may_be_given_as_the_vocabularys_members():
    zones = [zone("street", ZoneKind.ALERT, RIGHT, groups=["vehicle"])]
    (verdict,) = zone_verdicts(zones, FRAME, [(PresenceGroup.VEHICLE, standing_at(0.8, 0.5))])
    assert verdict.counts


# -- storage -------------------------------------------------------------------------------


@pytest.mark.integration
def test_verdicts_are_recorded_per_detection_and_on_the_event(db):
    with db.connection() as conn:
        home, camera = make_home(conn)
        insert_zone(conn, camera, home, "drive", ZoneKind.ALERT, LEFT, [PresenceGroup.PERSON])
        insert_zone(conn, camera, home, "bins", ZoneKind.IGNORE, CORNER)
    detections = [("person", standing_at(0.1, 0.9)), ("person", standing_at(0.4, 0.3))]
    detections += [(None, standing_at(0.8, 0.5))]
    event = analysed_event(db, home, camera, "front_door", [("person", 0.9)] * 3)
    with db.connection() as conn:
        zones = camera_zones(conn, camera)
        assert [(z.name, z.kind, z.groups) for z in zones] == [
            ("drive", ZoneKind.ALERT, frozenset({PresenceGroup.PERSON})),
            ("bins", ZoneKind.IGNORE, None),
        ]
        assert zones[0].polygon == tuple(LEFT)
        ids = [
            row["id"]
            for row in conn.execute(
                "SELECT id FROM detections WHERE event_id = %s ORDER BY id", (event,)
            ).fetchall()
        ]
        verdicts = zone_verdicts(zones, FRAME, detections)
        record_verdicts(conn, event, ids, verdicts)
        rows = conn.execute(
            "SELECT zones, counts FROM detections WHERE event_id = %s ORDER BY id", (event,)
        ).fetchall()
        event_row = conn.execute("SELECT zones FROM events WHERE id = %s", (event,)).fetchone()
    assert [(r["zones"], r["counts"]) for r in rows] == [
        (["drive", "bins"], False),
        (["drive"], True),
        ([], False),
    ]
    assert event_row["zones"] == ["drive", "bins"]  # every zone its detections stood in


def test_verdicts_and_detection_ids_must_pair_up():
    with pytest.raises(ValueError, match="2 detection ids for 1 verdicts"):
        record_verdicts(None, 1, [1, 2], [ZoneVerdict((), True)])
