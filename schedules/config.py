"""Scheduler settings: tiers (weights, plans, share caps, optional hard caps), batch and
lease limits.

The rule (docs/scheduling.md): each tick the deep workers' free capacity is split among
the tiers with events waiting, in proportion to their ``weight``; a tier that needs less
than its share lends the rest to the others, so no capacity idles while an event may go.
Within a tier:

* ``plan_rate_per_min`` / ``plan_burst``: each home's own token bucket (refilled from Redis
  ``TIME``): over any window of ``T`` seconds one home dispatches at most
  ``plan_burst + plan_rate_per_min × T / 60`` events, whatever capacity is free.
* ``home_share``: while other homes of the tier wait, one home takes at most
  ``max(1, ceil(home_share × quota))`` of a dispatch step's ``quota``, so one noisy home
  cannot starve its tier.
* ``cap_rate_per_min`` / ``cap_burst`` (both or neither; none by default): a hard tier
  bucket, so over any ``T`` seconds the tier dispatches at most
  ``cap_burst + cap_rate_per_min × T / 60`` events even when capacity is idle.

Built from code (``SchedulerConfig()``), a dict, or the environment with ``SCHEDULER_*``
names (``SchedulerConfig.from_mapping(environ)``, which ``vigil.settings`` calls), e.g.
``SCHEDULER_MAX_BATCH_SIZE=10``, ``SCHEDULER_TIER_PREMIUM_WEIGHT=3``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

TIER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
ENV_PREFIX = "SCHEDULER_"


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _share(value: object) -> bool:
    return _positive(value) and value <= 1  # type: ignore[operator]


# Each tier field: its check, what the check asks for, how an environment value is parsed.
_TIER_FIELDS: dict[str, tuple[Callable[[object], bool], str, type]] = {
    "weight": (_positive, "a number > 0", float),
    "plan_rate_per_min": (_positive, "a number > 0", float),
    "plan_burst": (_whole, "an int >= 1", int),
    "home_share": (_share, "a number in (0, 1]", float),
    "cap_rate_per_min": (_positive, "a number > 0 (or unset)", float),
    "cap_burst": (_whole, "an int >= 1 (or unset)", int),
}
_OPTIONAL = frozenset({"cap_rate_per_min", "cap_burst"})
# Names read before weights and plans existed: refused, with what replaced them.
_RETIRED = {
    "RATE_PER_MIN": ("PLAN_RATE_PER_MIN", "WEIGHT", "CAP_RATE_PER_MIN"),
    "BURST": ("PLAN_BURST", "CAP_BURST"),
}


def _field_problem(name: str, value: object) -> str | None:
    if value is None and name in _OPTIONAL:
        return None
    check, wanted, _ = _TIER_FIELDS[name]
    return None if check(value) else f"must be {wanted}, got {value!r}"


@dataclass(frozen=True)
class TierConfig:
    """One subscription tier: its weight in the shared capacity, each home's plan, the
    most one home takes of a tick, and an optional hard cap on the tier."""

    name: str
    weight: float
    plan_rate_per_min: float
    plan_burst: int
    home_share: float
    cap_rate_per_min: float | None = None
    cap_burst: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TIER_NAME.match(self.name):
            raise ValueError(f"tier name must match {TIER_NAME.pattern}, got {self.name!r}")
        for name in _TIER_FIELDS:
            problem = _field_problem(name, getattr(self, name))
            if problem:
                raise ValueError(f"{self.name}: {name} {problem}")
        if (self.cap_rate_per_min is None) != (self.cap_burst is None):
            raise ValueError(f"{self.name}: cap_rate_per_min and cap_burst go together")

    @property
    def plan_refill_per_s(self) -> float:
        """A home's plan bucket refill."""
        return self.plan_rate_per_min / 60.0

    @property
    def has_cap(self) -> bool:
        return self.cap_rate_per_min is not None

    @property
    def cap_refill_per_s(self) -> float | None:
        return None if self.cap_rate_per_min is None else self.cap_rate_per_min / 60.0

    def share_cap(self, quota: int) -> int:
        """The most one home takes of ``quota`` while other homes of the tier wait."""
        # 1e-9: 0.1 × 30 is 3.0000000000000004 in floating point, and means 3.
        return max(1, math.ceil(self.home_share * quota - 1e-9))


