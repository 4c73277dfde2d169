"""schedules.config: tiers, parsing from SCHEDULER_* names, validation."""

from __future__ import annotations

import pytest

from schedules.config import DEFAULT_TIERS, SchedulerConfig, TierConfig
from vigil import settings

pytestmark = pytest.mark.unit


def test_each_higher_tier_buys_more_analysis_and_bigger_bursts():
    standard, premium, enterprise = (
        DEFAULT_TIERS[t] for t in ("standard", "premium", "enterprise")
    )
    assert standard.rate_per_min < premium.rate_per_min < enterprise.rate_per_min
    assert standard.burst < premium.burst < enterprise.burst
    # A home may take only part of its tier: at least four homes fit in any tier's rate.
    assert all(tier.home_share <= 0.25 for tier in DEFAULT_TIERS.values())


def test_home_cap_is_a_share_of_the_tier_rate():
    tier = TierConfig("standard", rate_per_min=30, burst=10, home_share=0.25)
    assert tier.refill_per_s == pytest.approx(0.5)
    assert tier.home_refill_per_s == pytest.approx(0.125)
    assert tier.home_capacity == pytest.approx(2.5)
    assert TierConfig("tiny", 6, 2, 0.1).home_capacity == 1.0


def test_config_is_read_from_scheduler_environment_names():
    env = {
        "PATH": "/bin",
        "SCHEDULER_MAX_BATCH_SIZE": "8",
        "SCHEDULER_CANDIDATE_TTL_S": "120.5",
        "SCHEDULER_TIER_PREMIUM_RATE_PER_MIN": "90",
        "SCHEDULER_TIER_PREMIUM_BURST": "30",
        "SCHEDULER_TIER_ENTERPRISE_HOME_SHARE": "0.5",
    }
    config = SchedulerConfig.from_mapping(env)
    assert config.max_batch_size == 8
    assert config.candidate_ttl_s == 120.5
    assert config.tier("premium") == TierConfig("premium", 90.0, 30, 0.25)
    assert config.tier("enterprise").home_share == 0.5
    assert config.tier("standard") == DEFAULT_TIERS["standard"]


@pytest.mark.parametrize(
    "env",
    [
        {"SCHEDULER_MAX_BATCH_SIZ": "8"},
        {"SCHEDULER_MAX_BATCH_SIZE": "eight"},
        {"SCHEDULER_MAX_BATCH_SIZE": "0"},
        {"SCHEDULER_MAX_ATTEMPTS": "2.5"},
        {"SCHEDULER_TIER_GOLD_RATE_PER_MIN": "10"},
        {"SCHEDULER_TIER_STANDARD_HOME_SHARE": "1.5"},
        {"SCHEDULER_TIER_STANDARD_BURST": "0"},
    ],
)
def test_bad_settings_fail_at_start_up(env):
    with pytest.raises(ValueError):
        SchedulerConfig.from_mapping(env)


def test_bad_tiers_and_unknown_tier_lookups_raise():
    with pytest.raises(ValueError):
        TierConfig("Bad Name", 30, 10, 0.2)
    with pytest.raises(ValueError):
        TierConfig("x", 0, 10, 0.2)
    with pytest.raises(ValueError):
        SchedulerConfig(tiers={"a": TierConfig("b", 30, 10, 0.2)})
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
