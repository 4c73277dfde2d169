"""schedules.config: defaults, parsing from env, validation."""

from __future__ import annotations

import pytest

from schedules.config import DEFAULT_TIERS, SchedulerConfig, TierConfig, configured


def test_default_tiers_follow_the_source_rates():
    rates = {name: tier.rate_per_min for name, tier in DEFAULT_TIERS.items()}
    assert rates == {"standard": 30, "premium": 60, "enterprise": 120}
    config = SchedulerConfig()
    assert (config.max_batch_size, config.processing_timeout_s, config.max_attempts) == (
        10,
        300,
        3,
    )


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
    configured.cache_clear()
    monkeypatch.setenv("SCHEDULER_CANDIDATE_TTL_S", "45")
    try:
        assert configured().candidate_ttl_s == 45
        monkeypatch.setenv("SCHEDULER_CANDIDATE_TTL_S", "90")
        assert configured().candidate_ttl_s == 45  # read once per process
    finally:
        configured.cache_clear()
