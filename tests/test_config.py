"""schedules.config: tiers, parsing from SCHEDULER_* names, validation."""

from __future__ import annotations

import pytest

from schedules.config import DEFAULT_TIERS, SchedulerConfig, TierConfig
from vigil import settings

pytestmark = pytest.mark.unit


def test_each_higher_tier_buys_a_bigger_share_and_a_bigger_plan():
    standard, premium, enterprise = (
        DEFAULT_TIERS[t] for t in ("standard", "premium", "enterprise")
    )
    assert (standard.weight, premium.weight, enterprise.weight) == (1, 2, 4)
    assert [t.plan_rate_per_min for t in (standard, premium, enterprise)] == [30, 60, 120]
    assert [t.plan_burst for t in (standard, premium, enterprise)] == [10, 20, 40]
    # A home may take only part of its tier's tick: at least four homes share any tier.
    assert all(tier.home_share <= 0.25 for tier in DEFAULT_TIERS.values())
    assert not any(tier.has_cap for tier in DEFAULT_TIERS.values())  # no hard caps


def test_plan_refill_hard_cap_and_share_cap_arithmetic():
    tier = TierConfig("standard", 1, plan_rate_per_min=30, plan_burst=10, home_share=0.25)
    assert tier.plan_refill_per_s == pytest.approx(0.5)
    assert tier.cap_refill_per_s is None and not tier.has_cap
    capped = TierConfig("x", 1, 30, 10, 0.25, cap_rate_per_min=120, cap_burst=5)
    assert capped.has_cap and capped.cap_refill_per_s == pytest.approx(2)
    assert [tier.share_cap(q) for q in (0, 1, 3, 4, 5, 40)] == [1, 1, 1, 1, 2, 10]
    assert TierConfig("y", 1, 30, 10, 0.1).share_cap(30) == 3  # 0.1 x 30 is 3, not 4


