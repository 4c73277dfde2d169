"""Scheduler settings: tiers and their rates, batch and lease limits.

Rate rule (a token bucket per tier, refilled from Redis ``TIME``): over any window of
``T`` seconds a tier dispatches at most ``burst + rate_per_min × T / 60`` events.

Per-home cap: ``home_share`` is the largest fraction of its tier's rate one home may take.
Each home has its own token bucket with ``refill = home_share × tier rate`` and
``capacity = max(1, home_share × burst)``, so over any window of ``T`` seconds one home
dispatches at most ``home_capacity + home_share × rate_per_min × T / 60`` events, and a
noisy home cannot take a tier's budget.

Built from code (``SchedulerConfig()``), a dict, or the environment with ``SCHEDULER_*``
names (``SchedulerConfig.from_mapping(environ)``, which ``vigil.settings`` calls), e.g.
``SCHEDULER_MAX_BATCH_SIZE=10``, ``SCHEDULER_TIER_PREMIUM_RATE_PER_MIN=90``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

TIER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
ENV_PREFIX = "SCHEDULER_"


@dataclass(frozen=True)
class TierConfig:
    """One subscription tier's deep-analysis budget."""

    name: str
    rate_per_min: float
    burst: int
    home_share: float

    def __post_init__(self) -> None:
        if not TIER_NAME.match(self.name):
            raise ValueError(f"tier name must match {TIER_NAME.pattern}, got {self.name!r}")
        if not (math.isfinite(self.rate_per_min) and self.rate_per_min > 0):
            raise ValueError(f"{self.name}: rate_per_min must be > 0")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"{self.name}: burst must be an int >= 1")
        if not (math.isfinite(self.home_share) and 0 < self.home_share <= 1):
            raise ValueError(f"{self.name}: home_share must be in (0, 1]")

    @property
    def refill_per_s(self) -> float:
        return self.rate_per_min / 60.0

    @property
    def home_capacity(self) -> float:
        return max(1.0, self.burst * self.home_share)

    @property
    def home_refill_per_s(self) -> float:
        return self.refill_per_s * self.home_share


DEFAULT_TIERS: Mapping[str, TierConfig] = MappingProxyType(
    {
        "standard": TierConfig("standard", rate_per_min=30, burst=10, home_share=0.25),
        "premium": TierConfig("premium", rate_per_min=60, burst=20, home_share=0.25),
        "enterprise": TierConfig("enterprise", rate_per_min=120, burst=40, home_share=0.2),
    }
)


@dataclass(frozen=True)
class SchedulerConfig:
    """Everything the tick, the reaper and the candidate store need."""

    tiers: Mapping[str, TierConfig] = field(default_factory=lambda: DEFAULT_TIERS)
    max_batch_size: int = 10
    processing_timeout_s: float = 300.0
    max_attempts: int = 3
    candidate_ttl_s: float = 600.0
    tick_interval_s: float = 1.0
    tick_lock_ms: int = 900  # crash safety only: a tick releases its lock when done
    k_per_tick: int = 50  # most events one tier dispatches per tick
    scan_limit: int = 200  # most homes one tier's dispatch inspects per tick
    reap_interval_s: float = 5.0
    reap_limit: int = 500
    expire_interval_s: float = 5.0
    expire_limit: int = 500
    deep_queued_batches: int = 2  # late binding: batches a tier's queue may hold, at most
    lite_interval_s: float = 0.5  # how often the beat feeds the lite queue
    lite_batch_size: int = 16  # events per lite scoring task
    lite_queued_batches: int = 4  # lite batches waiting in the broker, at most

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", MappingProxyType(dict(self.tiers)))
        if not self.tiers:
            raise ValueError("at least one tier is needed")
        for name, tier in self.tiers.items():
            if tier.name != name:
                raise ValueError(f"tier {tier.name!r} is filed under {name!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tiers":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{f.name} must be > 0, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise ValueError(f"{f.name} must be an int, got {value!r}")

    def tier(self, name: str) -> TierConfig:
        try:
            return self.tiers[name]
        except KeyError:
            raise ValueError(f"unknown tier {name!r}; known: {sorted(self.tiers)}") from None

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> SchedulerConfig:
        """From flat ``SCHEDULER_*`` names (the environment, or a dict of the same names).

        Other names are ignored; an unknown ``SCHEDULER_*`` name or a bad value raises
        ValueError, so a typo in the config fails at start-up, not at the first tick.
        """
        scalars = {f.name: f for f in fields(cls) if f.name != "tiers"}
        kwargs: dict[str, object] = {}
        tiers = dict(DEFAULT_TIERS)
        tier_fields = {"RATE_PER_MIN": float, "BURST": int, "HOME_SHARE": float}
        for key, raw in values.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :]
            if name.lower() in scalars:
                f = scalars[name.lower()]
                kwargs[f.name] = _parse(key, raw, int if f.type == "int" else float)
                continue
            match = re.fullmatch(r"TIER_([A-Z][A-Z0-9_]*?)_(RATE_PER_MIN|BURST|HOME_SHARE)", name)
            if not match:
                raise ValueError(f"unknown scheduler setting {key}")
            tier_name, attr = match.group(1).lower(), match.group(2)
            if tier_name not in tiers:
                raise ValueError(f"{key}: unknown tier {tier_name!r}")
            value = _parse(key, raw, tier_fields[attr])
            # Any: the field (a float or an int) is chosen by the variable's name at run time.
            change: dict[str, Any] = {attr.lower(): value}
            tiers[tier_name] = replace(tiers[tier_name], **change)
        return cls(tiers=tiers, **kwargs)  # type: ignore[arg-type]


def _parse(key: str, raw: object, kind: type) -> int | float:
    try:
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(str(raw).strip()) if not isinstance(raw, int | float) else int(raw)
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {kind.__name__}, got {raw!r}") from None
