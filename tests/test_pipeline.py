"""The batching pipeline: order kept, bad images isolated, decode overlapped with inference."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from PIL import Image

from inference.contract import Detection, Model, ModelContractError
from inference.images import encode_jpeg
from inference.nanodet import NanoDet
from inference.pipeline import BatchPipeline
from tests.photos import open_photo, photo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def detector() -> NanoDet:
    model = NanoDet()
    model.setup("cpu")
    return model


class RecordingModel(Model):
    """A real (trivial) model that records when each stage ran, to observe overlap."""

    name = "recording"

    def __init__(self, infer_s: float = 0.0, drop_one: bool = False):
        self.infer_s = infer_s
        self.drop_one = drop_one
        self.events: list[tuple[str, float, str]] = []
        self.lock = threading.Lock()

    def setup(self, device=None) -> None:
        pass

    def preprocess(self, image: Image.Image):
        with self.lock:
            self.events.append(("decoded", time.perf_counter(), threading.current_thread().name))
        return image.size

    def predict(self, items: Sequence):
        self.events.append(("infer_start", time.perf_counter(), ""))
        time.sleep(self.infer_s)
        self.events.append(("infer_end", time.perf_counter(), ""))
        return items

    def postprocess(self, raw, items) -> list[list[Detection]]:
        out = [[Detection("size", 1.0, (0.0, 0.0, float(w), float(h)))] for w, h in raw]
        return out[:-1] if self.drop_one else out


def test_results_come_back_in_input_order_with_sources(detector):
    sources = [photo("dog"), photo("person"), photo("giraffe")] * 2
    results = list(BatchPipeline(detector, batch_size=4).run(sources))
    assert [r.source for r in results] == sources
    assert [any(d.label == "dog" for d in r.detections) for r in results] == [
        True,
        True,
        False,
        True,
        True,
        False,
    ]


def test_pipeline_matches_direct_detection_from_bytes_paths_and_images(detector):
    image = open_photo("person")
    direct = detector.detect([image])[0]
    sources = [photo("person"), encode_jpeg(image, quality=95), photo("person")]
    for result in BatchPipeline(detector, batch_size=2).run(sources):
        assert result.ok and {d.label for d in result.detections} >= {"person", "dog"}
        assert result.image_size == image.size
    from_path = next(BatchPipeline(detector).run([photo("person")]))
    assert [d.label for d in from_path.detections] == [d.label for d in direct]


def test_a_bad_image_fails_alone_and_the_rest_of_its_batch_is_analysed(detector):
    good = photo("dog").read_bytes()
    sources = [good, good[: len(good) // 2], b"", b"<svg/>", "file:///etc/passwd", good]
    results = list(BatchPipeline(detector, batch_size=8).run(sources))
    assert [r.ok for r in results] == [True, False, False, False, False, True]
    assert [r.error.code for r in results if not r.ok] == [
        "image_corrupt",
        "image_empty",
        "image_format_unsupported",
        "url_scheme_unsupported",
    ]
    assert results[0].detections == results[-1].detections


@pytest.mark.unit
def test_next_batch_is_decoded_while_the_current_one_is_inferred():
    model = RecordingModel(infer_s=1.0)
    sources = [photo("dog")] * 6
    list(BatchPipeline(model, batch_size=2, workers=2).run(sources))
    first_infer_end = next(t for kind, t, _ in model.events if kind == "infer_end")
    second_infer_start = [t for kind, t, _ in model.events if kind == "infer_start"][1]
    decoded = sorted(t for kind, t, _ in model.events if kind == "decoded")
    # Batch two (images 3 and 4) is decoded while batch one's 1 s of inference runs (it
    # may even be ready before that inference starts), not after it.
    assert decoded[3] < first_infer_end <= second_infer_start
    assert all(name.startswith("decode") for kind, _, name in model.events if kind == "decoded")


@pytest.mark.unit
def test_a_model_returning_too_few_results_is_a_contract_error():
    with pytest.raises(ModelContractError, match="1 results for 2 images"):
        list(BatchPipeline(RecordingModel(drop_one=True), batch_size=2).run([photo("dog")] * 2))


def test_batch_size_must_be_positive(detector):
    with pytest.raises(ValueError):
        BatchPipeline(detector, batch_size=0)


def test_no_sources_give_no_results(detector):
    assert list(BatchPipeline(detector).run([])) == []


def test_large_jpeg_decoded_at_reduced_scale_still_reports_source_pixels(detector):
    image = open_photo("dog")
    big = image.resize((image.width * 3, image.height * 3))
    result = next(BatchPipeline(detector).run([encode_jpeg(big, quality=92)]))
    assert result.image_size == big.size
    dog = max((d for d in result.detections if d.label == "dog"), key=lambda d: d.score)
    ref = max((d for d in detector.detect([image])[0] if d.label == "dog"), key=lambda d: d.score)
    assert dog.box == pytest.approx([v * 3 for v in ref.box], rel=0.08, abs=12)
