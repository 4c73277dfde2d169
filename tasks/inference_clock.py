"""A model wrapper that adds up the time one deep batch spends in inference, for the
``inference_s`` of its ``worker_metrics`` record (tasks/records.py).

Inference is ``run_batch``: the device's forward pass and the postprocessing back to
detections. Fetching, decoding and letterboxing run on the pipeline's threads meanwhile
and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inference.contract import Detection, Item, Model, Raw

if TYPE_CHECKING:
    import torch
    from PIL import Image


class InferenceClock(Model[Item, Raw]):
    """``model`` itself to the pipeline; ``seconds`` is the time spent in ``run_batch``."""

    def __init__(self, model: Model[Item, Raw]) -> None:
        self.model = model
        self.name = model.name
        self.seconds = 0.0

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self.model.device

    def __getattr__(self, attribute: str) -> Any:  # the rest of the model, e.g. input_size
        if attribute == "model":  # not set yet: never recurse
            raise AttributeError(attribute)
        return getattr(self.model, attribute)

    def setup(self, device: str | torch.device | None = None) -> None:
        self.model.setup(device)

    def preprocess(self, image: Image.Image) -> Item:
        return self.model.preprocess(image)

    def predict(self, items: Sequence[Item]) -> Raw:
        return self.model.predict(items)

    def postprocess(self, raw: Raw, items: Sequence[Item]) -> list[list[Detection]]:
        return self.model.postprocess(raw, items)

    def run_batch(self, items: Sequence[Item]) -> list[list[Detection]]:
        start = time.perf_counter()
        try:
            return self.model.run_batch(items)
        finally:
            self.seconds += time.perf_counter() - start
