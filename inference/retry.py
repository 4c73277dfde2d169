"""Trying an image source again after a transient failure: backoff with jitter, in a budget.

A camera's web server that is restarting, a DNS answer that timed out, a 503 from a busy
NVR: each usually succeeds a second later. Permanent refusals (``retryable`` False: a
blocked address, a 404, a bomb) are raised at once, never retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from inference.errors import ImageSourceError

if TYPE_CHECKING:
    from vigil.settings import Settings

T = TypeVar("T")

DEFAULT_ATTEMPTS = 3
DEFAULT_BASE_S = 0.5
DEFAULT_MAX_S = 4.0
DEFAULT_BUDGET_S = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries; the wait before retry *n* is drawn from
    [d/2, d] with d = min(``max_s``, ``base_s`` · 2^(n-1)) ("equal jitter": never an
    immediate retry, and many workers retrying one camera spread out). No retry starts once
    ``budget_s`` would be passed, so the whole try fits in the event's lease."""

    attempts: int = DEFAULT_ATTEMPTS
    base_s: float = DEFAULT_BASE_S
    max_s: float = DEFAULT_MAX_S
    budget_s: float = DEFAULT_BUDGET_S
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(f"attempts must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        for name in ("base_s", "max_s", "budget_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The ``FETCH_*`` settings; the budget never exceeds half the event's lease, so a
        batch that retries still commits before the reaper hands its events out again."""
        lease_s = settings.scheduler.processing_timeout_s
        return cls(
            attempts=settings.fetch_attempts,
            base_s=settings.fetch_backoff_base_s,
            max_s=settings.fetch_backoff_max_s,
            budget_s=min(settings.fetch_retry_budget_s, lease_s / 2),
        )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the second attempt)."""
        cap = min(self.max_s, self.base_s * 2 ** (retry - 1))
        return cap / 2 + self.rng.uniform(0, cap / 2)

    def call(self, operation: Callable[[], T]) -> T:
        """``operation()``, tried again on retryable refusals while the policy allows.

        The error finally raised carries ``attempts``: how many tries it took.
        """
        start = self.clock()
        attempt = 1
        while True:
            try:
                return operation()
            except ImageSourceError as exc:
                exc.attempts = attempt
                if not exc.retryable or attempt >= self.attempts:
                    raise
                pause = self.delay(attempt)
                if self.clock() - start + pause > self.budget_s:
                    raise
            self.sleep(pause)
            attempt += 1
