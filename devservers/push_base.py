"""What the local FCM and APNs servers share: injected faults, dead tokens, and the record
of every request and accepted message, so tests and benchmarks can check what arrived."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def pkcs8_pem(key: PrivateKeyTypes) -> bytes:
    """The private key as PKCS#8 PEM, unencrypted (how Google and Apple hand out keys)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Fault:
    kind: str  # "fail" | "hang"
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0


class PushServerBase:
    """Fault injection, dead tokens and the record of requests, shared with the APNs server.

    Thread-safe; subclasses provide start() and stop().
    """

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._rate, self._rng = 0.0, random.Random(0)
        self._statuses: tuple[int, ...] = (500, 503)
        self._requests: list[dict[str, Any]] = []
        self._accepted: list[dict[str, Any]] = []
        self._dead: set[str] = set()

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        """Answer the next n requests with ``status`` (and Retry-After, if given)."""
        with self._lock:
            self._faults.extend(Fault("fail", status, retry_after) for _ in range(n))

    def hang_next(self, n: int, seconds: float) -> None:
        """Hold the next n requests for ``seconds``, then drop them unanswered."""
        with self._lock:
            self._faults.extend(Fault("hang", seconds=seconds) for _ in range(n))

    def fault_rate(
        self, p: float, statuses: Sequence[int] = (500, 503), seed: int | None = 0
    ) -> None:
        """Fail each later request with probability p, with a status drawn from ``statuses``."""
        if not 0.0 <= p <= 1.0 or not statuses:
            raise ValueError("fault_rate needs 0 <= p <= 1 and at least one status")
        with self._lock:
            self._rate, self._statuses, self._rng = p, tuple(statuses), random.Random(seed)

    def unregister(self, token: str) -> None:
        """Later sends to ``token`` answer as for an uninstalled app."""
        with self._lock:
            self._dead.add(token)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """Every accepted message so far (a copy)."""
        with self._lock:
            return list(self._accepted)

    def reset(self) -> None:
        """Forget faults, dead tokens and records."""
        with self._lock:
            self._faults.clear()
            self._rate = 0.0
            self._dead.clear()
            self._requests.clear()
            self._accepted.clear()

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self._rate and self._rng.random() < self._rate:
                return Fault("fail", self._rng.choice(self._statuses))
            return None

    def _is_dead(self, token: str) -> bool:
        with self._lock:
            return token in self._dead

    def _record(self, **entry: Any) -> None:
        with self._lock:
            self._requests.append(entry)

    def _accept(self, **entry: Any) -> None:
        with self._lock:
            self._accepted.append(entry)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
