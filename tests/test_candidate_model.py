"""The candidate store as a state machine against a real Redis.

Hypothesis drives random mixes of add, dispatch, reap, release, expire, reconcile, remove
and lite-result updates (with the clock moving between them) and, after every step, checks
what the scripts must keep true: each tier's index holds exactly its homes' best scores,
the pending counts and the expiry set match the candidates, and every event the machine
added is in exactly one place (a candidate, in flight, or settled), never lost or twice.
It runs with the default key map and with a namespace, where no key may fall outside it.
"""

from __future__ import annotations

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from schedules.candidates import AddStatus, CandidateStore
from schedules.config import SchedulerConfig, TierConfig
from schedules.dispatch import dispatch
from schedules.keys import KeyMap
from schedules.leases import complete, reap, release
from schedules.shard import Shard

pytestmark = pytest.mark.integration

TIERS = {
    "standard": TierConfig("standard", 1, plan_rate_per_min=600, plan_burst=3, home_share=0.5),
    "premium": TierConfig("premium", 2, plan_rate_per_min=1200, plan_burst=5, home_share=0.5),
}
CONFIG = SchedulerConfig(
    tiers=TIERS, k_per_tick=4, candidate_ttl_s=120, processing_timeout_s=60, max_attempts=3
)
HOMES = ["h0", "h1", "h2", "h3"]
RUN = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scores = st.floats(0, 10, allow_nan=False, allow_infinity=False)


