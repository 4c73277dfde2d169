"""schedules.tick: lock, batching, failed sends, and concurrent beats."""

from __future__ import annotations

import threading

import pytest
import redis

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.tick import run_tick

pytestmark = pytest.mark.integration

TIERS = {
    "standard": TierConfig("standard", rate_per_min=60_000, burst=1000, home_share=1.0),
    "premium": TierConfig("premium", rate_per_min=60_000, burst=1000, home_share=1.0),
}
CONFIG = SchedulerConfig(tiers=TIERS, max_batch_size=4, k_per_tick=50)


def fill(r, tier: str, count: int, prefix: str = "e") -> CandidateStore:
    store = CandidateStore(r, CONFIG)
    for i in range(count):
        store.add(f"{tier}-h{i % 5}", f"{prefix}{tier}{i}", tier, i / count)
    return store


def test_a_tick_sends_each_tier_in_batches_of_at_most_max_batch_size(redis_client):
    fill(redis_client, "standard", 10)
    fill(redis_client, "premium", 3)
    sent: list[tuple[str, list[str]]] = []
    report = run_tick(
        redis_client,
        CONFIG,
        free_capacity=lambda tier: 9 if tier == "standard" else 5,
        send_batch=lambda tier, batch: sent.append((tier, [d.event_id for d in batch])),
    )
    assert [(tier, len(batch)) for tier, batch in sent] == [
        ("standard", 4),
        ("standard", 4),
        ("standard", 1),
        ("premium", 3),
    ]
    assert sent[0][1][0] == "estandard9"  # best first
    assert report.dispatched == {"standard": 9, "premium": 3} and report.batches == 4
    assert not redis_client.exists("tick:lock")


def test_a_second_beat_while_the_lock_is_held_does_nothing(redis_client):
    fill(redis_client, "standard", 3)
    redis_client.set("tick:lock", "someone-else", px=5000)
    sent = []
    report = run_tick(redis_client, CONFIG, lambda tier: 10, lambda t, b: sent.append(b))
    assert report.locked_out and sent == []
    assert redis_client.get("tick:lock") == "someone-else"


def test_no_free_capacity_dispatches_nothing(redis_client):
    store = fill(redis_client, "standard", 3)
    report = run_tick(redis_client, CONFIG, lambda tier: -2, lambda t, b: None)
    assert report.dispatched == {} and store.pending_total("standard") == 3


def test_a_failed_send_returns_its_batch_to_the_candidates(redis_client):
    store = fill(redis_client, "standard", 6)
    calls = []

    def send(tier, batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("broker down")

    report = run_tick(redis_client, CONFIG, lambda tier: 6, send)
    assert calls == [4, 2]
    assert (report.send_failures, report.released, report.dispatched["standard"]) == (1, 4, 2)
    assert store.pending_total("standard") == 4
    assert redis_client.zcard("inflight") == 2
    for i in (5, 4, 3, 2):  # the best four formed the failed first batch
        again = store.get(f"standard-h{i % 5}", f"estandard{i}")
        assert again is not None and again.fields["attempts"] == "0"
    assert not redis_client.exists("tick:lock")


def test_ticks_racing_from_two_beats_never_dispatch_an_event_twice(redis_client, redis_url):
    fill(redis_client, "standard", 300)
    fill(redis_client, "premium", 300)
    seen: list[str] = []
    guard = threading.Lock()
    barrier = threading.Barrier(2)

    def beat() -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        barrier.wait()
        for _ in range(200):

            def send(tier, batch):
                with guard:
                    seen.extend(d.event_id for d in batch)

            run_tick(client, CONFIG, lambda tier: 7, send)
        client.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == len(set(seen)) == 600
