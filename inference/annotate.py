"""Draw detections on a frame: the snapshot attached to alerts and written by the CLI.

Snapshots are drawn at the source size, thumbnailed to at most 960 px a side and seen about
360 px wide on a phone, so sizes scale with the frame's width: the text is at least 1/30 of
it tall (about 12 px on that phone). Label tags never overlap each other or leave the frame,
and the best-scoring label is always shown: ``layout_tags`` places tags best first, each in
the first free place around its box, and drops only the weakest when a frame is full.

A camera's activity zones are drawn first, under the boxes: a translucent fill and an
outline, one colour for alert zones and another for ignore zones, so the picture shows
where the camera listens and where it does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from inference.contract import Detection
from inference.labels import group_of

# One colour per presence group so a glance tells person from vehicle from animal.
COLOURS = {"person": (230, 57, 70), "vehicle": (29, 120, 230), "animal": (46, 170, 90)}
OTHER_COLOUR = (250, 190, 30)
TEXT_COLOUR = (255, 255, 255)
# Zones by kind: colours none of the groups' boxes use, so a zone never reads as a box.
ZONE_COLOURS = {"alert": (0, 200, 220), "ignore": (120, 120, 140)}
ZONE_FILL_ALPHA = 56  # of 255: the scene stays readable through the fill

# Text height as a share of the frame's width: 1/28 leaves a margin over the 1/30 that
# reads at 360 px on a phone.
TEXT_HEIGHT_PER_WIDTH = 1 / 28
MIN_TEXT_HEIGHT = 10  # pixels; below this the default font stops being legible at all
SAMPLE_TEXT = "Agy0"  # ascender, descender and digit: the full height of any tag's text

TextSize = Callable[[str], tuple[int, int]]


@dataclass(frozen=True)
class TagRect:
    """Where one detection's tag goes: ``box`` is [x1, y1, x2, y2) in frame pixels."""

    index: int  # position of the detection in the list given to ``layout_tags``
    text: str
    box: tuple[int, int, int, int]

    def intersects(self, other: TagRect) -> bool:
        """Whether the two tags share any pixel (touching edges do not)."""
        return _overlaps(self.box, other.box)


class ZoneShape(Protocol):
    """A zone to draw: ``kind`` "alert" or "ignore", ``polygon`` its points in normalised
    frame coordinates (0..1)."""

    @property
    def kind(self) -> str: ...

    @property
    def polygon(self) -> Sequence[tuple[float, float]]: ...


def tag_text(detection: Detection) -> str:
    return f"{detection.label} {detection.score:.2f}"


def text_variants(detection: Detection, best: bool = False) -> list[str]:
    """The texts to try, longest first: with the score, the label alone, and for the best
    detection, which must show, its label cut short for frames narrower than the label."""
    label = detection.label
    shorter = [label[:n] for n in range(len(label) - 1, 0, -1)] if best else []
    return [tag_text(detection), label, *shorter]


def layout_tags(
    detections: Sequence[Detection], image_size: tuple[int, int], text_size: TextSize
) -> list[TagRect]:
    """Tag places for ``detections`` in a frame of ``image_size`` (width, height), best first.

    ``text_size`` gives a tag's (width, height) for a text, padding included. Each tag, best
    score first, takes the first free place: above its box, inside its top, below it,
    inside its bottom (slid sideways into the frame); else the nearest free place stacked
    down or up from those; else the free place nearest its box anywhere in the frame; and
    failing all that, the label alone. Tags that still find no room are left out, so the
    weakest go first and the best, placed on an empty frame, always shows (cut short only
    if the frame is narrower than its label).
    """
    width, height = image_size
    order = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    placed: list[TagRect] = []
    for rank, index in enumerate(order):
        det = detections[index]
        for text in text_variants(det, best=rank == 0):
            w, h = text_size(text)
            if w > width or h > height:
                continue  # this text cannot fit the frame at all; try a shorter one
            spot = _find_spot(det.box, (w, h), (width, height), [t.box for t in placed])
            if spot is not None:
                x, y = spot
                placed.append(TagRect(index, text, (x, y, x + w, y + h)))
                break
    return placed


def font_for(image_size: tuple[int, int]) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The default font at a size whose text is at least 1/28 of the frame's width tall."""
    target = max(MIN_TEXT_HEIGHT, round(image_size[0] * TEXT_HEIGHT_PER_WIDTH))
    return _font_with_text_height(target)


def text_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    """Height in pixels of the ink of any tag text in ``font``."""
    left, top, right, bottom = font.getbbox(SAMPLE_TEXT)
    return math.ceil(bottom - top)  # whole pixels; FreeType may measure in fractions


