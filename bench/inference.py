"""Detector throughput: bare model vs the batching pipeline, and the lite scorer's cost.

Prints one JSON line. ``bare`` runs the model on frames already letterboxed in memory
(inference, box decoding and NMS); ``pipeline`` starts from JPEG bytes and includes decoding
and letterboxing, overlapped with inference. Both are measured in the same run, alternating,
so their ratio holds on a noisy machine.

    python bench/inference.py [--device cpu|cuda] [--images 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.images import encode_jpeg  # noqa: E402
from inference.labels import PRESENCE_GROUPS  # noqa: E402
from inference.lite import LiteScorer, presence_scores  # noqa: E402
from inference.nanodet import NanoDet  # noqa: E402
from inference.pipeline import BatchPipeline  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
PRESENT = 0.35


def photos() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.jpg"))]


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def bare_ips(model: NanoDet, items: list, batch: int) -> float:
    def run():
        for i in range(0, len(items), batch):
            model.run_batch(items[i : i + batch])

    return len(items) / timed(run)


def pipeline_ips(pipeline: BatchPipeline, frames: list[bytes]) -> float:
    return len(frames) / timed(lambda: sum(1 for _ in pipeline.run(frames)))


def lite_figures(images: list[Image.Image], deep: NanoDet) -> dict:
    """Lite cost per 640x480 JPEG frame on one thread, and agreement with the deep model."""
    lite = LiteScorer(threads=1)
    threads = torch.get_num_threads()
    lite.setup()
    frames = [encode_jpeg(im.resize((640, 480)), quality=90) for im in images]
    for frame in frames:
        lite.score(frame)
    costs = [lite.score(frames[i % len(frames)]).elapsed_ms for i in range(60)]
    agree = total = 0
    for im in images:
        deep_groups = {g for g, s in presence_scores(deep.detect([im])[0]).items() if s >= PRESENT}
        lite_groups = {g for g, s in lite.score_image(im).scores.items() if s >= PRESENT}
        for group in PRESENCE_GROUPS:
            total += 1
            agree += (group in deep_groups) == (group in lite_groups)
    torch.set_num_threads(threads)
    return {
        "lite_ms_per_frame": round(statistics.median(costs), 2),
        "lite_ms_p95": round(sorted(costs)[int(0.95 * len(costs))], 2),
        "lite_agreement": round(agree / total, 3),
        "lite_agreement_checks": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default=None)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    images = photos()
    frames = [encode_jpeg(images[i % len(images)], quality=90) for i in range(args.images)]
    model = NanoDet()
    model.setup(args.device, warmup_batch=16)
    items = [model.preprocess(Image.open(__import__("io").BytesIO(f))) for f in frames]
    pipeline = BatchPipeline(model, batch_size=16)

    b1, b16, pipe = [], [], []
    bare_ips(model, items[:16], 1)  # warm both paths before timing
    pipeline_ips(pipeline, frames[:16])
    for _ in range(args.rounds):  # alternate so drift on the machine hits both alike
        b1.append(bare_ips(model, items[: max(16, args.images // 4)], 1))
        b16.append(bare_ips(model, items, 16))
        pipe.append(pipeline_ips(pipeline, frames))

    bare16, pipe16 = statistics.median(b16), statistics.median(pipe)
    device = model.device
    figures = {
        "bench": "inference",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "images": args.images,
        "bare_b1_ips": round(statistics.median(b1), 2),
        "bare_b16_ips": round(bare16, 2),
        "pipeline_b16_ips": round(pipe16, 2),
        "pipeline_over_bare": round(pipe16 / bare16, 3),
        "b16_over_b1": round(bare16 / statistics.median(b1), 2),
    }
    figures.update(lite_figures(images, model))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
