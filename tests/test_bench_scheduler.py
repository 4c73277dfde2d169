"""bench/scheduler.py: the window checks it judges the scheduler by, and one tiny run of the
whole bench on its own embedded Redis (the figures in docs/benchmarks.md come from the
full-size run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_scheduler", ROOT / "bench/scheduler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bench = load_bench()
SECONDS = [float(s) for s in range(1, 11)]


@pytest.mark.unit
def test_a_home_within_its_plan_is_not_over_its_bound() -> None:
    plan = bench.Bucket(burst=2.0, per_s=0.5)
    # 2 at once, then one every 2 s: exactly what a full bucket of 2 refilled at 0.5/s allows
    ticks = [(0, 2), (2, 1), (4, 1), (6, 1), (8, 1)]
    assert not bench.over_bound(ticks, SECONDS, SECONDS, plan)


@pytest.mark.unit
def test_a_home_over_its_plan_in_some_window_is_found() -> None:
    plan = bench.Bucket(burst=2.0, per_s=0.5)
    assert bench.over_bound([(0, 3)], SECONDS, SECONDS, plan)
    # within the bound for the first ticks, over it in the window 4..5 (3 > 2 + 0.5)
    assert bench.over_bound([(0, 1), (4, 1), (5, 2)], SECONDS, SECONDS, plan)


@pytest.mark.unit
def test_window_violations_match_the_linear_check() -> None:
    cap = bench.Bucket(burst=3.0, per_s=1.0)
    counts = [3, 1, 1, 2, 0, 0, 5, 1, 0, 0]
    found = bench.window_violations(counts, SECONDS, SECONDS, cap)
    ticks = [(i, n) for i, n in enumerate(counts) if n]
    assert (found > 0) == bench.over_bound(ticks, SECONDS, SECONDS, cap)
    assert bench.window_violations([1] * 10, SECONDS, SECONDS, cap) == 0


@pytest.mark.unit
def test_the_plan_mirror_refills_like_the_scripts_and_keeps_a_margin() -> None:
    mirror = bench.PlanMirror({"standard": bench.Bucket(burst=2.0, per_s=0.5)})
    assert mirror.could_go("h", "standard", 1.0)  # a home never seen has a full bucket
    mirror.take("h", "standard", 1.0, 2)
    assert not mirror.could_go("h", "standard", 2.0)  # half a token back
    assert not mirror.could_go("h", "standard", 3.0)  # one token back, minus the margin
    assert mirror.could_go("h", "standard", 3.2)


def test_a_tiny_run_prints_every_figure() -> None:
    args = bench.parse_args(
        ["--homes", "60,120", "--ticks", "3", "--duration", "20", "--capacity", "10"]
        + ["--zpopmax-members", "2000", "--shards", "2"]
    )
    out = json.loads(json.dumps(bench.measure(args)))
    for key in ("light_p95_s", "baseline_light_p95_s"):
        assert set(out[key]) == {"standard", "premium", "enterprise"}
    assert out["shards"] == 2 and set(out["tick_p99_ms_sharded"]) == {"60", "120"}
    # the sharded ticks dispatch as much as one node's: the merge loses nothing
    assert out["events_per_tick_sharded"] == out["events_per_tick"]
    assert out["lost"] == 0 and out["baseline_lost"] == 0 and out["fifo_lost"] == 0
    assert out["home_plan_violations"] == 0 and out["baseline_home_plan_violations"] == 0
    assert out["tier_rate_violations"] == 0 and out["baseline_tier_rate_violations"] == 0
    assert out["sim_duplicates"] == 0
    assert 0 <= out["overload_share_error_max"] <= 1
    assert 0 <= out["idle_while_waiting_pct"] <= 100
    assert 0 < out["uneven_standard_share"] <= 1
    assert 0 <= out["critical_analysed_pct"] <= 100
    assert set(out["tick_p99_ms"]) == {"60", "120"}
