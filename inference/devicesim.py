"""A stand-in for a fast accelerator, for sizing the host path (bench/deep_worker.py).

It follows the model contract; ``predict`` costs a fixed time per batch plus a little per
frame (by default 3 ms + 0.05 ms per frame, about what NanoDet-416 costs on a data-centre
GPU) and sleeps meanwhile, so the GIL is free as during a real device call. It finds
nothing. Chosen with ``DEEP_MODEL=devicesim``; never the default.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from PIL import Image

from inference.contract import Detection, Model
from inference.nanodet import Letterboxed, letterbox


class DeviceSim(Model[Letterboxed, int]):
    name = "devicesim"

    def __init__(
        self,
        input_size: tuple[int, int] = (416, 416),
        batch_ms: float = 3.0,
        frame_ms: float = 0.05,
    ) -> None:
        self.input_size = input_size
        self.batch_ms = batch_ms
        self.frame_ms = frame_ms

    def setup(self, device: object = None, warmup_batch: int = 1) -> None:
        import torch

        self.device = torch.device("cpu")

    def preprocess(self, image: Image.Image) -> Letterboxed:
        return letterbox(image, self.input_size)

    def predict(self, items: Sequence[Letterboxed]) -> int:
        time.sleep((self.batch_ms + self.frame_ms * len(items)) / 1000.0)
        return len(items)

    def postprocess(self, raw: int, items: Sequence[Letterboxed]) -> list[list[Detection]]:
        return [[] for _ in range(raw)]
