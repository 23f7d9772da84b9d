"""Shard health policy (pure: fake clock and random)."""

from __future__ import annotations

from beanrouter.core.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_down_after_limit_then_probe_with_backoff() -> None:
    clock = Clock()
    h = Health(failure_limit=2, retry=1.0, retry_max=4.0, jitter=0.0, clock=clock, rng=lambda: 0.5)
    assert h.available() and not h.down
    h.failure("refused")
    assert h.available() and not h.down
    h.failure("refused")
    assert h.down and not h.available()
    assert h.next_probe() == 101.0
    clock.now = 101.0
    assert h.available()  # probe due
    h.failure("refused")  # failed probe: interval doubles
    assert h.next_probe() == 103.0
    clock.now = 103.0
    h.failure("x")
    assert h.next_probe() == 107.0
    clock.now = 107.0
    h.failure("x")
    assert h.next_probe() == 111.0  # capped at retry_max
    h.success()
    assert not h.down and h.available() and h.next_probe() is None and h.failures == 0


def test_jitter_bounds() -> None:
    clock = Clock()
    for r, expected in ((0.0, 100.8), (1.0, 101.2), (0.5, 101.0)):

        def rng(r: float = r) -> float:
            return r

        h = Health(failure_limit=1, retry=1.0, jitter=0.2, clock=clock, rng=rng)
        h.failure()
        assert abs(h.retry_at - expected) < 1e-9


def test_success_resets_partial_failures() -> None:
    h = Health(failure_limit=3, clock=Clock())
    h.failure()
    h.failure()
    h.success()
    h.failure()
    h.failure()
    assert not h.down
