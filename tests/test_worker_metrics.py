"""tasks.metrics: bounded labels, the per-process buffer and its one-transaction flush into
Redis, and the reader the web's /metrics serves them with."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

from inference.batcher import DeviceBatch
from notify.apns import ApnsProvider
from notify.fcm import FcmProvider
from notify.providers import EmbeddedProvider
from notify.sender import LOST_LEASE, NO_PROVIDER
from tasks import metrics as worker_metrics
from tasks.heartbeat import PUBLISHED_AT
from tasks.metrics import (
    FAMILIES,
    INFERENCE,
    KEY,
    OTHER,
    PUSH_LATENCY,
    PUSHES,
    QUEUE_WAIT,
    SETTLED,
    Recorder,
    batch_size_label,
    device_label,
    queue_wait_s,
)
from vigil.vocabulary import DeliveryStatus

pytestmark = pytest.mark.integration

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def samples(families) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


@pytest.mark.unit
def test_label_values_are_bounded():
    assert QUEUE_WAIT.label_values(["digest"]) == ("digest",)
    assert QUEUE_WAIT.label_values(["celery"]) == (OTHER,)
    assert PUSHES.label_values(["fcm", "sent"]) == ("fcm", "sent")
    assert PUSHES.label_values(["webpush", "exploded"]) == (OTHER, OTHER)
    with pytest.raises(ValueError):
        SETTLED.label_values(["analyzed", "extra"])
    assert [batch_size_label(n) for n in (1, 2, 4, 5, 16, 17, 32, 33, 64, 65, 500)] == [
        "1",
        "2-4",
        "2-4",
        "5-8",
        "9-16",
        "17-32",
        "17-32",
        "33-64",
        "33-64",
        "65+",
        "65+",
    ]
    assert [device_label(d) for d in ("cpu", "cuda", "cuda:3", "mps")] == [
        "cpu",
        "cuda",
        "cuda:3",
        "mps",
    ]
    assert device_label("cuda:x; rm") == device_label("tpu") == OTHER
    computed = {"device", "batch_size"}  # bounded by the two functions above
    for family in FAMILIES:
        assert set(family.labels) <= set(family.values) | computed, family.name


@pytest.mark.unit
def test_the_provider_and_outcome_labels_match_what_the_sender_records():
    providers = {ApnsProvider.name, FcmProvider.name, EmbeddedProvider.name, NO_PROVIDER}
    assert providers == set(PUSH_LATENCY.values["provider"]) == set(PUSHES.values["provider"])
    before = worker_metrics.recorder.pending()
    returned = set(DeliveryStatus) - {DeliveryStatus.SENDING}  # what send_one settles on
    for status in (*returned, LOST_LEASE):
        worker_metrics.record_push("fcm", status, None)
    added = {k for k, v in worker_metrics.recorder.pending().items() if v != before.get(k)}
    assert all(OTHER not in name for name in added)
    assert {json.loads(name)[1][1] for name in added} <= set(PUSHES.values["outcome"])
    assert "retry" in {json.loads(name)[1][1] for name in added}  # pending again = a retry


@pytest.mark.unit
def test_queue_wait_is_read_from_the_publish_stamp_and_routing_key():
    stamped = SimpleNamespace(delivery_info={"routing_key": "lite"}, headers=None)
    setattr(stamped, PUBLISHED_AT, 100.0)
    assert queue_wait_s(stamped, 102.5) == ("lite", 2.5)
    in_headers = SimpleNamespace(delivery_info=None, headers={PUBLISHED_AT: 100})
    assert queue_wait_s(in_headers, 101.0) == (OTHER, 1.0)
    assert queue_wait_s(SimpleNamespace(headers={PUBLISHED_AT: True}), 1.0) is None
    assert queue_wait_s(SimpleNamespace(headers=None), 1.0) is None
    assert queue_wait_s(None, 1.0) is None


@pytest.mark.unit
def test_a_deep_batch_is_recorded_from_what_it_saved_without_a_query(monkeypatch):
    recorder = Recorder(lambda: None)
    monkeypatch.setattr(worker_metrics, "recorder", recorder)
    # No pool: the latencies come from save_detections, so recording needs no database.
    worker_metrics.record_deep_batch("premium", {7: 0.7, 8: 45.0}, [9])
    pending = pending_samples(recorder)
    latency = "vigil_event_analysis_latency_seconds"
    assert pending == {
        ("vigil_events_settled", ("analyzed",), ""): 2,
        ("vigil_events_settled", ("failed",), ""): 1,
        (latency, ("premium",), "1.0"): 1,
        (latency, ("premium",), "60.0"): 1,
        (latency, ("premium",), "sum"): pytest.approx(45.7),
    }
    worker_metrics.record_deep_batch("premium", {}, [10])  # nothing analysed
    assert recorder.pending()['["vigil_events_settled",["failed"],""]'] == 2
    assert len(recorder.pending()) == len(pending)


def pending_samples(recorder: Recorder) -> dict:
    out = {}
    for name, n in recorder.pending().items():
        family, labels, part = json.loads(name)
        out[family, tuple(labels), part] = n
    return out


@pytest.mark.unit
def test_a_device_batch_records_its_run_size_busy_time_and_wait(monkeypatch):
    recorder = Recorder(lambda: None)
    monkeypatch.setattr(worker_metrics, "recorder", recorder)
    model = SimpleNamespace(device="cuda:0")
    worker_metrics.record_device_batch(model, DeviceBatch(size=40, wait_s=0.004, run_s=0.02))
    worker_metrics.record_device_batch(model, DeviceBatch(size=3, wait_s=0.0, run_s=0.004))
    assert pending_samples(recorder) == {
        ("vigil_inference_batch_seconds", ("cuda:0", "33-64"), "0.025"): 1,
        ("vigil_inference_batch_seconds", ("cuda:0", "33-64"), "sum"): 0.02,
        ("vigil_inference_batch_seconds", ("cuda:0", "2-4"), "0.005"): 1,
        ("vigil_inference_batch_seconds", ("cuda:0", "2-4"), "sum"): 0.004,
        ("vigil_device_busy_seconds", ("cuda:0",), ""): pytest.approx(0.024),
        ("vigil_device_frames", ("cuda:0",), ""): 43,
        ("vigil_device_batch_wait_seconds", ("cuda:0",), "0.005"): 1,
        ("vigil_device_batch_wait_seconds", ("cuda:0",), "0.001"): 1,
        ("vigil_device_batch_wait_seconds", ("cuda:0",), "sum"): pytest.approx(0.004),
    }


@pytest.mark.unit
def test_without_redis_the_increments_wait_in_the_buffer():
    recorder = Recorder(lambda: None)
    recorder.observe(INFERENCE, ("cpu", "1"), 0.2)
    recorder.observe(INFERENCE, ("cpu", "1"), -1.0)  # a clock step back counts as 0
    assert recorder.flush() == 0
    pending = recorder.pending()
    assert sum(pending.values()) == pytest.approx(2.2)  # two observations, sum 0.2
    assert len(pending) == 3  # the 0.25 bucket, the 0.001 bucket and the sum


def test_a_failed_flush_keeps_its_increments_for_the_next_one(redis_url, redis_client):
    url = {"now": DEAD_REDIS}
    recorder = Recorder(lambda: url["now"])
    recorder.count(SETTLED, ("failed",), 2)
    recorder.observe(QUEUE_WAIT, ("lite",), 0.5)
    assert recorder.flush() == 0  # Redis away: logged, nothing lost
    recorder.count(SETTLED, ("failed",))
    url["now"] = redis_url
    recorder._client = None  # the same process reconnects to the server that is back
    assert recorder.flush() == 3 and recorder.flush() == 0  # written once
    found = samples(worker_metrics.read(redis_client))
    assert found[("vigil_events_settled_total", (("outcome", "failed"),))] == 3
    assert found[("vigil_queue_wait_seconds_count", (("queue", "lite"),))] == 1
    assert found[("vigil_queue_wait_seconds_sum", (("queue", "lite"),))] == 0.5


def test_observations_from_many_threads_add_up_exactly(redis_url, redis_client):
    recorder = Recorder(lambda: redis_url)

    def work() -> None:
        for i in range(500):
            recorder.observe(PUSH_LATENCY, ("apns",), 0.001 * (i % 50))
            recorder.count(PUSHES, ("apns", "sent"))
            if i % 100 == 0:
                recorder.flush()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.flush()
    found = samples(worker_metrics.read(redis_client))
    assert found[("vigil_push_duration_seconds_count", (("provider", "apns"),))] == 4000
    assert found[("vigil_pushes_total", (("outcome", "sent"), ("provider", "apns")))] == 4000
    inf = (("le", "+Inf"), ("provider", "apns"))
    assert found[("vigil_push_duration_seconds_bucket", inf)] == 4000


def test_the_reader_skips_fields_it_cannot_place(redis_url, redis_client):
    recorder = Recorder(lambda: redis_url)
    recorder.count(SETTLED, ("skipped",), 4)
    recorder.flush()
    redis_client.hset(
        KEY,
        mapping={
            "not json": 1,
            '["vigil_events_settled",["skipped","extra"],""]': 9,  # another version's labels
            '["vigil_gone_family",[],""]': 3,
            '["vigil_queue_wait_seconds",["lite"],"0.333"]': 7,  # a bucket no longer there
        },
    )
    found = samples(worker_metrics.read(redis_client))
    assert found[("vigil_events_settled_total", (("outcome", "skipped"),))] == 4
    assert found[("vigil_queue_wait_seconds_count", (("queue", "lite"),))] == 0
    assert not [k for k in found if "gone" in k[0] or "extra" in str(k)]
