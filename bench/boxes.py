"""Box accuracy against the hand-labelled boxes of the test photos (``boxes.json``).

Prints one JSON line: for every labelled object, the IoU of the best detection of its
presence group, with anchors at the cell centres (``iou``, what the detector does) and,
as the baseline measured in the same run, at the cell corners (``iou_corner``, boxes half a
stride up and to the left), at the deep input size and at the lite scorer's.

    python bench/boxes.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.boxes import box_iou  # noqa: E402
from inference.contract import Detection  # noqa: E402
from inference.labels import group_of  # noqa: E402
from inference.lite import LITE_SCORE_THRESHOLD, LITE_SIZE  # noqa: E402
from inference.nanodet import NanoDet  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"


class CornerAnchors(NanoDet):
    """The same detector with every anchor moved to its cell's top-left corner."""

    def _grid(self, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        centres, strides = super()._grid(width, height)
        return centres - strides[:, None] / 2, strides


def best_iou(box: list[float], label: str, detections: list[Detection]) -> float:
    same = [d.box for d in detections if group_of(d.label) == group_of(label)]
    if not same:
        return 0.0
    return round(float(box_iou(torch.tensor([box]), torch.tensor(same)).max()), 3)


def input_size(size: tuple[int, int], image: Image.Image) -> tuple[int, int]:
    """The lite scorer turns its input to match a portrait frame."""
    w, h = size
    return (min(w, h), max(w, h)) if image.height > image.width else (max(w, h), min(w, h))


def measure(size: tuple[int, int] | None) -> list[dict]:
    labels = json.loads((PHOTOS / "boxes.json").read_text())
    models: dict[tuple[str, tuple[int, int]], NanoDet] = {}
    rows = []
    for record in labels:
        with Image.open(PHOTOS / record["file"]) as opened:
            image = opened.convert("RGB")
        row = dict(record)
        for name, cls in (("iou", NanoDet), ("iou_corner", CornerAnchors)):
            dims = (416, 416) if size is None else input_size(size, image)
            key = (name, dims)
            if key not in models:
                # The lite scorer's own threshold: it reports weaker presence than deep.
                threshold = {} if size is None else {"score_threshold": LITE_SCORE_THRESHOLD}
                models[key] = cls(input_size=dims, **threshold)
                models[key].setup("cpu")
            (found,) = models[key].detect([image])
            row[name] = best_iou(record["box"], record["label"], found)
        rows.append(row)
    return rows


def mean(rows: list[dict], key: str, large: bool) -> float:
    return round(statistics.fmean(r[key] for r in rows if r["large"] == large), 3)


def main() -> None:
    deep, lite = measure(None), measure(LITE_SIZE)
    print(
        json.dumps(
            {
                "bench": "boxes",
                "objects": len(deep),
                "deep_mean_iou_large": mean(deep, "iou", True),
                "deep_mean_iou_large_corner": mean(deep, "iou_corner", True),
                "deep_mean_iou_other": mean(deep, "iou", False),
                "deep_mean_iou_other_corner": mean(deep, "iou_corner", False),
                "lite_mean_iou_large": mean(lite, "iou", True),
                "lite_mean_iou_large_corner": mean(lite, "iou_corner", True),
                "deep": [
                    {k: r[k] for k in ("file", "label", "large", "iou", "iou_corner")} for r in deep
                ],
                "lite": [{k: r[k] for k in ("file", "label", "iou", "iou_corner")} for r in lite],
            }
        )
    )


if __name__ == "__main__":
    main()
