"""One owner of the device, many callers: frames from concurrent tasks share device batches.

Callers ``submit`` one prepared item at a time and get a future of its detections. One
thread runs the model: it takes the first waiting item, gathers more until the batch holds
``max_batch`` or the first item has waited ``max_wait_s``, runs them as one batch and
answers each future. Under a backlog batches fill at once; alone, a frame waits at most
``max_wait_s``. This is the dynamic batching of Triton, LitServe (``max_batch_size``,
``batch_timeout``) and Ray Serve's ``@serve.batch``, inside one worker process.

A failure stays with its frame: when a batch raises, its items run again one by one, so
only the frame that breaks the model gets the error. When the device is out of memory the
batch is halved and retried (and the cap lowered for later batches), never a crash.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic

from inference.contract import Detection, Item, Model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceBatch:
    """What one device batch was: its size, the longest any of its frames waited for it
    to start, and how long the model ran."""

    size: int
    wait_s: float
    run_s: float


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    future: Future[list[Detection]]
    since: float


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (CUDA's, or a backend's "out of memory" error)."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


class DeviceBatcher(Generic[Item]):
    """Merges submitted items into device batches of at most ``max_batch``."""

    def __init__(
        self,
        model: Model[Item, Any],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.005,
        on_batch: Callable[[DeviceBatch], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue[_Waiting[Item] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="device", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> Future[list[Detection]]:
        future: Future[list[Detection]] = Future()
        self._queue.put(_Waiting(item, future, time.perf_counter()))
        return future

    def close(self, timeout: float | None = None) -> None:
        """Finish what was submitted, then stop the device thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = first.since + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch:
                try:
                    left = deadline - time.perf_counter()
                    waiting = (
                        self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if waiting is None:
                    stop = True
                    break
                batch.append(waiting)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: Sequence[_Waiting[Item]]) -> None:
        started = time.perf_counter()
        try:
            results = self.model.run_batch([w.item for w in batch])
        except Exception as exc:
            self._recover(batch, exc)
            return
        ran = time.perf_counter() - started
        if self.on_batch is not None:  # before the answers: a task ending next sees it
            wait = max(started - w.since for w in batch)
            try:
                self.on_batch(DeviceBatch(len(batch), wait, ran))
            except Exception:  # a lost sample must not stop the device thread
                log.warning("device batch not recorded", exc_info=True)
        for waiting, detections in zip(batch, results, strict=True):
            waiting.future.set_result(detections)

    def _recover(self, batch: Sequence[_Waiting[Item]], exc: Exception) -> None:
        if len(batch) == 1:
            batch[0].future.set_exception(exc)
            return
        if is_out_of_memory(exc):
            half = max(1, len(batch) // 2)
            if half < self.max_batch:
                log.warning("device out of memory at batch %d: the cap is now %d", len(batch), half)
                self.max_batch = half
            self._run(batch[:half])
            self._run(batch[half:])
            return
        log.warning("a batch of %d raised %r: running its frames one by one", len(batch), exc)
        for waiting in batch:
            self._run([waiting])
