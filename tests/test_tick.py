"""schedules.tick: shares by weight, work conservation, deficit, lock, batching, failed
sends and concurrent beats."""

from __future__ import annotations

import random
import threading

import pytest
import redis

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.tick import run_tick
from tests.clock import at

pytestmark = pytest.mark.integration


def wide(name: str, weight: float, **kwargs) -> TierConfig:
    """A tier whose plans never bind: only capacity and weights decide."""
    options = {"plan_rate_per_min": 600_000, "plan_burst": 10_000, "home_share": 1.0}
    options.update(kwargs)
    return TierConfig(name, weight, **options)


TIERS = {"standard": wide("standard", 1), "premium": wide("premium", 2)}
CONFIG = SchedulerConfig(tiers=TIERS, max_batch_size=4, k_per_tick=50)
THREE = SchedulerConfig(
    tiers={
        "standard": wide("standard", 1),
        "premium": wide("premium", 2),
        "enterprise": wide("enterprise", 4),
    },
    k_per_tick=50,
)


def fill(r, tier: str, count: int, config=CONFIG, homes: int = 5) -> CandidateStore:
    store = CandidateStore(r, config)
    for i in range(count):
        store.add(f"{tier}-h{i % homes}", f"e{tier}{i}", tier, i / count)
    return store


def collect(sent: list[tuple[str, list[str]]]):
    return lambda tier, batch: sent.append((tier, [d.event_id for d in batch]))


