"""inference.batcher: frames submitted from many threads share device batches, each gets
its own result, a failure stays with its frame and an out-of-memory batch is halved."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import torch

from inference.batcher import DeviceBatch, DeviceBatcher, is_out_of_memory
from inference.contract import Detection, Model

pytestmark = pytest.mark.unit


class Echo(Model[int, list[int]]):
    """Finds one "object" per item, labelled with the item: results can be told apart."""

    name = "echo"

    def __init__(self, run_s: float = 0.0, fail_on: int | None = None, fits: int | None = None):
        self.run_s, self.fail_on, self.fits = run_s, fail_on, fits
        self.batches: list[int] = []

    def setup(self, device: object = None) -> None:
        self.device = torch.device("cpu")

    def preprocess(self, image: object) -> int:
        raise NotImplementedError

    def predict(self, items: Sequence[int]) -> list[int]:
        if self.fits is not None and len(items) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.fail_on in items:
            raise ValueError("a frame the model cannot take")
        self.batches.append(len(items))
        time.sleep(self.run_s)
        return list(items)

    def postprocess(self, raw: list[int], items: Sequence[int]) -> list[list[Detection]]:
        return [[Detection(str(i), 1.0, (0.0, 0.0, 1.0, 1.0))] for i in raw]


def label(future) -> str:
    return future.result(timeout=10)[0].label


def test_frames_from_many_threads_share_batches_and_each_gets_its_own_result():
    model, seen = Echo(run_s=0.01), []
    batcher = DeviceBatcher(model, max_batch=16, max_wait_s=0.02, on_batch=seen.append)
    futures: dict[int, object] = {}

    def task(start: int) -> None:
        for i in range(start, start + 8):
            futures[i] = batcher.submit(i)

    threads = [threading.Thread(target=task, args=(t * 100,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: label(f) for i, f in futures.items()} == {i: str(i) for i in futures}
    batcher.close(5)
    assert sum(model.batches) == 64 and max(model.batches) <= 16
    assert len(model.batches) <= 8  # merged across the eight "tasks", not 64 singles
    assert [b.size for b in seen] == model.batches
    assert all(isinstance(b, DeviceBatch) and b.run_s >= 0.01 for b in seen)


def test_a_frame_alone_waits_at_most_the_batch_wait():
    seen: list[DeviceBatch] = []
    batcher = DeviceBatcher(Echo(), max_batch=64, max_wait_s=0.005, on_batch=seen.append)
    started = time.perf_counter()
    assert label(batcher.submit(7)) == "7"
    assert time.perf_counter() - started < 0.5
    batcher.close(5)
    assert len(seen) == 1 and seen[0].size == 1 and seen[0].wait_s < 0.05


def test_a_failure_stays_with_its_frame():
    model = Echo(fail_on=2)
    batcher = DeviceBatcher(model, max_batch=8, max_wait_s=0.05)
    futures = [batcher.submit(i) for i in (1, 2, 3)]
    assert label(futures[0]) == "1" and label(futures[2]) == "3"
    with pytest.raises(ValueError, match="cannot take"):
        futures[1].result(timeout=10)
    batcher.close(5)


def test_out_of_memory_halves_the_batch_and_lowers_the_cap():
    model = Echo(fits=4)
    batcher = DeviceBatcher(model, max_batch=32, max_wait_s=0.05)
    futures = [batcher.submit(i) for i in range(20)]
    assert [label(f) for f in futures] == [str(i) for i in range(20)]
    assert max(model.batches) <= 4 and batcher.max_batch <= 4
    batcher.close(5)


def test_out_of_memory_is_told_from_other_errors():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(ValueError("bad frame"))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        DeviceBatcher(Echo(), max_batch=0)
    with pytest.raises(ValueError):
        DeviceBatcher(Echo(), max_wait_s=-1)
