"""The console's charts: counters sampled once a second, kept for the last minutes.

``Series.tick()`` (called every ``INTERVAL`` seconds by the HTTP endpoint's sampler) records the
proxy's command count, puts, jobs delivered and, per shard, the bucket counts of the wake-up
latency histogram (``beanrouter_reserve_wakeup_shard_seconds``). ``points()`` turns them into
rates per second and, per shard, the p50 and p99 wake-up latency over the ``WINDOW`` seconds
before each point, estimated from the histogram's buckets as Prometheus' ``histogram_quantile``
does (linear within a bucket). Pure: the samples come from a callable, time from a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["INTERVAL", "KEEP", "WINDOW", "Sample", "Series", "quantile"]

INTERVAL: Final = 1.0
KEEP: Final = 600
"""Samples kept: ten minutes at one a second."""
WINDOW: Final = 10.0
"""Seconds of wake-ups each latency point summarises."""


@dataclass(frozen=True, slots=True)
class Sample:
    time: float
    commands: float
    puts: float
    deliveries: float
    buckets: tuple[float, ...] = ()
    """Upper bounds of the wake-up histogram's buckets (the last one is +Inf)."""
    wakeups: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Per shard: the count in each bucket (not cumulative)."""


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile of observations counted in buckets with upper ``bounds`` (None: no
    observation). In the last (+Inf) bucket: the largest finite bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, (bound, n) in enumerate(zip(bounds, counts, strict=False)):
        if n > 0 and seen + n >= rank:
            if math.isinf(bound):
                return bounds[i - 1] if i > 0 else 0.0
            low = bounds[i - 1] if i > 0 else 0.0
            return low + (bound - low) * ((rank - seen) / n)
        seen += n
    finite = [b for b in bounds if not math.isinf(b)]
    return finite[-1] if finite else None


class Series:
    """The last ``keep`` samples and the chart points built from them."""

    def __init__(self, sample: Callable[[], Sample], keep: int = KEEP) -> None:
        self.sample = sample
        self.samples: deque[Sample] = deque(maxlen=keep)

    def tick(self) -> None:
        self.samples.append(self.sample())

    def points(self, seconds: float = 300.0) -> dict[str, object]:
        """Rates and latencies of the last ``seconds`` (JSON-ready)."""
        samples = list(self.samples)
        if not samples:
            return {"interval": INTERVAL, "window": WINDOW, "shards": [], "points": []}
        start = samples[-1].time - seconds
        shards = sorted({name for s in samples for name in s.wakeups})
        points: list[dict[str, object]] = []
        back = 0  # index of the sample WINDOW seconds before the current one
        for i in range(1, len(samples)):
            prev, cur = samples[i - 1], samples[i]
            while samples[back].time < cur.time - WINDOW and back < i - 1:
                back += 1
            if cur.time <= start:
                continue
            dt = cur.time - prev.time
            if dt <= 0:
                continue
            wake: dict[str, list[float | None]] = {}
            for name in shards:
                now_counts = cur.wakeups.get(name, ())
                old_counts = samples[back].wakeups.get(name, ()) if back < i else ()
                delta = [
                    max(0.0, n - (old_counts[j] if j < len(old_counts) else 0.0))
                    for j, n in enumerate(now_counts)
                ]
                wake[name] = [quantile(0.5, cur.buckets, delta), quantile(0.99, cur.buckets, delta)]
            points.append(
                {
                    "t": cur.time,
                    "commands": max(0.0, (cur.commands - prev.commands) / dt),
                    "puts": max(0.0, (cur.puts - prev.puts) / dt),
                    "deliveries": max(0.0, (cur.deliveries - prev.deliveries) / dt),
                    "wakeup": wake,
                }
            )
        return {"interval": INTERVAL, "window": WINDOW, "shards": shards, "points": points}
