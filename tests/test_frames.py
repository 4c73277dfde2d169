"""inference.frames: a 1080p frame is decoded once at the snapshot's size, and the snapshot
is drawn there with the boxes where they belong."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from inference.contract import Detection
from inference.frames import SNAPSHOT_SIDE, prepare_frame, snapshot_jpeg
from inference.images import decode_image, encode_jpeg
from inference.nanodet import letterbox
from tests.photos import blank_frame, open_photo

pytestmark = pytest.mark.unit


class Letterbox416:
    """The model's side of the contract that prepare_frame uses: its preprocess."""

    def preprocess(self, image: Image.Image):
        return letterbox(image, (416, 416))


def full_hd_jpeg() -> bytes:
    return encode_jpeg(open_photo("person").resize((1920, 1080)), quality=90)


def test_a_1080p_frame_is_decoded_once_at_half_scale_and_remembers_its_size():
    frame = prepare_frame(full_hd_jpeg(), Letterbox416())
    assert not isinstance(frame, Exception)
    assert frame.image.size == (960, 540)  # JPEG draft: 1/2 scale, the snapshot's side
    assert frame.source_size == (1920, 1080)
    # the model's input maps back to the source's pixels, as from a full decode
    assert frame.item.source_size == (1920, 1080)
    assert frame.item.scale == pytest.approx(416 / 1920)


def test_the_long_side_stays_at_least_the_snapshot_side_whatever_the_shape():
    portrait = encode_jpeg(blank_frame(1080, 1920, 80))
    assert decode_image(portrait, draft_long_side=SNAPSHOT_SIDE).size == (540, 960)
    small = encode_jpeg(blank_frame(800, 600, 80))  # already below: decoded as it is
    assert decode_image(small, draft_long_side=SNAPSHOT_SIDE).size == (800, 600)
    huge = encode_jpeg(blank_frame(4000, 3000, 80))  # 1/4 is the largest scale that fits
    assert decode_image(huge, draft_long_side=SNAPSHOT_SIDE).size == (1000, 750)


def test_the_snapshot_draws_source_pixel_boxes_on_the_reduced_image():
    frame = prepare_frame(encode_jpeg(blank_frame(1920, 1080, 0)), Letterbox416())
    assert not isinstance(frame, Exception)
    box = (400.0, 300.0, 1000.0, 900.0)  # in the 1920x1080 source
    jpeg = snapshot_jpeg(frame.image, [Detection("person", 0.9, box)])
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.size == (960, 540)
        pixels = np.asarray(im.convert("L"), dtype=np.int32)
    # the outline lies on the halved box: its left edge at x = 200, its bottom at y = 450
    assert pixels[300, 198:203].max() > 100 and pixels[440:460, 350].max() > 100
    # and nowhere near where the unscaled box would be
    assert pixels[300, 395:405].max() < 40 and pixels[200:230, 700].max() < 40


@dataclass(frozen=True)
class Outline:
    kind: str
    polygon: tuple[tuple[float, float], ...]


def test_the_snapshot_draws_the_cameras_zones_where_they_lie_in_the_reduced_frame():
    frame = prepare_frame(encode_jpeg(blank_frame(1920, 1080, 0)), Letterbox416())
    assert not isinstance(frame, Exception)
    # the right half of the frame, below the middle: x 480..960, y 270..540 of 960x540
    zone = Outline("alert", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)))
    plain, zoned = (snapshot_jpeg(frame.image, [], zones) for zones in ((), (zone,)))
    with Image.open(io.BytesIO(plain)) as a, Image.open(io.BytesIO(zoned)) as b:
        assert a.size == b.size == (960, 540)
        diff = np.abs(np.asarray(a, dtype=np.int32) - np.asarray(b, dtype=np.int32)).sum(axis=2)
    assert diff[300:520, 500:940].min() > 20  # tinted throughout
    # JPEG blocks (16 px) holding no drawn pixel come out the same
    assert diff[:240, :].max() == 0 and diff[:, :448].max() == 0
