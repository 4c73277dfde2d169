"""NanoDet on real photos: the right objects, in source pixels, batch-independent."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from inference.boxes import (
    anchor_centres,
    batched_nms,
    box_iou,
    merge_cross_class,
    nms,
    suppress_contained,
)
from inference.contract import Detection
from inference.nanodet import DEFAULT_CROSS_CLASS_IOU, NanoDet
from tests.photos import PHOTO_NAMES, blank_frame, noise_frame, open_photo

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def detector() -> NanoDet:
    model = NanoDet()
    model.setup("cpu")
    return model


def labels(detections) -> set[str]:
    return {d.label for d in detections}


def best(detections, label):
    return max((d for d in detections if d.label == label), key=lambda d: d.score)


@pytest.mark.integration
def test_finds_the_person_in_a_photo_of_a_person(detector):
    person = best(detector.detect([open_photo("person")])[0], "person")
    assert person.score > 0.4
    # The woman stands right of centre in the 640x424 frame.
    x1, y1, x2, y2 = person.box
    assert 150 < x1 < 200 and 240 < x2 < 290 and y1 < 110 and y2 > 340


@pytest.mark.integration
def test_finds_the_dog_in_a_dog_photo(detector):
    found = detector.detect([open_photo("dog")])[0]
    dog = best(found, "dog")
    assert dog.score > 0.5
    x1, y1, x2, y2 = dog.box
    assert x1 < 160 and y1 < 240 and x2 > 280 and y2 > 480  # lower left of the 768x576 frame
    assert "bicycle" in labels(found)


@pytest.mark.integration
@pytest.mark.parametrize("name,label", [("giraffe", "giraffe"), ("eagle", "bird")])
def test_finds_animals_in_other_photos(detector, name, label):
    assert label in labels(detector.detect([open_photo(name)])[0])


@pytest.mark.integration
def test_the_eagle_is_one_bird_with_the_runner_up_label_recorded(detector):
    (eagle,) = detector.detect([open_photo("eagle")])[0]
    assert eagle.label == "bird" and eagle.score > 0.5
    assert all(label != "bird" for label, _ in eagle.alternatives)
    # The detector's second guess for the same box is "dog"; it rides along, weaker.
    assert [label for label, _ in eagle.alternatives] == ["dog"]
    assert eagle.alternatives[0][1] < eagle.score


@pytest.mark.integration
@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_no_photo_has_two_labels_on_one_object(detector, name):
    found = detector.detect([open_photo(name)])[0]
    boxes = torch.tensor([d.box for d in found]).reshape(-1, 4)
    overlaps = box_iou(boxes, boxes)
    for i, a in enumerate(found):
        for j, b in enumerate(found[i + 1 :], start=i + 1):
            if a.label != b.label:
                assert overlaps[i, j] < DEFAULT_CROSS_CLASS_IOU, (a, b)
        scores = [score for _, score in a.alternatives]
        assert scores == sorted(scores, reverse=True) and all(s <= a.score for s in scores)


@pytest.mark.integration
def test_cross_class_merging_follows_its_setting(detector):
    # The grazing horse in person.jpg is scored "cow" and "horse" on boxes at IoU ~0.97.
    image = open_photo("person")
    (animal,) = [d for d in detector.detect([image])[0] if d.label in ("cow", "horse")]
    assert {animal.label, *(label for label, _ in animal.alternatives)} == {"cow", "horse"}
    strict = NanoDet(cross_class_iou=0.99)
    strict.graph = detector.graph
    strict.setup("cpu")
    apart = [d for d in strict.detect([image])[0] if d.label in ("cow", "horse")]
    assert sorted(d.label for d in apart) == ["cow", "horse"]
    assert all(d.alternatives == () for d in apart)


@pytest.mark.integration
@pytest.mark.parametrize(
    "frame",
    [blank_frame(), blank_frame(value=128), noise_frame(), noise_frame(seed=7)],
    ids=["black", "grey", "noise", "noise7"],
)
def test_nothing_above_threshold_in_blank_or_noise_frames(detector, frame):
    assert detector.detect([frame])[0] == []


@pytest.mark.integration
def test_boxes_are_in_source_pixels_whatever_the_resolution(detector):
    image = open_photo("dog")
    small = detector.detect([image])[0]
    large = detector.detect([image.resize((image.width * 2, image.height * 2))])[0]
    dog_small, dog_large = best(small, "dog"), best(large, "dog")
    assert [v * 2 for v in dog_small.box] == pytest.approx(dog_large.box, abs=6)
    for det in large:
        x1, y1, x2, y2 = det.box
        assert 0 <= x1 < x2 <= image.width * 2 and 0 <= y1 < y2 <= image.height * 2


@pytest.mark.integration
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


@pytest.mark.integration
def test_an_empty_batch_gives_no_results(detector):
    assert detector.detect([]) == []


@pytest.mark.integration
def test_grayscale_and_rgba_images_are_accepted(detector):
    image = open_photo("person")
    for mode in ("L", "RGBA"):
        assert "person" in labels(detector.detect([image.convert(mode)])[0])


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        NanoDet(input_size=(400, 416))


@pytest.mark.parametrize(
    "options",
    [
        {"score_threshold": 0.0},
        {"score_threshold": 1.0},
        {"iou_threshold": 0.0},
        {"iou_threshold": 1.5},
        {"cross_class_iou": 0.0},
        {"cross_class_iou": 1.01},
        {"contained_ratio": 0.0},
        {"contained_ratio": 1.2},
    ],
)
def test_thresholds_outside_their_range_are_refused(options):
    with pytest.raises(ValueError):
        NanoDet(**options)


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


def test_anchor_centres_sit_in_the_middle_of_each_cell():
    centres = anchor_centres(2, 3, 16)
    assert centres.tolist() == [
        [8.0, 8.0],
        [24.0, 8.0],
        [40.0, 8.0],
        [8.0, 24.0],
        [24.0, 24.0],
        [40.0, 24.0],
    ]


def box_tensor(*boxes):
    return torch.tensor(boxes, dtype=torch.float32)


def test_cross_class_merge_keeps_the_best_label_and_records_the_others():
    boxes = box_tensor([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 9.5], [50, 50, 60, 60])
    scores = torch.tensor([0.4, 0.7, 0.5, 0.6])
    classes = torch.tensor([16, 14, 15, 2])
    keep, alternatives = merge_cross_class(boxes, scores, classes, 0.8)
    assert keep.tolist() == [1, 3]
    assert alternatives[0] == [(15, pytest.approx(0.5)), (16, pytest.approx(0.4))]
    assert alternatives[1] == []


def test_cross_class_merge_leaves_same_class_and_weak_overlaps_alone():
    boxes = box_tensor([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 7])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # Same class: NMS's business, not this merge's. IoU 0.7 < 0.8: two objects.
    keep, alternatives = merge_cross_class(boxes, scores, torch.tensor([3, 3, 5]), 0.8)
    assert keep.tolist() == [0, 1, 2]
    assert alternatives == [[], [], []]


def test_cross_class_merge_threshold_is_inclusive():
    boxes = box_tensor([0, 0, 10, 10], [0, 0, 10, 8])  # IoU exactly 0.8
    keep, alternatives = merge_cross_class(
        boxes, torch.tensor([0.9, 0.5]), torch.tensor([1, 2]), 0.8
    )
    assert keep.tolist() == [0] and alternatives == [[(2, pytest.approx(0.5))]]


def test_cross_class_merge_records_a_label_once_at_its_best_score():
    boxes = box_tensor([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 9.8])
    keep, alternatives = merge_cross_class(
        boxes, torch.tensor([0.9, 0.5, 0.6]), torch.tensor([1, 2, 2]), 0.8
    )
    assert keep.tolist() == [0] and alternatives == [[(2, pytest.approx(0.6))]]


def test_a_box_absorbed_by_a_stronger_one_absorbs_nothing_itself():
    # b overlaps a (strongly) and c (strongly), but a and c barely overlap: b joins a and c
    # stays an object of its own, since b is no longer there to speak for it.
    a, b, c = [0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10]
    keep, alternatives = merge_cross_class(
        box_tensor(a, b, c), torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 2, 3]), 0.8
    )
    assert keep.tolist() == [0, 2]
    assert alternatives == [[(2, pytest.approx(0.8))], []]


def test_cross_class_merge_of_nothing():
    keep, alternatives = merge_cross_class(
        torch.empty(0, 4), torch.empty(0), torch.empty(0, dtype=torch.long), 0.8
    )
    assert keep.tolist() == [] and alternatives == []


def test_detections_carry_alternatives_in_their_dict_and_stay_positional():
    plain = Detection("person", 0.9, (1.0, 2.0, 3.0, 4.0))
    assert plain.alternatives == ()
    assert plain.to_dict() == {
        "label": "person",
        "score": 0.9,
        "box": [1.0, 2.0, 3.0, 4.0],
        "alternatives": [],
    }
    bird = Detection("bird", 0.68123, (0.0, 0.0, 5.0, 5.0), (("dog", 0.42346),))
    assert bird.to_dict()["alternatives"] == [{"label": "dog", "score": 0.4235}]


@pytest.mark.integration
def test_a_part_of_an_object_inside_it_is_not_a_second_object(detector):
    # The bicycle of dog.jpg also scores a box on its front half alone (IoU 0.43 with the
    # whole, so NMS keeps it); summaries would then count two bicycles for one.
    (found,) = detector.detect([open_photo("dog")])
    assert [d.label for d in found].count("bicycle") == 1


def test_containment_drops_only_weaker_boxes_of_the_same_class_inside_a_stronger_one():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 100.0, 100.0],  # 0 the whole object
            [50.0, 10.0, 98.0, 90.0],  # 1 a part of it, same class, weaker: dropped
            [40.0, 40.0, 60.0, 60.0],  # 2 inside, but another class: kept
            [90.0, 0.0, 150.0, 50.0],  # 3 same class, only 17 % inside: kept
            [10.0, 10.0, 30.0, 30.0],  # 4 inside 0 but stronger: a separate object, kept
        ]
    )
    scores = torch.tensor([0.9, 0.6, 0.5, 0.7, 0.95])
    classes = torch.tensor([1, 1, 2, 1, 1])
    kept = suppress_contained(boxes, scores, classes, 0.9).tolist()
    assert kept == [4, 0, 3, 2]
    assert suppress_contained(boxes[:0], scores[:0], classes[:0], 0.9).numel() == 0
    assert suppress_contained(boxes, scores, classes, 1.0).tolist() == [4, 0, 3, 2]