DEFAULT_TIERS: Mapping[str, TierConfig] = MappingProxyType(
    {
        "standard": TierConfig("standard", 1, plan_rate_per_min=30, plan_burst=10, home_share=0.25),
        "premium": TierConfig("premium", 2, plan_rate_per_min=60, plan_burst=20, home_share=0.25),
        "enterprise": TierConfig(
            "enterprise", 4, plan_rate_per_min=120, plan_burst=40, home_share=0.2
        ),
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
    scan_limit: int = 200  # most homes one tier's dispatch inspects per step
    reap_interval_s: float = 5.0
    reap_limit: int = 500
    expire_interval_s: float = 5.0
    expire_limit: int = 500
    deep_queued_batches: int = 2  # late binding: full batches per deep queue, pooled
    deep_drain_s: float = 2.0  # queued deep work the measured throughput finishes in this
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
        ValueError naming the variable, so a typo in the config fails at start-up, not at
        the first tick. An empty ``..._CAP_RATE_PER_MIN`` / ``..._CAP_BURST`` means unset.
        """
        scalars = {f.name: f for f in fields(cls) if f.name != "tiers"}
        kwargs: dict[str, object] = {}
        changes: dict[str, dict[str, Any]] = {}
        named: dict[tuple[str, str], str] = {}  # (tier, field) -> the variable that set it
        for key, raw in values.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :]
            if name.lower() in scalars:
                f = scalars[name.lower()]
                kwargs[f.name] = _parse(key, raw, int if f.type == "int" else float)
                continue
            tier_name, attr = _tier_variable(key, name)
            if attr in _OPTIONAL and isinstance(raw, str) and not raw.strip():
                value: object = None
            else:
                value = _parse(key, raw, _TIER_FIELDS[attr][2])
                problem = _field_problem(attr, value)
                if problem:
                    raise ValueError(f"{key} {problem}")
            changes.setdefault(tier_name, {})[attr] = value
            named[tier_name, attr] = key
        tiers = dict(DEFAULT_TIERS)
        for tier_name, change in changes.items():
            merged = {f.name: getattr(tiers[tier_name], f.name) for f in fields(TierConfig)}
            merged.update(change)
            if (merged["cap_rate_per_min"] is None) != (merged["cap_burst"] is None):
                prefix = f"{ENV_PREFIX}TIER_{tier_name.upper()}"
                raise ValueError(
                    f"{prefix}_CAP_RATE_PER_MIN and {prefix}_CAP_BURST must be set together"
                )
            tiers[tier_name] = TierConfig(**merged)
        return cls(tiers=tiers, **kwargs)  # type: ignore[arg-type]


def _tier_variable(key: str, name: str) -> tuple[str, str]:
    """``TIER_<TIER>_<FIELD>`` → (tier, field); ValueError naming ``key`` otherwise."""
    if not name.startswith("TIER_"):
        raise ValueError(f"unknown scheduler setting {key}")
    rest = name[len("TIER_") :]
    for tier_name in sorted(DEFAULT_TIERS, key=len, reverse=True):
        head = tier_name.upper() + "_"
        if not rest.startswith(head):
            continue
        attr = rest[len(head) :]
        if attr.lower() in _TIER_FIELDS:
            return tier_name, attr.lower()
        if attr in _RETIRED:
            prefix = f"{ENV_PREFIX}TIER_{tier_name.upper()}"
            instead = " / ".join(f"{prefix}_{new}" for new in _RETIRED[attr])
            raise ValueError(f"{key} is no longer read; set {instead} instead")
        raise ValueError(f"unknown scheduler setting {key}")
    tier_name = rest.split("_", 1)[0].lower()
    raise ValueError(f"{key}: unknown tier {tier_name!r}; known: {sorted(DEFAULT_TIERS)}")


def _parse(key: str, raw: object, kind: type) -> int | float:
    try:
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(str(raw).strip()) if not isinstance(raw, int | float) else int(raw)
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {kind.__name__}, got {raw!r}") from None
