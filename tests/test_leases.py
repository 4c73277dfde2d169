"""schedules.leases: completion, release after a failed send, and the reaper."""

from __future__ import annotations

import pytest

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.dispatch import dispatch
from schedules.leases import complete, reap, release
from tests.clock import at, store_at

pytestmark = pytest.mark.integration

TIER = TierConfig("standard", 1, plan_rate_per_min=60_000, plan_burst=1000, home_share=1.0)
CONFIG = SchedulerConfig(tiers={"standard": TIER}, processing_timeout_s=60, max_attempts=3)
LATE_MS = 61_000  # past the 60 s lease


@pytest.fixture
def store(redis_client):
    store = CandidateStore(redis_client, CONFIG)
    store.add("h1", "e1", "standard", 0.7, {"location": "front_door"})
    return store


def lease(r, offset=0.0):
    return dispatch(at(r, offset), TIER, CONFIG, quota=10).events


def test_completion_clears_the_lease_and_a_duplicate_is_harmless(store, redis_client):
    assert [d.event_id for d in lease(redis_client)] == ["e1"]
    assert complete(redis_client, "e1")
    assert not redis_client.exists("processing:e1", "ev:{h1}:e1")
    assert redis_client.zcard("inflight") == 0
    assert not complete(redis_client, "e1")
    assert reap(at(redis_client, LATE_MS), CONFIG) == reap(redis_client, CONFIG)
    assert store.count("h1") == 0


def test_a_lease_is_not_reaped_before_its_deadline(store, redis_client):
    lease(redis_client)
    report = reap(at(redis_client, 59_000), CONFIG)
    assert report.returned == [] and report.failed == []
    assert redis_client.zscore("inflight", "e1") is not None


def test_an_event_survives_lease_expiry_and_fails_after_max_attempts(store, redis_client):
    offset = 0.0
    for attempt in (1, 2):
        (leased,) = lease(redis_client, offset)
        assert leased.attempts == attempt - 1
        offset += LATE_MS
        report = reap(at(redis_client, offset), CONFIG)
        assert [(r.home_id, r.event_id, r.attempts) for r in report.returned] == [
            ("h1", "e1", attempt)
        ]
        again = store.get("h1", "e1")
        assert again.score == 0.7 and again.fields["attempts"] == str(attempt)
        assert again.fields["location"] == "front_door"
        assert redis_client.zscore("idx:cand:standard", "h1") == 0.7
        assert store.pending_total("standard") == 1
    lease(redis_client, offset)
    report = reap(at(redis_client, offset + LATE_MS), CONFIG)
    assert report.returned == []
    assert [(r.home_id, r.event_id, r.tier, r.attempts) for r in report.failed] == [
        ("h1", "e1", "standard", 3)
    ]
    left = {key for key in redis_client.scan_iter() if not key.startswith("bucket:")}
    # nothing left but the mark that keeps reconcile from reviving the failed event
    assert left == {"idx:pending", "settled:e1"} and store.pending_total("standard") == 0


def test_a_reaped_event_gets_a_fresh_ttl(store, redis_client):
    lease(redis_client)
    reap(at(redis_client, LATE_MS), CONFIG)
    assert store_at(store, LATE_MS + 1000).expire_due() == []
    ttl_ms = CONFIG.candidate_ttl_s * 1000
    assert [e.event_id for e in store_at(store, LATE_MS + ttl_ms + 1).expire_due()] == ["e1"]


def test_release_returns_events_without_counting_an_attempt(store, redis_client):
    store.add("h2", "e2", "standard", 0.3)
    assert len(lease(redis_client)) == 2
    assert release(redis_client, CONFIG, ["e1", "e2", "never-leased"]) == 2
    assert release(redis_client, CONFIG, []) == 0
    assert store.get("h1", "e1").fields["attempts"] == "0"
    assert redis_client.zcard("inflight") == 0
    assert [d.event_id for d in lease(redis_client)] == ["e1", "e2"]


def test_reap_reports_a_lease_whose_record_was_lost(store, redis_client):
    lease(redis_client)
    redis_client.delete("processing:e1")
    report = reap(at(redis_client, LATE_MS), CONFIG)
    assert [(r.home_id, r.event_id) for r in report.failed] == [("", "e1")]
    assert redis_client.zcard("inflight") == 0


def test_reap_handles_at_most_limit_leases_per_call(redis_client):
    store = CandidateStore(redis_client, CONFIG)
    for i in range(5):
        store.add(f"h{i}", f"e{i}", "standard", 0.5)
    lease(redis_client)
    assert len(reap(at(redis_client, LATE_MS), CONFIG, 2).returned) == 2
    assert len(reap(at(redis_client, LATE_MS), CONFIG).returned) == 3
    with pytest.raises(ValueError):
        reap(redis_client, CONFIG, 0)