def tag_padding(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    """Room between a tag's edge and its text."""
    return max(2, text_height(font) // 4)


def tag_measure(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> TextSize:
    """The (width, height) of a tag in ``font``, padding included, for ``layout_tags``."""
    line, pad = text_height(font), tag_padding(font)

    def text_size(text: str) -> tuple[int, int]:
        left, _, right, _ = font.getbbox(text)
        return math.ceil(right - left) + 2 * pad, line + 2 * pad

    return text_size


def draw_zones(image: Image.Image, zones: Sequence[ZoneShape], width: int) -> None:
    """Draw ``zones`` on ``image`` (RGB, in place): every fill, then every outline, so
    where zones overlap each outline still shows whole."""
    draw = ImageDraw.Draw(image, "RGBA")  # blends the fill's alpha into the frame
    outlines = []
    for zone in zones:
        colour = ZONE_COLOURS.get(zone.kind, ZONE_COLOURS["ignore"])
        points = [(x * image.width, y * image.height) for x, y in zone.polygon]
        draw.polygon(points, fill=(*colour, ZONE_FILL_ALPHA))
        outlines.append((points, colour))
    for points, colour in outlines:
        draw.line([*points, points[0]], fill=colour, width=width, joint="curve")


def annotate(
    image: Image.Image, detections: Sequence[Detection], zones: Sequence[ZoneShape] = ()
) -> Image.Image:
    """A copy of ``image`` with the camera's ``zones`` under each detection's box and
    "label score" tag."""
    out = image.convert("RGB")
    outline = max(2, round(out.width / 240))
    if zones:
        draw_zones(out, zones, max(1, outline // 2))
    draw = ImageDraw.Draw(out)
    font = font_for(out.size)
    ink_top = font.getbbox(SAMPLE_TEXT)[1]
    pad = tag_padding(font)

    def colour(det: Detection) -> tuple[int, int, int]:
        return COLOURS.get(group_of(det.label) or "", OTHER_COLOUR)

    # Weakest first, so where boxes cross, the best one's outline is on top.
    for det in sorted(detections, key=lambda d: d.score):
        x1, y1, x2, y2 = det.box
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colour(det), width=outline)
    # Tags after every box so no outline crosses a label; they never overlap each other.
    for tag in reversed(layout_tags(detections, out.size, tag_measure(font))):
        x1, y1, x2, y2 = tag.box
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour(detections[tag.index]))
        left = font.getbbox(tag.text)[0]
        draw.text((x1 + pad - left, y1 + pad - ink_top), tag.text, fill=TEXT_COLOUR, font=font)
    return out


# -- layout helpers ----------------------------------------------------------------------


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _find_spot(
    box: Sequence[float],
    size: tuple[int, int],
    frame: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int] | None:
    """Top-left corner of a free ``size`` rectangle for a tag of ``box``, or None."""
    (w, h), (width, height) = size, frame
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    x = min(max(x1, 0), width - w)  # left-aligned with the box, slid into the frame
    anchors = [(x, y) for y in (y1 - h, y1, y2, y2 - h) if 0 <= y <= height - h]
    if not anchors:  # a box (or frame) barely taller than a tag: start at the frame's top
        anchors = [(x, 0)]

    def free(px: int, py: int) -> bool:
        rect = (px, py, px + w, py + h)
        return not any(_overlaps(rect, t) for t in taken)

    for ax, ay in anchors:
        if free(ax, ay):
            return ax, ay
    stacked = [
        (abs(y - ay), rank, (ax, y))
        for rank, (ax, ay) in enumerate(anchors)
        for y in (_slide(ax, ay, w, h, height, taken, +1), _slide(ax, ay, w, h, height, taken, -1))
        if y is not None
    ]
    if stacked:
        return min(stacked)[2]
    return _nearest_free(anchors[0], size, frame, taken)


def _slide(
    x: int, y: int, w: int, h: int, height: int, taken: list[tuple[int, int, int, int]], step: int
) -> int | None:
    """Move a tag down (``step`` +1) or up (-1) past the tags in its way until it is free."""
    while 0 <= y <= height - h:
        blockers = [t for t in taken if _overlaps((x, y, x + w, y + h), t)]
        if not blockers:
            return y
        y = max(t[3] for t in blockers) if step > 0 else min(t[1] for t in blockers) - h
    return None


def _nearest_free(
    anchor: tuple[int, int],
    size: tuple[int, int],
    frame: tuple[int, int],
    taken: list[tuple[int, int, int, int]],
) -> tuple[int, int] | None:
    """The free place nearest ``anchor``, if the frame has any.

    Any free place can slide left and then up until it meets the frame or a tag, so the
    frame's edges and the tags' right and bottom edges are enough candidates to find one;
    the tags' other edges and the anchor add the places closest to it.
    """
    (w, h), (width, height) = size, frame
    rects = np.array(taken, dtype=np.int64).reshape(-1, 4)
    xs = np.unique(np.concatenate(([0, width - w, anchor[0]], rects[:, 2], rects[:, 0] - w)))
    ys = np.unique(np.concatenate(([0, height - h, anchor[1]], rects[:, 3], rects[:, 1] - h)))
    xs = xs[(xs >= 0) & (xs <= width - w)]
    ys = ys[(ys >= 0) & (ys <= height - h)]
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    gx, gy = gx.reshape(-1, 1), gy.reshape(-1, 1)
    hit = (
        (gx < rects[:, 2]) & (rects[:, 0] < gx + w) & (gy < rects[:, 3]) & (rects[:, 1] < gy + h)
    ).any(axis=1)
    if hit.all():
        return None
    distance = np.abs(gx[:, 0] - anchor[0]) + np.abs(gy[:, 0] - anchor[1])
    distance[hit] = np.iinfo(np.int64).max
    best = int(distance.argmin())
    return int(gx[best, 0]), int(gy[best, 0])


@lru_cache(maxsize=64)
def _font_with_text_height(target: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = target
    font = ImageFont.load_default(size=size)
    # Ink height is about 0.9 of the nominal size for the default font; grow to the target.
    while text_height(font) < target and size < 4 * target:
        size += 1
        font = ImageFont.load_default(size=size)
    return font
