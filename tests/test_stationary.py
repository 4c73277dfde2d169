"""Memory of objects that stay put (notify.stationary): the overlap rule on hand-computed
boxes, then a camera's memory in the real Redis, rebuilt from the real PostgreSQL when
Redis loses it, with the same answers."""

from __future__ import annotations

import datetime as dt

import pytest

from inference.contract import Detection
from notify.stationary import (
    KEY,
    MAX_ENTRIES,
    Candidate,
    StationaryMemory,
    iou,
    normalised_box,
    record_stationary,
    sift_entries,
)
from store.analysis import claim_for_analysis, save_detections
from tasks.best_effort_redis import best_effort_redis
from tests.factories import make_home
from vigil.settings import Settings, SettingsError
from vigil.vocabulary import PresenceGroup

pytestmark = pytest.mark.integration

PERSON, VEHICLE = PresenceGroup.PERSON, PresenceGroup.VEHICLE
FRAME = (640, 480)
CAR = (100.0, 200.0, 300.0, 320.0)  # pixels of a 640x480 frame
CAR_JITTERED = (103.0, 198.0, 302.0, 323.0)  # the same car, a few pixels off: IoU ~0.95
CAR_MOVED = (380.0, 200.0, 580.0, 320.0)  # down the street: no overlap
WINDOW_S = 3600
MINUTE = dt.timedelta(minutes=1)
SECOND = dt.timedelta(seconds=1)


