"""Annotated snapshots: tags that never overlap or leave the frame, legible on a phone."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from inference.annotate import (
    COLOURS,
    OTHER_COLOUR,
    TagRect,
    annotate,
    font_for,
    layout_tags,
    tag_measure,
    tag_text,
    text_height,
)
from inference.contract import Detection
from inference.labels import COCO_LABELS, group_of
from inference.nanodet import NanoDet
from tests.photos import PHOTO_NAMES, open_photo

pytestmark = pytest.mark.unit

CHAR_W, TAG_H = 7, 14


def fixed_size(text: str) -> tuple[int, int]:
    """A monospaced stand-in for the font: 7 px a character, 2 px padding either side."""
    return len(text) * CHAR_W + 4, TAG_H


def det(label: str, score: float, box) -> Detection:
    return Detection(label, score, tuple(float(v) for v in box))


def check_layout(tags: list[TagRect], detections, size, text_size=fixed_size) -> None:
    """The invariants: inside the frame, no two tags share a pixel, sizes as measured."""
    width, height = size
    for tag in tags:
        x1, y1, x2, y2 = tag.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, tag
        assert (x2 - x1, y2 - y1) == text_size(tag.text), tag
        assert tag.text.startswith(detections[tag.index].label[:1]), tag
    for a, b in itertools.combinations(tags, 2):
        assert not a.intersects(b), (a, b)
    assert len({t.index for t in tags}) == len(tags)


def best_index(detections) -> int:
    return max(range(len(detections)), key=lambda i: detections[i].score)


# -- placement --------------------------------------------------------------------------


def test_a_lone_tag_sits_on_top_of_its_box_at_its_left_edge():
    dets = [det("person", 0.91, (100, 100, 200, 300))]
    (tag,) = layout_tags(dets, (640, 480), fixed_size)
    w, h = fixed_size("person 0.91")
    assert tag.text == "person 0.91" and tag.box == (100, 100 - h, 100 + w, 100)


def test_a_box_at_the_top_gets_its_tag_inside_and_one_at_the_right_edge_slides_left():
    dets = [det("car", 0.8, (600, 0, 640, 80))]
    (tag,) = layout_tags(dets, (640, 480), fixed_size)
    w, h = fixed_size("car 0.80")
    assert tag.box == (640 - w, 0, 640, h)


def test_a_box_covering_the_frame_gets_its_tag_inside_the_top_left_corner():
    dets = [det("dog", 0.7, (0, 0, 640, 480))]
    (tag,) = layout_tags(dets, (640, 480), fixed_size)
    assert tag.box[:2] == (0, 0)


def test_the_second_tag_goes_inside_when_the_place_above_is_taken():
    dets = [det("person", 0.9, (100, 100, 300, 300)), det("dog", 0.6, (110, 100, 250, 200))]
    tags = layout_tags(dets, (640, 480), fixed_size)
    check_layout(tags, dets, (640, 480))
    by_index = {t.index: t for t in tags}
    assert by_index[0].box[1] == 100 - TAG_H  # above, as preferred
    assert by_index[1].box[1] == 100  # inside its top edge, under the first


def test_tags_are_listed_best_first():
    dets = [det("car", 0.3, (0, 0, 50, 50)), det("person", 0.9, (300, 300, 400, 400))]
    assert [t.index for t in layout_tags(dets, (640, 480), fixed_size)] == [1, 0]


# -- adversarial layouts ----------------------------------------------------------------


def test_many_boxes_at_the_same_spot_stack_without_overlapping():
    dets = [det(COCO_LABELS[i], 0.3 + i / 100, (200, 200, 300, 260)) for i in range(40)]
    tags = layout_tags(dets, (640, 480), fixed_size)
    check_layout(tags, dets, (640, 480))
    assert len(tags) == len(dets)  # the frame has room for all of them
    best = best_index(dets)
    assert any(t.index == best and t.text == tag_text(dets[best]) for t in tags)


def test_boxes_at_every_edge_and_corner_keep_their_tags_inside():
    size = (320, 240)
    boxes = [
        (0, 0, 40, 40),
        (280, 0, 320, 40),
        (0, 200, 40, 240),
        (280, 200, 320, 240),
        (-50, -50, 20, 20),  # partly outside the frame
        (300, 220, 400, 300),
        (0, 100, 320, 140),
        (150, 0, 170, 240),
        (318, 100, 320, 102),  # a sliver at the right edge
    ]
    dets = [det("person", 0.9 - i / 20, b) for i, b in enumerate(boxes)]
    tags = layout_tags(dets, size, fixed_size)
    check_layout(tags, dets, size)
    assert len(tags) == len(dets)


def test_a_crowded_frame_drops_the_weakest_tags_never_the_best():
    size = (120, 42)  # three rows of tags; "person 0.xx" takes a row, "person" half of one
    dets = [det("person", 0.95, (0, 0, 120, 42))]  # a box over the whole frame
    dets += [det("person", 0.9 - i / 50, (12 * i, 10, 12 * i + 30, 40)) for i in range(9)]
    tags = layout_tags(dets, size, fixed_size)
    check_layout(tags, dets, size)
    assert tags[0].index == 0 and tags[0].text == tag_text(dets[0])
    shown = {t.index for t in tags}
    left_out = set(range(len(dets))) - shown
    assert left_out  # the frame cannot hold them all
    # Tags are placed best first, so whatever is left out scores below everything shown.
    assert max(dets[i].score for i in left_out) < min(dets[i].score for i in shown)


@pytest.mark.parametrize("size", [(60, 20), (30, 30), (12, 16), (16, 14), (200, 14)])
def test_tiny_frames_still_show_the_best_label(size):
    dets = [
        det("person", 0.5, (0, 0, size[0], size[1])),
        det("dog", 0.8, (2, 2, size[0] - 2, size[1] - 2)),
        det("car", 0.4, (0, 0, 5, 5)),
    ]
    tags = layout_tags(dets, size, fixed_size)
    check_layout(tags, dets, size)
    assert tags[0].index == 1  # the dog, best, is shown: in full if the frame is wide enough
    full = tag_text(dets[1])
    expected = full if fixed_size(full)[0] <= size[0] else None
    assert tags[0].text == expected or (expected is None and "dog".startswith(tags[0].text))


def test_a_frame_too_small_for_one_character_gets_no_tags():
    assert layout_tags([det("dog", 0.8, (0, 0, 8, 8))], (8, 8), fixed_size) == []


def test_no_detections_no_tags():
    assert layout_tags([], (640, 480), fixed_size) == []


boxes = st.tuples(
    st.integers(-40, 700), st.integers(-40, 520), st.integers(1, 400), st.integers(1, 300)
).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@settings(max_examples=150, deadline=None)
@given(
    size=st.tuples(st.integers(8, 700), st.integers(8, 520)),
    items=st.lists(
        st.tuples(st.sampled_from(COCO_LABELS), st.floats(0.3, 0.99), boxes),
        min_size=1,
        max_size=25,
    ),
)
def test_any_layout_keeps_the_invariants(size, items):
    dets = [det(label, score, box) for label, score, box in items]
    tags = layout_tags(dets, size, fixed_size)
    check_layout(tags, dets, size)
    best = best_index(dets)
    if fixed_size(dets[best].label[:1])[0] <= size[0] and TAG_H <= size[1]:
        assert tags and tags[0].index == best
        if fixed_size(tag_text(dets[best]))[0] <= size[0]:
            assert tags[0].text == tag_text(dets[best])


# -- real photos and the drawn image ----------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> NanoDet:
    model = NanoDet()
    model.setup("cpu")
    return model


@pytest.mark.integration
@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_real_photos_get_separate_tags_inside_the_frame(detector, name):
    image = open_photo(name)
    dets = detector.detect([image])[0]
    measure = tag_measure(font_for(image.size))
    tags = layout_tags(dets, image.size, measure)
    check_layout(tags, dets, image.size, measure)
    assert len(tags) == len(dets)  # five photos, a handful of objects: room for every tag
    assert all(t.text == tag_text(dets[t.index]) for t in tags)


@pytest.mark.integration
@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_tags_are_drawn_where_laid_out_in_their_group_colour(detector, name):
    image = open_photo(name)
    dets = detector.detect([image])[0]
    drawn = annotate(image, dets)
    assert drawn.size == image.size and drawn is not image
    for tag in layout_tags(dets, image.size, tag_measure(font_for(image.size))):
        colour = COLOURS.get(group_of(dets[tag.index].label) or "", OTHER_COLOUR)
        x1, y1, x2, y2 = tag.box
        for corner in ((x1, y1), (x2 - 1, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)):
            assert drawn.getpixel(corner) == colour, (tag, corner)


def test_each_group_has_its_colour_and_the_best_box_is_drawn_on_top():
    frame = Image.new("RGB", (400, 300), (128, 128, 128))
    box = (100, 100, 300, 250)
    dets = [det("car", 0.5, box), det("person", 0.9, box), det("bench", 0.6, (10, 10, 60, 60))]
    drawn = annotate(frame, dets)
    # The shared outline's bottom edge (no tag there): the best, a person, is on top.
    assert drawn.getpixel((200, 249)) == COLOURS["person"]
    assert drawn.getpixel((10, 59)) == OTHER_COLOUR  # bench: no presence group
    dog = annotate(frame, [det("dog", 0.7, box)])
    assert dog.getpixel((200, 249)) == COLOURS["animal"]


@pytest.mark.parametrize("width", [360, 640, 773, 960, 1280, 1920, 4000])
def test_text_is_at_least_a_thirtieth_of_the_width_tall(width):
    font = font_for((width, width * 3 // 4))
    assert text_height(font) >= width / 30
    # Thumbnailing scales text and width alike: a 960 px snapshot keeps the ratio, so on a
    # phone 360 px wide the text is at least 12 px tall.
    assert text_height(font) * 360 / width >= 12


def test_annotating_a_tiny_frame_works():
    frame = Image.new("RGB", (24, 18))
    drawn = annotate(frame, [det("person", 0.9, (0, 0, 24, 18)), det("dog", 0.5, (2, 2, 9, 9))])
    assert drawn.size == (24, 18)


@dataclass(frozen=True)
class Outline:
    """A zone as the snapshot takes it: a kind and normalised points."""

    kind: str
    polygon: tuple[tuple[float, float], ...]


# A U opening upwards: arms 0.2..0.35 and 0.65..0.8 wide, joined below y = 0.55.
U_ZONE = (
    (0.2, 0.2),
    (0.35, 0.2),
    (0.35, 0.55),
    (0.65, 0.55),
    (0.65, 0.2),
    (0.8, 0.2),
    (0.8, 0.8),
    (0.2, 0.8),
)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _rect(shape, box) -> np.ndarray:
    """A mask of the normalised ``box`` (x1, y1, x2, y2) in an image of ``shape``."""
    height, width = shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    x1, y1, x2, y2 = box
    mask[round(y1 * height) : round(y2 * height), round(x1 * width) : round(x2 * width)] = True
    return mask


def test_a_zone_tints_the_inside_of_its_polygon_and_nothing_far_outside():
    image = open_photo("dog")
    plain = _pixels(annotate(image, []))
    drawn = _pixels(annotate(image, [], [Outline("alert", U_ZONE)]))
    changed = np.abs(drawn - plain).sum(axis=2) > 0
    margin = 0.02  # a few pixels either side of the outline
    base = _rect(changed.shape, (0.2 + margin, 0.55 + margin, 0.8 - margin, 0.8 - margin))
    arm = _rect(changed.shape, (0.2 + margin, 0.2 + margin, 0.35 - margin, 0.55))
    assert changed[base].mean() > 0.95 and changed[arm].mean() > 0.95
    # the notch between the arms and everything around the U stay as they were
    notch = _rect(changed.shape, (0.35 + margin, 0.0, 0.65 - margin, 0.55 - margin))
    around = ~_rect(changed.shape, (0.2 - margin, 0.2 - margin, 0.8 + margin, 0.8 + margin))
    assert not changed[notch].any() and not changed[around].any()
    # the fill is translucent: the photo still shows through
    assert np.abs(drawn - plain)[base].max() < 128


def test_alert_and_ignore_zones_differ_and_lie_under_the_boxes():
    frame = Image.new("RGB", (400, 300), (128, 128, 128))
    square = ((0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9))
    alert = annotate(frame, [], [Outline("alert", square)])
    ignore = annotate(frame, [], [Outline("ignore", square)])
    assert alert.getpixel((200, 150)) != ignore.getpixel((200, 150)) != (128, 128, 128)
    assert alert.getpixel((200, 150)) != (128, 128, 128)
    assert alert.getpixel((5, 5)) == ignore.getpixel((5, 5)) == (128, 128, 128)
    box = (100, 100, 300, 250)
    boxed = annotate(frame, [det("person", 0.9, box)], [Outline("alert", square)])
    assert boxed.getpixel((200, 249)) == COLOURS["person"]  # the box's edge, over the zone
    assert boxed.getpixel((200, 200)) == alert.getpixel((200, 200))  # inside the box: the tint
