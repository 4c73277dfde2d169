"""The deep worker's host work on one frame: decode once at the size it needs, and draw
the snapshot on that same reduced image.

A 1080p JPEG is decoded at 1/2 scale (960×540): the snapshot's side (``SNAPSHOT_SIDE``)
needs no more, and the model's letterbox (416) needs less. The snapshot is drawn on that
image, with the detections (which are in the source's pixels) scaled to it, and encoded
once; the camera's activity zones, in normalised coordinates, need no scaling. Nothing
here touches the device; these steps run on the worker's host threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic

from PIL import Image

from inference.annotate import ZoneShape, annotate
from inference.contract import Detection, Item, Model
from inference.errors import ImageSourceError
from inference.fetch import load_source
from inference.images import encode_jpeg

SNAPSHOT_SIDE = 960
SNAPSHOT_QUALITY = 85


@dataclass(frozen=True)
class Frame(Generic[Item]):
    """One decoded frame: the model's input, and the reduced image the snapshot is drawn on."""

    item: Item
    image: Image.Image

    @property
    def source_size(self) -> tuple[int, int]:
        size: tuple[int, int] = self.image.info.get("source_size", self.image.size)
        return size


def prepare_frame(
    source: Any, model: Model[Item, Any], **load_options: Any
) -> Frame[Item] | ImageSourceError:
    """Fetch and decode ``source`` (long side at least ``SNAPSHOT_SIDE``), and preprocess it
    for ``model``; a refused source comes back as its error."""
    try:
        image = load_source(source, draft_long_side=SNAPSHOT_SIDE, **load_options)
    except ImageSourceError as exc:
        return exc
    return Frame(model.preprocess(image), image)


def snapshot_jpeg(
    image: Image.Image, detections: Sequence[Detection], zones: Sequence[ZoneShape] = ()
) -> bytes:
    """``image`` with the camera's ``zones`` and the boxes and labels drawn, at most
    ``SNAPSHOT_SIDE`` a side, as JPEG. ``detections`` are in the source's pixels
    (``image.info["source_size"]``)."""
    width, height = image.info.get("source_size", image.size)
    sx, sy = image.width / width, image.height / height
    if (sx, sy) != (1.0, 1.0):
        detections = [
            replace(d, box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy))
            for d in detections
        ]
    drawn = annotate(image, detections, zones)
    drawn.thumbnail((SNAPSHOT_SIDE, SNAPSHOT_SIDE))
    return encode_jpeg(drawn, quality=SNAPSHOT_QUALITY)
