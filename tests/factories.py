"""Rows the storage tests build on: a user, a home, its camera and phones, analysed events."""

from __future__ import annotations

from inference.contract import Detection
from store.analysis import claim_for_analysis, save_detections
from store.blobs import blob_store
from vigil.settings import current


def make_home(
    conn,
    arm_mode="away",
    tz="Europe/Paris",
    phones=1,
    email="a@b.c",
    tier="premium",
    retention_days=None,
) -> tuple[int, int]:
    """A home of ``tier`` with a camera and ``phones`` phones of its owner; (home, camera)."""
    user = conn.execute(
        "INSERT INTO users (email, password_hash) VALUES (%s, 'x') RETURNING id", (email,)
    ).fetchone()["id"]
    home = conn.execute(
        "INSERT INTO homes (owner_id, name, tier, arm_mode, timezone, retention_days)"
        " VALUES (%s, 'Home', %s, %s, %s, %s) RETURNING id",
        (user, tier, arm_mode, tz, retention_days),
    ).fetchone()["id"]
    camera = conn.execute(
        "INSERT INTO devices (home_id, kind, platform, name) VALUES (%s, 'camera', 'camera',"
        " 'cam') RETURNING id",
        (home,),
    ).fetchone()["id"]
    for i in range(phones):
        conn.execute(
            "INSERT INTO devices (home_id, user_id, kind, platform, name, push_token)"
            " VALUES (%s, %s, 'phone', 'android', %s, %s)",
            (home, user, f"phone{i}", f"fcm-token-{i}-0123456789"),
        )
    return home, camera


SOME_BOX = (1.0, 2.0, 30.0, 40.0)  # where a detection is, when a test does not care


def analysed_event(
    db, home, camera, location, detections, snapshot: bytes | None = None, frame=None
) -> int:
    """An event written as the deep worker writes it: claimed, then its detections saved
    (and its snapshot put in the session's blob store) and the event marked analysed.

    ``detections``: (label, score) pairs, or (label, score, box) with ``frame``, the
    picture's (width, height) the boxes are in."""
    with db.connection() as conn:
        event_id = conn.execute(
            "INSERT INTO events (home_id, device_id, location, mode, motion_score)"
            " VALUES (%s, %s, %s, 'security', 0.8) RETURNING id",
            (home, camera, location),
        ).fetchone()["id"]
    claim_for_analysis(db, [event_id])
    dets = [
        Detection(d[0], d[1], d[2] if len(d) > 2 else (1.0, 2.0, 30.0, 40.0)) for d in detections
    ]
    keys = {event_id: blob_store(current()).put(snapshot)} if snapshot is not None else None
    frames = {event_id: frame} if frame is not None else None
    saved = save_detections(db, [(event_id, dets)], "nanodet-416", keys, frame_sizes=frames)
    assert list(saved) == [event_id]
    return event_id
