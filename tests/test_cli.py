"""``python -m inference detect`` as people and scripts run it: a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.photos import photo

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference", "detect", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_prints_one_object_per_image_with_detections():
    done = run_cli(str(photo("person")), str(photo("dog")), "--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(photo("person")), str(photo("dog"))]
    person = next(d for d in records[0]["detections"] if d["label"] == "person")
    assert set(person) == {"label", "score", "box", "alternatives"} and len(person["box"]) == 4
    assert "dog" in {d["label"] for d in records[1]["detections"]}


def test_json_and_text_carry_the_runner_up_labels_of_one_object():
    done = run_cli(str(photo("eagle")), "--json", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    (eagle,) = json.loads(done.stdout)["detections"]
    assert eagle["label"] == "bird"
    assert [a["label"] for a in eagle["alternatives"]] == ["dog"]
    assert 0 < eagle["alternatives"][0]["score"] < eagle["score"]
    text = run_cli(str(photo("eagle")), "--device", "cpu")
    assert text.returncode == 0, text.stderr
    assert re.fullmatch(r".*eagle\.jpg: bird 0\.\d\d \(or dog 0\.\d\d\)", text.stdout.strip())


def test_refused_sources_are_reported_and_exit_nonzero():
    done = run_cli(str(photo("dog")), "http://169.254.169.254/latest", "/no/such.jpg", "--json")
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert "detections" in records[0]
    assert [r["error"]["code"] for r in records[1:]] == ["url_address_blocked", "image_not_found"]


def test_annotate_writes_a_copy_with_boxes_drawn(tmp_path):
    done = run_cli(str(photo("dog")), "--annotate", str(tmp_path), "--batch", "1")
    assert done.returncode == 0, done.stderr
    assert "dog" in done.stdout
    (written,) = tmp_path.glob("*.jpg")
    with Image.open(written) as annotated, Image.open(photo("dog")) as original:
        assert annotated.size == original.size
        drawn = np.asarray(annotated.convert("L"), dtype=np.int16)
        diff = np.abs(drawn - np.asarray(original.convert("L"), dtype=np.int16)).sum()
        assert diff > 0  # boxes and labels were drawn


def test_lite_mode_reports_presence_scores():
    done = run_cli(str(photo("person")), "--lite", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert set(record["lite"]) == {"person", "vehicle", "animal"}
    assert record["lite"]["person"] > 0.35


def test_a_bad_batch_size_is_a_usage_error():
    done = run_cli(str(photo("dog")), "--batch", "0")
    assert done.returncode == 2
    assert "--batch" in done.stderr
