"""The lite scorer: person / vehicle / animal presence on one CPU core.

It serves phones that cannot run their own model. It is the deep detector itself at a
quarter of the pixels (256x192, or 192x256 for portrait frames) on a single thread, so
its labels mean the same as the deep worker's, at a fraction of the cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from inference.contract import Detection
from inference.fetch import ImageSource, load_source
from inference.labels import PRESENCE_GROUPS, group_of
from inference.nanodet import DEFAULT_MODEL_JSON, NanoDet, letterbox

LITE_SIZE = (256, 192)  # width, height for landscape frames; swapped for portrait
LITE_SCORE_THRESHOLD = 0.3


@dataclass
class LiteResult:
    """Presence score per group (0 when absent), the detections behind them, and cost."""

    scores: dict[str, float]
    detections: list[Detection] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "detections": [d.to_dict() for d in self.detections],
            "elapsed_ms": round(self.elapsed_ms, 2),
        }


def presence_scores(detections: list[Detection]) -> dict[str, float]:
    """The best score per presence group among ``detections``."""
    scores = dict.fromkeys(PRESENCE_GROUPS, 0.0)
    for det in detections:
        group = group_of(det.label)
        if group is not None:
            scores[group] = max(scores[group], det.score)
    return scores


class LiteScorer:
    """Cheap CPU presence scoring; ``setup`` pins torch to ``threads`` threads."""

    def __init__(
        self,
        model_json: str | Path = DEFAULT_MODEL_JSON,
        score_threshold: float = LITE_SCORE_THRESHOLD,
        threads: int = 1,
    ):
        self.detector = NanoDet(model_json, LITE_SIZE, score_threshold=score_threshold)
        self.threads = threads

    def setup(self) -> None:
        # torch's thread count is per process; the lite worker is a CPU process of its own.
        torch.set_num_threads(self.threads)
        self.detector.setup("cpu")

    def score_image(self, image: Image.Image) -> LiteResult:
        started = time.perf_counter()
        size = LITE_SIZE if image.width >= image.height else LITE_SIZE[::-1]
        item = letterbox(image, size)
        detections = self.detector.run_batch([item])[0]
        elapsed = (time.perf_counter() - started) * 1000
        return LiteResult(presence_scores(detections), detections, elapsed)

    def score(self, source: ImageSource, **source_options: Any) -> LiteResult:
        """Score an image source (bytes, path or URL); decoding counts in ``elapsed_ms``."""
        started = time.perf_counter()
        source_options.setdefault("draft_size", LITE_SIZE)
        result = self.score_image(load_source(source, **source_options))
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return result
