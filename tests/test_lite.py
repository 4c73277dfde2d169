"""The lite scorer: presence per group on one core, agreeing with the deep detector."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from inference.images import encode_jpeg
from inference.labels import PRESENCE_GROUPS
from inference.lite import LiteScorer, presence_scores
from inference.nanodet import NanoDet
from tests.photos import blank_frame, noise_frame, open_photo, photo

pytestmark = pytest.mark.integration

PRESENT = 0.35
PHOTOS = ("dog", "person", "giraffe", "horses", "eagle")


@pytest.fixture(scope="module")
def scorer() -> LiteScorer:
    lite = LiteScorer()
    lite.setup()
    return lite


def present(scores: dict[str, float]) -> set[str]:
    return {group for group, score in scores.items() if score >= PRESENT}


def test_scores_every_presence_group(scorer):
    result = scorer.score(photo("person"))
    assert set(result.scores) == set(PRESENCE_GROUPS)
    assert present(result.scores) == {"person", "animal"}
    assert result.elapsed_ms > 0


def test_vehicle_and_animal_in_the_dog_photo(scorer):
    assert present(scorer.score(photo("dog")).scores) >= {"vehicle", "animal"}


@pytest.mark.parametrize("frame", [blank_frame(), noise_frame()], ids=["blank", "noise"])
def test_nothing_present_in_blank_or_noise_frames(scorer, frame):
    assert present(scorer.score(encode_jpeg(frame)).scores) == set()


def test_portrait_frames_are_scored_in_portrait(scorer):
    portrait = open_photo("person").crop((120, 40, 320, 400))  # 200x360, the woman in view
    result = scorer.score_image(portrait)
    assert "person" in present(result.scores)
    person = max(result.detections, key=lambda d: d.score if d.label == "person" else 0)
    assert 40 < person.box[0] < 80 and 120 < person.box[2] < 170  # in the crop's pixels


def test_lite_agrees_with_the_deep_detector_on_the_test_photos(scorer):
    deep = NanoDet()
    deep.setup("cpu")
    agree = total = 0
    for name in PHOTOS:
        image = open_photo(name)
        deep_groups = present(presence_scores(deep.detect([image])[0]))
        lite_groups = present(scorer.score_image(image).scores)
        for group in PRESENCE_GROUPS:
            total += 1
            agree += (group in deep_groups) == (group in lite_groups)
    assert agree / total >= 0.85


def graph_input_sizes(detector: NanoDet, run: Callable[[], object]) -> list[tuple[int, int]]:
    """(height, width) of each batch ``detector``'s graph actually ran on during ``run()``."""
    sizes: list[tuple[int, int]] = []
    assert detector.graph is not None
    hook = detector.graph.register_forward_pre_hook(
        lambda _module, args: sizes.append(tuple(args[0].shape[-2:]))
    )
    try:
        run()
    finally:
        hook.remove()
    return sizes


def test_the_lite_model_runs_on_a_third_of_the_deep_models_pixels_or_less(scorer):
    deep = NanoDet()
    deep.setup("cpu")
    landscape = open_photo("person")
    portrait = landscape.crop((120, 40, 320, 400))
    lite_sizes = graph_input_sizes(scorer.detector, lambda: scorer.score_image(landscape))
    lite_sizes += graph_input_sizes(scorer.detector, lambda: scorer.score_image(portrait))
    (deep_size,) = graph_input_sizes(deep, lambda: deep.detect([landscape]))
    assert lite_sizes == [(192, 256), (256, 192)]  # landscape, then portrait
    assert all(h * w * 3 <= deep_size[0] * deep_size[1] for h, w in lite_sizes)