def totals(sent: list[tuple[str, list[str]]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for tier, batch in sent:
        out[tier] = out.get(tier, 0) + len(batch)
    return out


def test_a_tick_splits_capacity_by_weight_and_sends_batches_of_at_most_max_batch_size(
    redis_client,
):
    fill(redis_client, "standard", 10)
    fill(redis_client, "premium", 10)
    sent: list[tuple[str, list[str]]] = []
    report = run_tick(redis_client, CONFIG, free_capacity=lambda: 9, send_batch=collect(sent))
    assert [(tier, len(batch)) for tier, batch in sent] == [
        ("standard", 3),
        ("premium", 4),
        ("premium", 2),
    ]
    assert sent[0][1][0] == "estandard9"  # best first
    assert report.dispatched == {"standard": 3, "premium": 6} and report.batches == 3
    assert report.quotas == {"standard": 3, "premium": 6} and report.capacity == 9
    assert not redis_client.exists("tick:lock")


def test_only_standard_waiting_takes_all_the_capacity(redis_client):
    fill(redis_client, "standard", 40, THREE)
    sent: list[tuple[str, list[str]]] = []
    report = run_tick(redis_client, THREE, lambda: 25, collect(sent))
    assert totals(sent) == {"standard": 25} and report.passes == 1


def test_a_tier_with_nothing_waiting_lends_its_share(redis_client):
    fill(redis_client, "standard", 40, THREE)
    fill(redis_client, "premium", 40, THREE)
    sent: list[tuple[str, list[str]]] = []
    run_tick(redis_client, THREE, lambda: 30, collect(sent))  # enterprise waits for nothing
    assert totals(sent) == {"standard": 10, "premium": 20}


def test_a_tier_that_needs_less_than_its_share_gives_the_rest_to_the_others(redis_client):
    fill(redis_client, "standard", 40, THREE)
    fill(redis_client, "premium", 40, THREE)
    fill(redis_client, "enterprise", 3, THREE)
    sent: list[tuple[str, list[str]]] = []
    run_tick(redis_client, THREE, lambda: 21, collect(sent))
    assert totals(sent) == {"standard": 6, "premium": 12, "enterprise": 3}


def test_a_tier_held_by_its_plans_hands_its_quota_on_in_the_same_tick(redis_client):
    tiers = {
        "standard": wide("standard", 1),
        "premium": wide("premium", 2, plan_rate_per_min=0.06, plan_burst=2),  # 2 per home
    }
    config = SchedulerConfig(tiers=tiers)
    fill(redis_client, "standard", 40, config)
    fill(redis_client, "premium", 40, config, homes=2)  # 4 may go, its quota is 8
    sent: list[tuple[str, list[str]]] = []
    report = run_tick(redis_client, config, lambda: 12, collect(sent))
    assert report.quotas == {"standard": 4, "premium": 8}
    assert totals(sent) == {"standard": 8, "premium": 4} and report.passes == 2
    sent.clear()
    report = run_tick(redis_client, config, lambda: 12, collect(sent))  # premium's plans: 0
    assert totals(sent) == {"standard": 12}


def test_a_hard_cap_holds_a_tier_and_the_others_use_what_it_leaves(redis_client):
    capped = wide("premium", 2, cap_rate_per_min=0.06, cap_burst=5)
    config = SchedulerConfig(tiers={"standard": wide("standard", 1), "premium": capped})
    fill(redis_client, "standard", 40, config)
    fill(redis_client, "premium", 40, config)
    sent: list[tuple[str, list[str]]] = []
    run_tick(redis_client, config, lambda: 12, collect(sent))
    assert totals(sent) == {"standard": 7, "premium": 5}
    sent.clear()
    run_tick(redis_client, config, lambda: 12, collect(sent))
    assert totals(sent) == {"standard": 12}  # the cap is spent; idle capacity cannot lift it


def test_under_contention_a_noisy_home_takes_at_most_its_share_of_its_tiers_quota(
    redis_client,
):
    config = SchedulerConfig(tiers={"standard": wide("standard", 1, home_share=0.25)})
    store = CandidateStore(redis_client, config)
    for i in range(30):
        store.add("noisy", f"n{i}", "standard", 0.9)
    for home in range(10):
        store.add(f"calm{home}", f"c{home}", "standard", 0.1)
    sent: list[tuple[str, list[str]]] = []
    run_tick(redis_client, config, lambda: 8, collect(sent))
    events = [e for _, batch in sent for e in batch]
    assert len(events) == 8 and sum(e.startswith("n") for e in events) == 2


def test_the_deficit_carries_shares_across_ticks_of_small_capacity(redis_client):
    for tier in THREE.tiers:
        fill(redis_client, tier, 60, THREE, homes=10)
    sent: list[tuple[str, list[str]]] = []
    for _ in range(7):
        run_tick(redis_client, THREE, lambda: 3, collect(sent))
        carried = {k: float(v) for k, v in redis_client.hgetall("tick:deficit").items()}
        assert set(carried) == set(THREE.tiers)
        assert all(-1 < v < 1 for v in carried.values())
    assert totals(sent) == {"standard": 3, "premium": 6, "enterprise": 12}


def test_shares_match_the_weights_under_a_long_overload_with_small_capacities(redis_client):
    rng = random.Random(7)
    for tier in THREE.tiers:
        fill(redis_client, tier, 1500, THREE, homes=50)
    sent: list[tuple[str, list[str]]] = []
    for t in range(400):
        run_tick(at(redis_client, t), THREE, lambda: rng.randint(1, 10), collect(sent))
    got = totals(sent)
    total = sum(got.values())
    weights = sum(tier.weight for tier in THREE.tiers.values())
    for name, tier in THREE.tiers.items():
        share = got[name] / total
        assert share == pytest.approx(tier.weight / weights, rel=0.05), (name, got)


def test_a_second_beat_while_the_lock_is_held_does_nothing(redis_client):
    fill(redis_client, "standard", 3)
    redis_client.set("tick:lock", "someone-else", px=5000)
    sent = []
    report = run_tick(redis_client, CONFIG, lambda: 10, lambda t, b: sent.append(b))
    assert report.locked_out and sent == []
    assert redis_client.get("tick:lock") == "someone-else"


def test_no_free_capacity_dispatches_nothing(redis_client):
    store = fill(redis_client, "standard", 3)
    report = run_tick(redis_client, CONFIG, lambda: -2, lambda t, b: None)
    assert report.dispatched == {} and store.pending_total("standard") == 3
    assert not redis_client.exists("tick:deficit")


def test_a_failed_send_returns_its_batch_to_the_candidates(redis_client):
    store = fill(redis_client, "standard", 6)
    calls = []

    def send(tier, batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("broker down")

    report = run_tick(redis_client, CONFIG, lambda: 6, send)
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

            run_tick(client, CONFIG, lambda: 20, send)
        client.close()

    threads = [threading.Thread(target=beat) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == len(set(seen)) == 600
