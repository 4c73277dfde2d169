"""The one contract every model follows: ``setup(device)``, a batch in, one result per image.

A model splits its work in three so the batching pipeline can overlap them:
``preprocess`` runs on CPU threads (one image at a time), ``predict`` runs a stacked batch on
the model's device, and ``postprocess`` turns raw outputs back into detections in the
source image's pixels. ``detect`` chains the three for callers that do not need overlap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import torch
    from PIL import Image

# A model's input item (made from one image) and its raw batch output: its own business.
Item = TypeVar("Item")
Raw = TypeVar("Raw")


@dataclass(frozen=True)
class Detection:
    """One object found in an image; ``box`` is [x1, y1, x2, y2] in source pixels.

    ``alternatives`` are the runner-up labels the detector also gave this object, as
    (label, score), best first; ``label`` is the best.
    """

    label: str
    score: float
    box: tuple[float, float, float, float]
    alternatives: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
            "alternatives": [
                {"label": label, "score": round(score, 4)} for label, score in self.alternatives
            ],
        }


class ModelContractError(RuntimeError):
    """A model broke the contract (e.g. returned a result count unlike its input count)."""


class Model(ABC, Generic[Item, Raw]):
    """Base of every detector. Subclasses load weights in ``setup``, never at import.

    Only the models import torch: this contract and ``Detection`` travel to every process,
    the web app's included, without it.
    """

    name: str = "model"
    device: torch.device  # where ``setup`` put the weights

    @abstractmethod
    def setup(self, device: str | torch.device | None = None) -> None:
        """Load weights onto ``device`` (CPU fallback) and warm up."""

    @abstractmethod
    def preprocess(self, image: Image.Image) -> Item:
        """Turn one decoded RGB image into the model's input item (runs on CPU threads)."""

    @abstractmethod
    def predict(self, items: Sequence[Item]) -> Raw:
        """Run one stacked batch on the device."""

    @abstractmethod
    def postprocess(self, raw: Raw, items: Sequence[Item]) -> list[list[Detection]]:
        """Turn raw outputs into exactly one list of detections per input item."""

    def run_batch(self, items: Sequence[Item]) -> list[list[Detection]]:
        if not items:
            return []
        results = self.postprocess(self.predict(items), items)
        if len(results) != len(items):
            raise ModelContractError(f"{self.name}: {len(results)} results for {len(items)} images")
        return results

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Detections for each image, in order."""
        return self.run_batch([self.preprocess(im) for im in images])
