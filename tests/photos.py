"""The real photos the inference tests run on (Debian's darknet sample pictures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).parent / "data" / "photos"
PHOTO_NAMES = ("dog", "eagle", "giraffe", "horses", "person")


def photo(name: str) -> Path:
    return PHOTOS / f"{name}.jpg"


def open_photo(name: str) -> Image.Image:
    with Image.open(photo(name)) as im:
        return im.convert("RGB")


def noise_frame(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def blank_frame(width: int = 640, height: int = 480, value: int = 0) -> Image.Image:
    return Image.new("RGB", (width, height), (value, value, value))
