"""Draw detections on a frame: the snapshot attached to alerts and written by the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from inference.contract import Detection
from inference.labels import group_of

# One colour per presence group so a glance tells person from vehicle from animal.
COLOURS = {"person": (230, 57, 70), "vehicle": (29, 120, 230), "animal": (46, 170, 90)}
OTHER_COLOUR = (250, 190, 30)


def annotate(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """A copy of ``image`` with each detection's box and "label score" drawn on it."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(out.size) / 30)))
    for det in detections:
        colour = COLOURS.get(group_of(det.label) or "", OTHER_COLOUR)
        x1, y1, x2, y2 = det.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        lift = bottom - top + 2 * width
        ty = y1 - lift if y1 - lift >= 0 else y1
        draw.rectangle((x1, ty, x1 + right - left + 2 * width, ty + lift), fill=colour)
        draw.text((x1 + width, ty + width - (top - y1)), text, fill=(255, 255, 255), font=font)
    return out