# -- the rule -----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 2, 2), (0, 0, 2, 2), 1.0),  # the same box
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),  # 1 shared of 4 + 4 - 1
        ((0, 0, 4, 4), (1, 1, 3, 3), 4 / 16),  # one inside the other
        ((0, 0, 2, 1), (1, 0, 3, 1), 1 / 3),  # half of each: 1 of 2 + 2 - 1
        ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),  # touching edges share no area
        ((0, 0, 1, 1), (2, 2, 3, 3), 0.0),  # apart
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # no area
        ((0.1, 0.2, 0.5, 0.6), (0.3, 0.4, 0.7, 0.8), 0.04 / 0.28),  # 0.2x0.2 of 0.16+0.16-0.04
    ],
)
def test_iou_is_the_shared_area_over_the_covered_area(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


@pytest.mark.unit
def test_boxes_are_normalised_to_the_frame_and_clamped_to_it():
    assert normalised_box(64, 48, 320, 240, 640, 480) == pytest.approx((0.1, 0.1, 0.5, 0.5))
    assert normalised_box(-5, -1, 700, 480, 640, 480) == (0.0, 0.0, 1.0, 1.0)


def _box(pixels) -> tuple[float, float, float, float]:
    return normalised_box(*pixels, *FRAME)


@pytest.mark.unit
def test_the_jittered_car_overlaps_enough_and_the_moved_one_not_at_all():
    assert iou(_box(CAR), _box(CAR_JITTERED)) > 0.9
    assert iou(_box(CAR), _box(CAR_MOVED)) == 0.0


@pytest.mark.unit
def test_a_retried_event_is_never_stationary_by_virtue_of_itself():
    car = [Candidate(1, VEHICLE, _box(CAR))]
    first = sift_entries((), 10, 1000.0, car, 0.6, WINDOW_S)
    assert first.stationary == frozenset()
    again = sift_entries(first.entries, 10, 1000.0, car, 0.6, WINDOW_S)  # event 10 retried
    assert again.stationary == frozenset() and again.entries == first.entries
    second = sift_entries(first.entries, 11, 1060.0, [Candidate(2, VEHICLE, _box(CAR))], 0.6, 3600)
    retried = sift_entries(
        second.entries, 11, 1060.0, [Candidate(2, VEHICLE, _box(CAR))], 0.6, 3600
    )
    assert second.stationary == retried.stationary == frozenset({2})
    assert retried.entries == second.entries


@pytest.mark.unit
def test_two_cars_side_by_side_stay_two_objects():
    left, right = (0.1, 0.5, 0.3, 0.7), (0.32, 0.5, 0.52, 0.7)
    both = [Candidate(1, VEHICLE, left), Candidate(2, VEHICLE, right)]
    seen = sift_entries((), 1, 0.0, both, 0.6, WINDOW_S)
    again = sift_entries(seen.entries, 2, 60.0, [Candidate(3, VEHICLE, left)], 0.6, WINDOW_S)
    assert again.stationary == frozenset({3})
    assert sorted(e.box for e in again.entries) == [left, right]


@pytest.mark.unit
def test_the_settings_are_read_with_their_ranges():
    settings = Settings.from_environ({"STATIONARY_IOU": "0.75", "STATIONARY_WINDOW_S": "600"})
    assert (settings.stationary_iou, settings.stationary_window_s) == (0.75, 600)
    assert (Settings().stationary_iou, Settings().stationary_window_s) == (0.6, 21600)
    for name, raw in [
        ("STATIONARY_IOU", "0.05"),
        ("STATIONARY_IOU", "1"),
        ("STATIONARY_WINDOW_S", "59"),
        ("STATIONARY_WINDOW_S", str(7 * 86400 + 1)),
    ]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_environ({name: raw})


# -- a camera's memory in Redis, rebuilt from PostgreSQL ---------------------------------


class Camera:
    """A home's camera whose events are analysed and sifted as the digest does: at the
    event's analysis time, with the boxes normalised to its frame, ``stationary`` written
    and the event decided."""

    def __init__(self, db, redis_client, email: str = "a@b.c") -> None:
        self.db = db
        self.redis = redis_client
        with db.connection() as conn:
            self.home, self.id = make_home(conn, email=email)
            self.t0 = conn.execute("SELECT now() AS now").fetchone()["now"]
        self.memory = StationaryMemory(redis_client, 0.6, WINDOW_S)
        self.sifted: dict[int, frozenset[int]] = {}

    def sighting(self, *objects, at: dt.datetime, frame=FRAME) -> tuple[int, list[Candidate]]:
        """An analysed event of (label, box) ``objects`` at ``at``; its candidates."""
        with self.db.connection() as conn:
            event = conn.execute(
                "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
                " VALUES (%s, %s, 'driveway', 'security', 0.8) RETURNING id",
                (self.home, self.id),
            ).fetchone()["id"]
        claim_for_analysis(self.db, [event])
        found = [Detection(label, 0.9, box) for label, box in objects]
        save_detections(self.db, [(event, found)], "nanodet-416", frame_sizes={event: frame})
        with self.db.connection() as conn:
            conn.execute("UPDATE events SET analyzed_at = %s WHERE id = %s", (at, event))
            rows = conn.execute(
                "SELECT id, label, x1, y1, x2, y2 FROM detections WHERE event_id = %s ORDER BY id",
                (event,),
            ).fetchall()
        groups = {"car": VEHICLE, "truck": VEHICLE, "person": PERSON, "dog": PresenceGroup.ANIMAL}
        return event, [
            Candidate(
                r["id"],
                groups[r["label"]],
                normalised_box(r["x1"], r["y1"], r["x2"], r["y2"], *frame),
            )
            for r in rows
        ]

    def sift(self, event: int, candidates: list[Candidate]) -> frozenset[int]:
        with self.db.connection() as conn:
            at = conn.execute("SELECT analyzed_at FROM events WHERE id = %s", (event,)).fetchone()
            stationary = self.memory.sift(conn, self.id, event, at["analyzed_at"], candidates)
            record_stationary(conn, event, [c.detection_id for c in candidates], stationary)
            conn.execute("UPDATE detections SET counts = true WHERE event_id = %s", (event,))
            conn.execute("UPDATE events SET digest = 'suppressed' WHERE id = %s", (event,))
        self.sifted[event] = stationary
        return stationary

    def see(self, *objects, at: dt.datetime) -> tuple[bool, ...]:
        """Whether each of ``objects`` seen at ``at`` is stationary, in their order."""
        event, candidates = self.sighting(*objects, at=at)
        stationary = self.sift(event, candidates)
        return tuple(c.detection_id in stationary for c in candidates)

    @property
    def key(self) -> str:
        return KEY.format(device_id=self.id)


@pytest.fixture
def camera(db, redis_client) -> Camera:
    return Camera(db, redis_client)


def test_a_parked_car_is_new_once_then_stationary(camera):
    t0 = camera.t0
    assert camera.see(("car", CAR), at=t0) == (False,)
    assert camera.see(("car", CAR_JITTERED), at=t0 + 10 * MINUTE) == (True,)
    assert camera.see(("car", CAR), at=t0 + 20 * MINUTE) == (True,)
    with camera.db.connection() as conn:
        written = conn.execute(
            "SELECT stationary FROM detections d JOIN events e ON e.id = d.event_id"
            " WHERE e.device_id = %s ORDER BY d.id",
            (camera.id,),
        ).fetchall()
    assert [row["stationary"] for row in written] == [False, True, True]
    assert camera.redis.exists(camera.key)
    assert 0 < camera.redis.ttl(camera.key) <= WINDOW_S


def test_a_car_that_moved_is_new_again_and_its_new_place_is_remembered(camera):
    t0 = camera.t0
    assert camera.see(("car", CAR), at=t0) == (False,)
    assert camera.see(("car", CAR_MOVED), at=t0 + MINUTE) == (False,)
    assert camera.see(("car", CAR_MOVED), at=t0 + 2 * MINUTE) == (True,)
    assert camera.see(("car", CAR), at=t0 + 3 * MINUTE) == (True,)  # the first place, too


def test_another_group_in_the_same_box_is_new(camera):
    t0 = camera.t0
    assert camera.see(("car", CAR), at=t0) == (False,)
    assert camera.see(("person", CAR), at=t0 + MINUTE) == (False,)
    assert camera.see(("truck", CAR_JITTERED), at=t0 + 2 * MINUTE) == (True,)  # a vehicle too
    assert camera.see(("person", CAR), ("dog", CAR_MOVED), at=t0 + 3 * MINUTE) == (True, False)


def test_an_object_unseen_for_longer_than_the_window_is_new(camera):
    t0 = camera.t0
    assert camera.see(("car", CAR), at=t0) == (False,)
    later = t0 + dt.timedelta(seconds=WINDOW_S + 60)
    assert camera.see(("car", CAR), at=later) == (False,)
    assert camera.see(("car", CAR), at=later + dt.timedelta(seconds=WINDOW_S - 60)) == (True,)


def test_after_redis_lost_the_memory_every_answer_is_the_same(camera):
    t0 = camera.t0
    scenes = [
        [("car", CAR)],
        [("car", CAR_JITTERED), ("person", (10.0, 10.0, 60.0, 200.0))],
        [("car", CAR_MOVED)],
        [("car", CAR), ("car", CAR_MOVED), ("dog", CAR)],
        [("person", (12.0, 11.0, 61.0, 203.0))],
        [("car", CAR_JITTERED)],
    ]
    for n, scene in enumerate(scenes):
        event, candidates = camera.sighting(*scene, at=t0 + n * 7 * MINUTE)
        kept = camera.sift(event, candidates)
        remembered = camera.redis.get(camera.key)
        camera.redis.flushdb()
        # The same event again, on a memory rebuilt from PostgreSQL.
        assert camera.sift(event, candidates) == kept, n
        assert camera.redis.get(camera.key) == remembered, n
    assert list(camera.sifted.values())[-1]  # the scenes did find objects that stayed put


def test_a_rebuild_skips_events_without_a_frame_size_undecided_ones_and_other_cameras(camera, db):
    t0 = camera.t0
    event, candidates = camera.sighting(("car", CAR), at=t0)
    camera.sift(event, candidates)
    with db.connection() as conn:
        conn.execute("UPDATE events SET frame_width = NULL WHERE id = %s", (event,))
    undecided, _ = camera.sighting(("car", CAR), at=t0 + MINUTE)  # analysed, not sifted
    other = Camera(db, camera.redis, "other@b.c")
    other.see(("car", CAR), at=t0 + 2 * MINUTE)
    camera.redis.delete(camera.key)
    assert camera.see(("car", CAR), at=t0 + 3 * MINUTE) == (False,)
    assert undecided not in camera.sifted


def test_a_camera_that_saw_nothing_is_not_rebuilt_on_every_event(camera, db):
    t0 = camera.t0
    assert camera.see(at=t0) == ()
    assert camera.redis.exists(camera.key)  # an empty memory, stored
    # A row the memory never sifted (as if written behind its back): no rebuild reads it.
    event, candidates = camera.sighting(("car", CAR), at=t0 + MINUTE)
    with db.connection() as conn:
        record_stationary(conn, event, [c.detection_id for c in candidates], ())
        conn.execute("UPDATE events SET digest = 'suppressed' WHERE id = %s", (event,))
    assert camera.see(("car", CAR), at=t0 + 2 * MINUTE) == (False,)
    camera.redis.delete(camera.key)  # lost: now the row counts
    assert camera.see(("car", CAR), at=t0 + 3 * MINUTE) == (True,)


def test_a_camera_remembers_at_most_the_objects_it_saw_last(camera, db):
    memory = StationaryMemory(camera.redis, 0.6, WINDOW_S)
    t0 = camera.t0
    cells = [(x / 10, y / 10, (x + 1) / 10, (y + 1) / 10) for y in range(8) for x in range(10)]
    extra = 6
    with db.connection() as conn:
        for n, box in enumerate(cells[: MAX_ENTRIES + extra]):  # one object per event
            seen = memory.sift(
                conn, camera.id, 1000 + n, t0 + n * SECOND, [Candidate(n, VEHICLE, box)]
            )
            assert seen == frozenset()
        later = t0 + (MAX_ENTRIES + extra) * SECOND
        again = [
            Candidate(500 + n, VEHICLE, box) for n, box in enumerate(cells[: MAX_ENTRIES + extra])
        ]
        stationary = memory.sift(conn, camera.id, 2000, later, again)
    forgotten = {500 + n for n in range(extra)}
    assert stationary == {c.detection_id for c in again} - forgotten
    assert len(camera.redis.get(camera.key)) < 16 * 1024  # a small value per camera


def test_with_redis_away_the_answer_comes_from_the_rows(camera, db):
    t0 = camera.t0
    assert camera.see(("car", CAR), at=t0) == (False,)
    away = StationaryMemory(best_effort_redis("redis://127.0.0.1:1/0"), 0.6, WINDOW_S)
    event, candidates = camera.sighting(("car", CAR_JITTERED), at=t0 + MINUTE)
    with db.connection() as conn:
        stationary = away.sift(conn, camera.id, event, t0 + MINUTE, candidates)
    assert stationary == {candidates[0].detection_id}


def test_from_settings_takes_the_threshold_and_the_window(redis_client):
    memory = StationaryMemory.from_settings(
        redis_client, Settings(stationary_iou=0.8, stationary_window_s=120)
    )
    assert (memory.iou, memory.window_s) == (0.8, 120)
