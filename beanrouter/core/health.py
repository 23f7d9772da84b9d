"""Shard health: marking a shard down after repeated failures and probing it again with backoff.

Pure: time comes from an injected clock and jitter from an injected random source, so the policy
is tested without sockets or sleeps. States: *up* (failures < limit), *down* (not to be used until
``retry_at``), *probing* (``retry_at`` has passed: the next request may try it; a failure pushes
``retry_at`` out again with a doubled interval, a success makes it up).

Invariant: ``available()`` is True exactly when a request may try the shard now.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["Health"]


class Health:
    """Failure bookkeeping of one shard.

    Args:
        failure_limit: consecutive failures that mark the shard down.
        retry: seconds before the first probe of a down shard.
        retry_max: upper bound of the probe interval (it doubles per failed probe).
        jitter: each interval is multiplied by a random factor in [1 - jitter, 1 + jitter].
        clock: monotonic clock in seconds.
        rng: random source (``random.random``-like, in [0, 1)).
    """

    __slots__ = (
        "_clock",
        "_rng",
        "failure_limit",
        "failures",
        "interval",
        "jitter",
        "last_error",
        "retry",
        "retry_at",
        "retry_max",
    )

    def __init__(
        self,
        failure_limit: int = 2,
        retry: float = 0.5,
        retry_max: float = 5.0,
        jitter: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.failure_limit = failure_limit
        self.retry = retry
        self.retry_max = retry_max
        self.jitter = jitter
        self._clock = clock
        self._rng = rng
        self.failures = 0
        self.interval = 0.0
        self.retry_at = 0.0
        self.last_error = ""

    @property
    def down(self) -> bool:
        """True once ``failure_limit`` consecutive failures were recorded (until a success)."""
        return self.failures >= self.failure_limit

    def available(self, now: float | None = None) -> bool:
        """True when a request may try the shard now (it is up, or its probe is due)."""
        if not self.down:
            return True
        return (self._clock() if now is None else now) >= self.retry_at

    def next_probe(self) -> float | None:
        """When a down shard may be tried again (None when it is up)."""
        return self.retry_at if self.down else None

    def success(self) -> None:
        """The shard answered: it is up."""
        self.failures = 0
        self.interval = 0.0
        self.last_error = ""

    def failure(self, reason: str = "") -> None:
        """A connection failure or timeout on the shard."""
        self.failures += 1
        self.last_error = reason
        if self.failures < self.failure_limit:
            return
        self.interval = (
            self.retry if self.interval == 0.0 else min(self.interval * 2, self.retry_max)
        )
        factor = 1.0 + self.jitter * (2.0 * self._rng() - 1.0)
        self.retry_at = self._clock() + self.interval * factor
