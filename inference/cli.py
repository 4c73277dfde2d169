"""Command line: ``python -m inference detect IMAGE_OR_URL... [options]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from inference.annotate import annotate
from inference.contract import Detection
from inference.errors import ImageSourceError
from inference.fetch import load_source
from inference.lite import LiteResult, LiteScorer
from inference.nanodet import DEFAULT_SCORE_THRESHOLD, NanoDet
from inference.pipeline import BatchPipeline, ImageResult
from inference.urls import command_line_source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    detect = commands.add_parser("detect", help="find objects in images (paths or URLs)")
    detect.add_argument("images", nargs="+", metavar="IMAGE_OR_URL")
    detect.add_argument(
        "--lite",
        action="store_true",
        help="use the one-core lite scorer instead of the deep detector",
    )
    detect.add_argument("--json", action="store_true", help="one JSON object per line")
    detect.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="default: cuda when available, else cpu",
    )
    detect.add_argument("--batch", type=int, default=16, metavar="N", help="batch size")
    detect.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_SCORE_THRESHOLD,
        help="minimum score of a detection (deep detector)",
    )
    detect.add_argument(
        "--annotate",
        type=Path,
        metavar="DIR",
        help="write a copy of each image with boxes and labels drawn",
    )
    return parser


def _results(args: argparse.Namespace) -> Iterator[tuple[ImageResult, LiteResult | None]]:
    sources = [command_line_source(arg) for arg in args.images]  # a URL, else a local file
    if args.lite:
        scorer = LiteScorer()
        scorer.setup()
        for source in sources:
            try:
                image = load_source(source)
            except ImageSourceError as exc:
                yield ImageResult(source, error=exc), None
                continue
            lite = scorer.score_image(image)
            yield ImageResult(source, lite.detections, image_size=image.size, image=image), lite
        return
    model = NanoDet(score_threshold=args.threshold)
    model.setup(args.device)
    pipeline = BatchPipeline(model, batch_size=args.batch, keep_images=bool(args.annotate))
    for result in pipeline.run(sources):
        yield result, None


def _print(result: ImageResult, lite: LiteResult | None, as_json: bool) -> None:
    if as_json:
        record = result.to_dict()
        if lite is not None:
            record["lite"] = {k: round(v, 4) for k, v in lite.scores.items()}
        print(json.dumps(record), flush=True)
        return
    if result.error is not None:
        print(f"{result.source}: refused ({result.error.code}): {result.error}", flush=True)
        return
    found = ", ".join(_describe(d) for d in result.detections) or "nothing"
    line = f"{result.source}: {found}"
    if lite is not None:
        line += "  [" + " ".join(f"{k}={v:.2f}" for k, v in lite.scores.items()) + "]"
    print(line, flush=True)


def _describe(detection: Detection) -> str:
    """``bird 0.68``, or ``bird 0.68 (or dog 0.42)`` when the detector had runners-up."""
    text = f"{detection.label} {detection.score:.2f}"
    if detection.alternatives:
        others = ", ".join(f"{label} {score:.2f}" for label, score in detection.alternatives)
        text += f" (or {others})"
    return text


def _write_annotated(result: ImageResult, image: Image.Image, directory: Path, index: int) -> None:
    stem = Path(str(result.source).split("?")[0]).stem or "image"
    path = directory / f"{index:03d}-{stem}.jpg"
    annotate(image, result.detections).save(path, quality=90)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        print("--batch must be at least 1", file=sys.stderr)
        return 2
    if args.annotate:
        args.annotate.mkdir(parents=True, exist_ok=True)
    failures = 0
    for index, (result, lite) in enumerate(_results(args)):
        _print(result, lite, args.json)
        failures += not result.ok
        # Images are kept whenever --annotate is given; refused sources have none.
        if args.annotate and result.ok and result.image is not None:
            _write_annotated(result, result.image, args.annotate, index)
    return 1 if failures else 0
