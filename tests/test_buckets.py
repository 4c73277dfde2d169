"""schedules.buckets: a token bucket refilled from Redis TIME, never over its rate."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedules.buckets import TokenBucket
from schedules.config import DEFAULT_TIERS
from tests.clock import at


def moved(bucket: TokenBucket, offset_ms: float) -> TokenBucket:
    """The same bucket, read with the clock ``offset_ms`` ahead."""
    return TokenBucket(
        at(bucket.shard.client, offset_ms), bucket.key, bucket.capacity, bucket.refill_per_s
    )


pytestmark = pytest.mark.integration

# Real Redis per example: flushed inside the test; no example database on disk.
PROPERTY = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def redis_now_ms(r) -> float:
    sec, usec = r.time()
    return sec * 1000 + usec / 1000


def test_a_new_bucket_is_full_and_grants_what_it_has(redis_client):
    bucket = TokenBucket(redis_client, "bucket:test", capacity=5, refill_per_s=0.001)
    assert bucket.peek() == pytest.approx(5)
    assert bucket.take(3) == 3
    assert bucket.take(3) == 2  # partial: only whole tokens left
    assert bucket.take(1) == 0
    assert bucket.peek() == pytest.approx(0, abs=0.01)


def test_tokens_come_back_at_the_refill_rate_and_stop_at_capacity(redis_client):
    # A slow refill and large clock offsets: real time passing adds next to nothing.
    bucket = TokenBucket(redis_client, "bucket:test", capacity=4, refill_per_s=0.002)
    assert bucket.take(4) == 4
    assert moved(bucket, 1_000_000).peek() == pytest.approx(2, abs=0.05)
    assert moved(bucket, 1_000_000).take(4) == 2
    assert moved(bucket, 60_000_000).peek() == 4


def test_refill_uses_the_redis_clock_and_state_expires_once_full(redis_client):
    bucket = TokenBucket(redis_client, "bucket:test", capacity=4, refill_per_s=2)
    before = redis_now_ms(redis_client)
    bucket.take(2)
    after = redis_now_ms(redis_client)
    assert before <= float(redis_client.hget("bucket:test", "ts")) <= after
    assert 0 < redis_client.pttl("bucket:test") <= 1000 + 1000  # 2 tokens at 2/s, + 1 s slack


def test_a_clock_going_backwards_refills_nothing(redis_client):
    bucket = TokenBucket(redis_client, "bucket:test", capacity=4, refill_per_s=2)
    moved(bucket, 10_000).take(4)
    assert bucket.take(4) == 0  # "now" is 10 s before the last refill
    assert moved(bucket, 11_000).take(4) == 2


def test_peek_takes_nothing(redis_client):
    bucket = TokenBucket(redis_client, "bucket:test", capacity=2, refill_per_s=1)
    bucket.peek()
    assert not redis_client.exists("bucket:test")
    assert bucket.take(2) == 2


def test_a_homes_plan_bucket_uses_its_tiers_plan(redis_client):
    bucket = TokenBucket.for_home(redis_client, "h7", DEFAULT_TIERS["premium"])
    assert (bucket.key, bucket.capacity, bucket.refill_per_s) == ("bucket:home:{h7}", 20, 1)


def test_a_tier_bucket_exists_only_for_a_hard_cap(redis_client):
    capped = replace(DEFAULT_TIERS["premium"], cap_rate_per_min=120, cap_burst=7)
    bucket = TokenBucket.for_tier(redis_client, capped)
    assert (bucket.key, bucket.capacity, bucket.refill_per_s) == ("bucket:tier:premium", 7, 2)
    with pytest.raises(ValueError, match="no hard cap"):
        TokenBucket.for_tier(redis_client, DEFAULT_TIERS["premium"])


@pytest.mark.parametrize(
    ("capacity", "refill", "n"),
    [(0, 1, 1), (5, 0, 1), (5, -1, 1), (float("inf"), 1, 1), (5, 1, 0), (5, 1, 1.5)],
)
def test_bad_arguments_raise_value_error(redis_client, capacity, refill, n):
    with pytest.raises(ValueError):
        TokenBucket(redis_client, "bucket:test", capacity, refill).take(n)


@PROPERTY
@given(
    capacity=st.integers(1, 10),
    per_s=st.floats(0.1, 5),
    steps=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 8)), min_size=1, max_size=30),
)
def test_grants_never_exceed_capacity_plus_rate_over_any_window(
    redis_client, capacity, per_s, steps
):
    redis_client.flushdb()
    bucket = TokenBucket(redis_client, "bucket:test", capacity, per_s)
    start = redis_now_ms(redis_client)
    offset, log = 0, []
    for advance, n in steps:
        offset += advance
        log.append((offset, moved(bucket, offset).take(n)))
    real_ms = redis_now_ms(redis_client) - start  # the real clock moved too
    for i in range(len(log)):
        total = 0
        for j in range(i, len(log)):
            total += log[j][1]
            window_s = (log[j][0] - log[i][0] + real_ms) / 1000
            assert total <= capacity + per_s * window_s + 1e-9
