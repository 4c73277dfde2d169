"""NanoDet on real photos: the right objects, in source pixels, batch-independent."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from inference.boxes import batched_nms, box_iou, nms
from inference.nanodet import NanoDet
from tests.photos import blank_frame, noise_frame, open_photo


@pytest.fixture(scope="module")
def detector() -> NanoDet:
    model = NanoDet()
    model.setup("cpu")
    return model


def labels(detections) -> set[str]:
    return {d.label for d in detections}


def best(detections, label):
    return max((d for d in detections if d.label == label), key=lambda d: d.score)


def test_finds_the_person_in_a_photo_of_a_person(detector):
    person = best(detector.detect([open_photo("person")])[0], "person")
    assert person.score > 0.4
    # The woman stands right of centre in the 640x424 frame.
    x1, y1, x2, y2 = person.box
    assert 150 < x1 < 200 and 240 < x2 < 290 and y1 < 110 and y2 > 340


def test_finds_the_dog_in_a_dog_photo(detector):
    found = detector.detect([open_photo("dog")])[0]
    dog = best(found, "dog")
    assert dog.score > 0.5
    x1, y1, x2, y2 = dog.box
    assert x1 < 160 and y1 < 240 and x2 > 280 and y2 > 480  # lower left of the 768x576 frame
    assert "bicycle" in labels(found)


@pytest.mark.parametrize("name,label", [("giraffe", "giraffe"), ("eagle", "bird")])
def test_finds_animals_in_other_photos(detector, name, label):
    assert label in labels(detector.detect([open_photo(name)])[0])


@pytest.mark.parametrize(
    "frame",
    [blank_frame(), blank_frame(value=128), noise_frame(), noise_frame(seed=7)],
    ids=["black", "grey", "noise", "noise7"],
)
def test_nothing_above_threshold_in_blank_or_noise_frames(detector, frame):
    assert detector.detect([frame])[0] == []


def test_boxes_are_in_source_pixels_whatever_the_resolution(detector):
    image = open_photo("dog")
    small = detector.detect([image])[0]
    large = detector.detect([image.resize((image.width * 2, image.height * 2))])[0]
    dog_small, dog_large = best(small, "dog"), best(large, "dog")
    assert [v * 2 for v in dog_small.box] == pytest.approx(dog_large.box, abs=6)
    for det in large:
        x1, y1, x2, y2 = det.box
        assert 0 <= x1 < x2 <= image.width * 2 and 0 <= y1 < y2 <= image.height * 2


def test_a_batch_gives_the_same_detections_as_single_runs(detector):
    images = [open_photo(n) for n in ("dog", "person", "giraffe", "horses", "eagle")]
    images.append(noise_frame())
    batched = detector.detect(images)
    assert len(batched) == len(images)
    for image, together in zip(images, batched, strict=True):
        alone = detector.detect([image])[0]
        assert [d.label for d in together] == [d.label for d in alone]
        for a, b in zip(together, alone, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.box == pytest.approx(b.box, abs=1e-2)


def test_an_empty_batch_gives_no_results(detector):
    assert detector.detect([]) == []


def test_grayscale_and_rgba_images_are_accepted(detector):
    image = open_photo("person")
    for mode in ("L", "RGBA"):
        assert "person" in labels(detector.detect([image.convert(mode)])[0])


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        NanoDet(input_size=(400, 416))


def test_predict_before_setup_is_a_clear_error():
    with pytest.raises(RuntimeError, match="setup"):
        NanoDet().detect([Image.new("RGB", (32, 32))])


def test_nms_keeps_the_best_of_overlapping_boxes_and_separate_ones():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]


def test_class_aware_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8])
    assert sorted(batched_nms(boxes, scores, torch.tensor([0, 1]), 0.5).tolist()) == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([3, 3]), 0.5).tolist() == [0]


def test_box_iou_of_identical_and_disjoint_boxes():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [1.0, 0.0, 3.0, 2.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 0.0, 1 / 3])
