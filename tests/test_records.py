"""The capped operator lists (tasks/records.py) against a real Redis: newest first, at
most CAP entries, one transaction, and a Redis that refuses never fails the writer."""

from __future__ import annotations

import json
import socket
import time

import pytest
import redis

from schedules.candidates import CandidateStore
from schedules.config import SchedulerConfig
from schedules.tick import run_tick
from tasks import records
from tasks.context import WorkerContext
from tasks.deep import BatchOutcome
from tasks.scheduling import record_tick

pytestmark = pytest.mark.integration


def entries(client: redis.Redis, key: str) -> list[dict]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def test_a_list_keeps_the_newest_cap_records_newest_first(redis_client):
    for start in range(0, 1200, 100):
        batch = [{"n": n} for n in range(start, start + 100)]
        assert records.push(redis_client, {records.SCHEDULER_METRICS: batch})
    kept = entries(redis_client, records.SCHEDULER_METRICS)
    assert len(kept) == records.CAP == 1000
    assert kept[0] == {"n": 1199} and kept[-1] == {"n": 200}


def test_a_redis_that_refuses_costs_a_warning_not_the_task(caplog):
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    ctx = WorkerContext.from_environ({"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    started = time.monotonic()
    assert records.push(ctx.records_redis, {records.WORKER_METRICS: [{"n": 1}]}) is False
    assert time.monotonic() - started < 2.0  # no retries with backoff
    assert "operator records not written (worker_metrics)" in caplog.text


def test_a_deep_batch_writes_its_three_lists_together(redis_client):
    outcome = BatchOutcome(
        analysed=[11, 12],
        failed=[13],
        errors={13: "fetch_failed"},
        labels={11: ["person"], 12: []},
        homes={11: 1, 12: 1, 13: 2},
        inference_s=0.25,
        leases_ended=3,
    )
    lists = records.deep_records("deep-cpu@host", "premium", [11, 12, 13, 14], outcome, 1.5)
    assert records.push(redis_client, lists)
    [metrics] = entries(redis_client, records.WORKER_METRICS)
    assert metrics["worker"] == "deep-cpu@host" and metrics["tier"] == "premium"
    assert (metrics["batch_size"], metrics["analysed"], metrics["failed"]) == (4, 2, 1)
    assert metrics["skipped"] == 1 and metrics["inference_s"] == 0.25
    assert metrics["errors"] == {"fetch_failed": 1}
    [completion] = entries(redis_client, records.SCHEDULER_COMPLETIONS)
    assert completion["events"] == [11, 12, 13, 14] and completion["leases_ended"] == 3
    digest = entries(redis_client, records.DIGEST_QUEUE)
    assert [d["event_id"] for d in digest] == [13, 12, 11]  # newest first, as pushed
    assert digest[2]["result"] == {"status": "analyzed", "labels": ["person"]}
    assert digest[0]["result"] == {"status": "failed", "error": "fetch_failed"}
    assert digest[0]["home_id"] == 2 and digest[0]["completed_at"] == metrics["at"]


def test_a_tick_record_counts_what_was_sent_and_what_waits(redis_client, redis_url):
    store = CandidateStore(redis_client)
    store.add("h1", "e1", "standard", 0.5)
    store.add("h2", "e2", "standard", 0.4)
    store.add("h3", "e3", "enterprise", 0.9)
    ctx = WorkerContext.from_environ({"REDIS_URL": redis_url})
    report = run_tick(redis_client, SchedulerConfig(), lambda: 2, lambda _tier, _batch: None)
    record_tick(ctx, SchedulerConfig(), report, 0.0123)
    [tick] = entries(redis_client, records.SCHEDULER_METRICS)
    assert sum(tick["dispatched"].values()) == 2 and tick["batches"] == report.batches
    before = {"standard": 2, "premium": 0, "enterprise": 1}
    for tier, n in before.items():  # what was dispatched no longer waits
        assert tick["waiting"][tier] == n - tick["dispatched"][tier]
    assert tick["waiting"] == {
        tier: store.pending_total(tier) for tier in before
    }  # and the record agrees with Redis after the tick
    assert tick["duration_ms"] == 12.3 and tick["locked_out"] is False


def test_a_lite_record_counts_what_the_time_limit_cut(redis_client):
    record = records.lite_record("cpu@host", [1, 2, 3, 4], {"scored": 2, "skipped": 1}, 0.5)
    assert records.push(redis_client, {records.LITE_SCORER_METRICS: [record]})
    [lite] = entries(redis_client, records.LITE_SCORER_METRICS)
    assert (lite["batch_size"], lite["scored"], lite["skipped"], lite["requeued"]) == (4, 2, 1, 1)
