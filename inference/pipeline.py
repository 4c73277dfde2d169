"""The batching pipeline the GPU worker runs: fetch and decode ahead, infer in batches.

While the device runs batch *n*, a small thread pool fetches, decodes and letterboxes the
images of batch *n + 1* (Pillow and the socket reads release the GIL), so the device does
not wait on I/O. One bad image yields an error result for that image only.

Sources are typed (see ``load_source``): bytes are decoded, strings are http(s) URLs that
are fetched or refused, and only ``pathlib.Path`` objects are read from the local disk.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic

from PIL import Image

from inference.contract import Detection, Item, Model
from inference.errors import ImageSourceError
from inference.fetch import load_source

DEFAULT_BATCH_SIZE = 16

# A source made ready for the model (its input item and the decoded image), or refused.
Prepared = tuple[Item, Image.Image] | ImageSourceError


@dataclass
class ImageResult:
    """The outcome for one source: detections, or the error that refused it."""

    source: Source
    detections: list[Detection] = field(default_factory=list)
    error: ImageSourceError | None = None
    image_size: tuple[int, int] | None = None
    image: Image.Image | None = None  # kept only when the pipeline is asked to

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if isinstance(self.source, str | os.PathLike):
            name = os.fspath(self.source)
        else:  # raw bytes: a short hint, not the image
            name = str(self.source)[:64]
        if self.error is not None:
            return {"image": name, "error": {"code": self.error.code, "message": str(self.error)}}
        return {"image": name, "detections": [d.to_dict() for d in self.detections]}


# Each source is decoded and fetched by ``load_source``, which tells bytes, URLs and paths
# apart; the pipeline hands it back unchanged in its result.
Source = Any


class BatchPipeline(Generic[Item]):
    """Run ``model`` over image sources in batches, overlapping decode with inference."""

    def __init__(
        self,
        model: Model[Item, Any],
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int | None = None,
        keep_images: bool = False,
        **source_options: Any,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model = model
        self.batch_size = batch_size
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.keep_images = keep_images
        if not keep_images and hasattr(model, "input_size"):
            # Kept images are drawn on at full size; otherwise decode only what the model needs.
            source_options.setdefault("draft_size", model.input_size)
        self.source_options = source_options

    def _prepare(self, source: Source) -> tuple[Item, Image.Image] | ImageSourceError:
        try:
            image = load_source(source, **self.source_options)
        except ImageSourceError as exc:
            return exc
        return self.model.preprocess(image), image

    def run(self, sources: Iterable[Source]) -> Iterator[ImageResult]:
        """Yield one result per source, in input order."""
        chunks = _chunked(iter(sources), self.batch_size)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:

            def submit(chunk: list[Source]) -> list[tuple[Source, Future[Prepared[Item]]]]:
                return [(src, pool.submit(self._prepare, src)) for src in chunk]

            pending = submit(next(chunks, []))
            while pending:
                current = [(src, fut.result()) for src, fut in pending]
                pending = submit(next(chunks, []))  # decode ahead while the device works
                yield from self._infer(current)

    def _infer(self, prepared: list[tuple[Source, Prepared[Item]]]) -> Iterator[ImageResult]:
        ready = {i: p for i, (_, p) in enumerate(prepared) if not isinstance(p, ImageSourceError)}
        batch = self.model.run_batch([item for item, _ in ready.values()])
        detections = dict(zip(ready, batch, strict=True))
        for i, (source, outcome) in enumerate(prepared):
            if isinstance(outcome, ImageSourceError):
                yield ImageResult(source, error=outcome)
                continue
            image = outcome[1]
            size = image.info.get("source_size", image.size)
            yield ImageResult(
                source, detections[i], image_size=size, image=image if self.keep_images else None
            )


def _chunked(items: Iterator[Source], size: int) -> Iterator[list[Source]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
