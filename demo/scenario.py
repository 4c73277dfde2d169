"""The demo's world: users and homes of every tier, their cameras and phones, and a
reproducible stream of camera events built from the real sample photos."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from demo.processes import ROOT

PHOTOS_DIR = ROOT / "tests" / "data" / "photos"
PASSWORD = "demo-password-not-secret"
CAMERAS = ("front_door", "backyard", "driveway", "garage_door")
# A camera whose web server is down: its image URL never answers, so its events fail
# after their retries and armed homes get a fail-safe alert. One event per home.
OFFLINE_CAMERA = "side_door"
# What a phone's on-device model reports for each photo (presence scores per group), sent
# with some events; the rest leave scoring to the server.
ON_DEVICE = {
    "person": {"person": 0.8, "animal": 0.63},
    "dog": {"vehicle": 0.56, "animal": 0.46},
    "eagle": {"animal": 0.63},
    "giraffe": {"animal": 0.79},
    "horses": {"animal": 0.61},
}
# A person is the most common caller at a door; animals wander the yard.
PHOTO_WEIGHTS = {"person": 4, "dog": 3, "eagle": 1, "giraffe": 1, "horses": 1}


@dataclass(frozen=True)
class HomeSpec:
    email: str
    home: str
    tier: str
    arm_mode: str
    timezone: str = "UTC"


HOMES = (
    HomeSpec("ana@demo.vigil", "Maple Street", "standard", "away"),
    HomeSpec("ben@demo.vigil", "Oak Avenue", "standard", "disarmed"),
    HomeSpec("chloe@demo.vigil", "Harbor Loft", "premium", "away", "Europe/Paris"),
    HomeSpec("dev@demo.vigil", "Hillside", "premium", "home", "America/New_York"),
    HomeSpec("ops@acme.demo.vigil", "Acme Warehouse", "enterprise", "night"),
    HomeSpec("it@acme.demo.vigil", "Acme Office", "enterprise", "home", "Asia/Tokyo"),
)


@dataclass
class Home:
    spec: HomeSpec
    home_id: int
    token: str
    cameras: dict[str, int] = field(default_factory=dict)  # location -> device id
    phone_id: int | None = None


@dataclass(frozen=True)
class PlannedEvent:
    home: Home
    location: str
    photo: str
    motion_score: float
    upload: bool  # multipart upload, else the source's JSON body with image_url
    lite_results: dict[str, float] | None
    offline: bool = False  # from OFFLINE_CAMERA: its image_url cannot be fetched

    def fields(self, image_url: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "device_id": f"{self.location}_cam",  # the source's apps name the device
            "location": self.location,
            "mode": "security",
            "motion_score": self.motion_score,
        }
        if image_url is not None:
            body["image_url"] = image_url
        if self.lite_results is not None:
            body["lite_results"] = self.lite_results
        return body


def photo_path(name: str) -> Path:
    return PHOTOS_DIR / f"{name}.jpg"


def plan_events(homes: list[Home], count: int, seed: int = 7) -> list[PlannedEvent]:
    """``count`` events spread over the homes: about half uploads, a quarter with
    on-device results, photos weighted towards people; one event of each home (spread over
    the run) comes from its offline camera."""
    rng = random.Random(seed)
    names, weights = zip(*PHOTO_WEIGHTS.items(), strict=True)
    events = []
    for _ in range(count):
        home = rng.choice(homes)
        photo = rng.choices(names, weights)[0]
        events.append(
            PlannedEvent(
                home=home,
                location=rng.choice(CAMERAS),
                photo=photo,
                motion_score=round(rng.uniform(0.35, 0.95), 2),
                upload=rng.random() < 0.5,
                lite_results=dict(ON_DEVICE[photo]) if rng.random() < 0.25 else None,
            )
        )
    if count >= 2 * len(homes):
        step = count // len(homes)
        for i, home in enumerate(homes):
            at = i * step + step // 2
            events[at] = replace(
                events[at],
                home=home,
                location=OFFLINE_CAMERA,
                upload=False,
                lite_results=None,
                offline=True,
            )
    return events