class CandidateMachine(RuleBasedStateMachine):
    """The model: where each event is (``candidate``, ``inflight`` or ``settled``), its
    home, and which settled events carry the settled mark (reconcile must refuse them)."""

    client: redis.Redis
    keys: KeyMap

    events = Bundle("events")

    def __init__(self) -> None:
        super().__init__()
        self.client.flushdb()
        self.shard = Shard(self.client, self.keys)
        self.store = CandidateStore(self.shard, CONFIG)
        self.home_of: dict[str, str] = {}
        self.place: dict[str, str] = {}
        self.marked: set[str] = set()  # settled by a script (complete, reap, expiry)
        self.serial = 0

    # -- operations ----------------------------------------------------------------------

    @rule(
        target=events,
        home=st.sampled_from(HOMES),
        tier=st.sampled_from(list(TIERS)),
        score=scores,
        lite=st.booleans(),
    )
    def add_new(self, home: str, tier: str, score: float, lite: bool) -> str:
        self.serial += 1
        event = f"e{self.serial}"
        assert self.store.add(home, event, tier, score, lite=lite)
        self.home_of[event], self.place[event] = home, "candidate"
        return event

    @rule(event=events, tier=st.sampled_from(list(TIERS)), score=scores)
    def add_again(self, event: str, tier: str, score: float) -> None:
        status = self.store.admit(self.home_of[event], event, tier, score).status
        if self.place[event] == "inflight":
            assert status is AddStatus.IN_FLIGHT
        elif self.place[event] == "candidate":
            assert status is AddStatus.REFRESHED
        else:  # settled in PostgreSQL: only reconcile checks the mark; add makes it again
            assert status is AddStatus.NEW
            self.place[event] = "candidate"

    @rule(event=events, score=scores)
    def reconcile(self, event: str, score: float) -> None:
        home = self.home_of[event]
        status = self.store.admit(home, event, "standard", score, unless_settled=True).status
        if self.place[event] == "inflight":
            assert status is AddStatus.IN_FLIGHT
        elif event in self.marked and self.place[event] == "settled":
            assert status is AddStatus.SETTLED
        elif self.place[event] == "settled":
            assert status is AddStatus.NEW
            self.place[event] = "candidate"

    @rule(event=events, score=scores)
    def lite_result(self, event: str, score: float) -> None:
        updated = self.store.update_score(self.home_of[event], event, score)
        assert updated == (self.place[event] == "candidate")

    @rule(event=events)
    def remove(self, event: str) -> None:
        removed = self.store.remove(self.home_of[event], event)
        assert removed == (self.place[event] == "candidate")
        if removed:
            self.place[event] = "settled"

    @rule(tier=st.sampled_from(list(TIERS)), quota=st.integers(0, 6))
    def dispatch(self, tier: str, quota: int) -> None:
        taken = dispatch(self.shard, TIERS[tier], CONFIG, quota).events
        assert len(taken) <= min(quota, CONFIG.k_per_tick)
        for d in taken:
            assert self.place[d.event_id] == "candidate", d
            assert self.home_of[d.event_id] == d.home_id
            self.place[d.event_id] = "inflight"

    @rule(event=events)
    def complete(self, event: str) -> None:
        had = complete(self.shard, event)
        assert had == (self.place[event] == "inflight")
        self.marked.add(event)
        if had:
            self.place[event] = "settled"

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        leased = sorted(e for e, where in self.place.items() if where == "inflight")
        chosen = data.draw(st.lists(st.sampled_from(leased), unique=True)) if leased else []
        assert release(self.shard, CONFIG, chosen) == len(chosen)
        for event in chosen:
            self.place[event] = "candidate"

    @rule(ms=st.integers(0, 90_000))
    def move_clock(self, ms: int) -> None:
        self.shard.clock_offset_ms += ms

    @rule()
    def reap(self) -> None:
        report = reap(self.shard, CONFIG)
        for r in report.returned:
            assert self.place[r.event_id] == "inflight"
            self.place[r.event_id] = "candidate"
        for r in report.failed:
            assert self.place[r.event_id] == "inflight"
            self.place[r.event_id] = "settled"
            self.marked.add(r.event_id)

    @rule()
    def expire(self) -> None:
        for gone in self.store.expire_due():
            assert self.place[gone.event_id] == "candidate"
            self.place[gone.event_id] = "settled"
            self.marked.add(gone.event_id)

    # -- what every step keeps true --------------------------------------------------------

    @invariant()
    def every_event_is_in_exactly_one_place(self) -> None:
        r, keys = self.client, self.keys
        candidates = {(home, event) for home in HOMES for event in r.zrange(keys.cand(home), 0, -1)}
        inflight = set(r.zrange(keys.inflight, 0, -1))
        expected = {(self.home_of[e], e) for e, where in self.place.items() if where == "candidate"}
        assert candidates == expected
        assert inflight == {e for e, where in self.place.items() if where == "inflight"}
        for event in inflight:
            assert r.hget(keys.lease(event), "home") == self.home_of[event]
        assert not {event for _, event in candidates} & inflight

    @invariant()
    def indexes_match_the_candidates(self) -> None:
        r, keys = self.client, self.keys
        for tier in TIERS:
            index = dict(r.zrange(keys.index(tier), 0, -1, withscores=True))
            best, pending = {}, 0
            for home in HOMES:
                top = r.zrevrange(keys.cand(home), 0, 0, withscores=True)
                if top and r.hget(keys.home_tiers, home) == tier:
                    best[home] = top[0][1]
                    pending += r.zcard(keys.cand(home))
            assert index == best, tier
            assert int(r.hget(keys.pending, tier) or 0) == pending, tier
        for home in HOMES:
            assert (r.hget(keys.home_tiers, home) is None) == (r.zcard(keys.cand(home)) == 0)
        members = set(r.zrange(keys.expiry, 0, -1))
        waiting = {
            f"{home}:{event}" for home in HOMES for event in r.zrange(keys.cand(home), 0, -1)
        }
        assert members == waiting

    @invariant()
    def no_key_outside_the_namespace(self) -> None:
        if self.keys.namespace:
            assert all(k.startswith(self.keys.namespace) for k in self.client.keys("*"))


@pytest.mark.parametrize("namespace", ["", "vigil{s1}:"])
def test_indexes_hold_and_no_event_is_lost_under_any_mix_of_operations(redis_client, namespace):
    machine = type(
        "Machine", (CandidateMachine,), {"client": redis_client, "keys": KeyMap(namespace)}
    )
    run_state_machine_as_test(machine, settings=RUN)