def test_config_is_read_from_scheduler_environment_names():
    env = {
        "PATH": "/bin",
        "SCHEDULER_MAX_BATCH_SIZE": "8",
        "SCHEDULER_CANDIDATE_TTL_S": "120.5",
        "SCHEDULER_DEEP_DRAIN_S": "3",
        "SCHEDULER_TIER_PREMIUM_WEIGHT": "3",
        "SCHEDULER_TIER_PREMIUM_PLAN_RATE_PER_MIN": "90",
        "SCHEDULER_TIER_PREMIUM_PLAN_BURST": "30",
        "SCHEDULER_TIER_ENTERPRISE_HOME_SHARE": "0.5",
        "SCHEDULER_TIER_STANDARD_CAP_RATE_PER_MIN": "600",
        "SCHEDULER_TIER_STANDARD_CAP_BURST": "50",
        "SCHEDULER_TIER_ENTERPRISE_CAP_RATE_PER_MIN": "",  # empty: unset
        "SCHEDULER_TIER_ENTERPRISE_CAP_BURST": " ",
    }
    config = SchedulerConfig.from_mapping(env)
    assert config.max_batch_size == 8
    assert config.candidate_ttl_s == 120.5
    assert config.deep_drain_s == 3.0
    assert config.tier("premium") == TierConfig("premium", 3.0, 90.0, 30, 0.25)
    assert config.tier("enterprise").home_share == 0.5
    assert not config.tier("enterprise").has_cap
    standard = config.tier("standard")
    assert (standard.cap_rate_per_min, standard.cap_burst) == (600.0, 50)
    assert standard.weight == DEFAULT_TIERS["standard"].weight


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SCHEDULER_MAX_BATCH_SIZ": "8"}, "SCHEDULER_MAX_BATCH_SIZ"),
        ({"SCHEDULER_MAX_BATCH_SIZE": "eight"}, "SCHEDULER_MAX_BATCH_SIZE"),
        ({"SCHEDULER_MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"SCHEDULER_MAX_ATTEMPTS": "2.5"}, "SCHEDULER_MAX_ATTEMPTS"),
        ({"SCHEDULER_TIER_GOLD_WEIGHT": "10"}, "SCHEDULER_TIER_GOLD_WEIGHT"),
        ({"SCHEDULER_TIER_STANDARD_HOME_SHARE": "1.5"}, "SCHEDULER_TIER_STANDARD_HOME_SHARE"),
        ({"SCHEDULER_TIER_STANDARD_PLAN_BURST": "0"}, "SCHEDULER_TIER_STANDARD_PLAN_BURST"),
        ({"SCHEDULER_TIER_STANDARD_PLAN_BURST": "2.5"}, "SCHEDULER_TIER_STANDARD_PLAN_BURST"),
        ({"SCHEDULER_TIER_PREMIUM_WEIGHT": "0"}, "SCHEDULER_TIER_PREMIUM_WEIGHT"),
        ({"SCHEDULER_TIER_PREMIUM_WEIGHT": "nan"}, "SCHEDULER_TIER_PREMIUM_WEIGHT"),
        ({"SCHEDULER_TIER_PREMIUM_WEIGHT": ""}, "SCHEDULER_TIER_PREMIUM_WEIGHT"),
        ({"SCHEDULER_TIER_PREMIUM_PLAN_RATE_PER_MIN": "-1"}, "PLAN_RATE_PER_MIN"),
        ({"SCHEDULER_TIER_PREMIUM_CAP_RATE_PER_MIN": "inf"}, "PREMIUM_CAP_RATE_PER_MIN"),
        ({"SCHEDULER_TIER_PREMIUM_CAP_BURST": "0"}, "SCHEDULER_TIER_PREMIUM_CAP_BURST"),
        ({"SCHEDULER_TIER_PREMIUM_CAP_BURST": "5"}, "SCHEDULER_TIER_PREMIUM_CAP_RATE_PER_MIN"),
        ({"SCHEDULER_TIER_PREMIUM_CAP_RATE_PER_MIN": "60"}, "SCHEDULER_TIER_PREMIUM_CAP_BURST"),
        ({"SCHEDULER_TIER_PREMIUM_SHARE": "0.5"}, "SCHEDULER_TIER_PREMIUM_SHARE"),
        ({"SCHEDULER_DEEP_DRAIN_S": "0"}, "deep_drain_s"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_variable(env, named):
    with pytest.raises(ValueError, match=named):
        SchedulerConfig.from_mapping(env)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("SCHEDULER_TIER_PREMIUM_RATE_PER_MIN", "SCHEDULER_TIER_PREMIUM_PLAN_RATE_PER_MIN"),
        ("SCHEDULER_TIER_PREMIUM_RATE_PER_MIN", "SCHEDULER_TIER_PREMIUM_WEIGHT"),
        ("SCHEDULER_TIER_PREMIUM_RATE_PER_MIN", "SCHEDULER_TIER_PREMIUM_CAP_RATE_PER_MIN"),
        ("SCHEDULER_TIER_STANDARD_BURST", "SCHEDULER_TIER_STANDARD_PLAN_BURST"),
        ("SCHEDULER_TIER_STANDARD_BURST", "SCHEDULER_TIER_STANDARD_CAP_BURST"),
    ],
)
def test_the_retired_rate_and_burst_names_are_refused_with_their_replacements(old, new):
    with pytest.raises(ValueError, match=old) as refused:
        SchedulerConfig.from_mapping({old: "30"})
    assert new in str(refused.value)


def test_bad_tiers_and_unknown_tier_lookups_raise():
    with pytest.raises(ValueError):
        TierConfig("Bad Name", 1, 30, 10, 0.2)
    with pytest.raises(ValueError, match="weight"):
        TierConfig("x", 0, 30, 10, 0.2)
    with pytest.raises(ValueError, match="plan_rate_per_min"):
        TierConfig("x", 1, 0, 10, 0.2)
    with pytest.raises(ValueError, match="plan_burst"):
        TierConfig("x", 1, 30, True, 0.2)
    with pytest.raises(ValueError, match="together"):
        TierConfig("x", 1, 30, 10, 0.2, cap_rate_per_min=60)
    with pytest.raises(ValueError):
        SchedulerConfig(tiers={"a": TierConfig("b", 1, 30, 10, 0.2)})
    with pytest.raises(ValueError):
        SchedulerConfig().tier("gold")


def test_the_process_settings_come_from_the_environment_once(monkeypatch):
    settings.current.cache_clear()
    monkeypatch.setenv("SCHEDULER_CANDIDATE_TTL_S", "45")
    try:
        assert settings.current().scheduler.candidate_ttl_s == 45
        monkeypatch.setenv("SCHEDULER_CANDIDATE_TTL_S", "90")
        assert settings.current().scheduler.candidate_ttl_s == 45  # read once per process
    finally:
        settings.current.cache_clear()
