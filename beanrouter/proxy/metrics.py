"""A small metrics registry rendered in the Prometheus text format (version 0.0.4).

No dependency: counters, gauges and histograms with fixed label names, kept in plain dicts keyed
by label-value tuples, and rendered on demand for ``/metrics``. Every name gets the ``beanrouter_``
prefix; a counter's name must end in ``_total``. Families are created once (``Registry.counter``
and friends return the existing family when called again with the same name and kind), so any
part of the proxy — the frame here, the routing core through ``ProxyStats.metrics`` — can get
its own handle by name. Values that live elsewhere (shard health, connection counts) are copied
in by collectors, callables run just before each render.

Invariants: a family's label names never change; a sample's label values have exactly that many
entries; histogram buckets are sorted and end with ``+Inf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "DEFAULT_BUCKETS",
    "PREFIX",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
]

PREFIX = "beanrouter_"
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds, for latencies from sub-millisecond (a local shard) to many seconds."""

Labels = tuple[str, ...]


def _valid_name(name: str) -> bool:
    return (
        bool(name)
        and not name[0].isdigit()
        and all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    )


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class _Family:
    kind = ""
    __slots__ = ("help", "labelnames", "name")

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def _check(self, labels: Labels) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels!r}")

    def _label_text(self, labels: Labels, extra: tuple[str, str] | None = None) -> str:
        pairs = [f'{k}="{_escape_label(v)}"' for k, v in zip(self.labelnames, labels, strict=True)]
        if extra is not None:
            pairs.append(f'{extra[0]}="{extra[1]}"')
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self._sample_lines()

    def _sample_lines(self) -> Iterator[str]:  # pragma: no cover - overridden
        return iter(())


class Counter(_Family):
    """A monotonically increasing value per label set."""

    kind = "counter"
    __slots__ = ("values",)

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) to the sample with ``labels`` (label values, in order)."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        values = self.values
        if labels not in values:
            self._check(labels)
            values[labels] = 0.0
        values[labels] += amount

    def set_total(self, labels: Labels, total: float) -> None:
        """Copy in a total counted elsewhere (collectors); must never decrease."""
        self._check(labels)
        self.values[labels] = total

    def value(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0.0)

    def _sample_lines(self) -> Iterator[str]:
        for labels, value in self.values.items():
            yield f"{self.name}{self._label_text(labels)} {_number(value)}"


class Gauge(_Family):
    """A value that goes up and down, per label set."""

    kind = "gauge"
    __slots__ = ("values",)

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, value: float, labels: Labels = ()) -> None:
        self._check(labels)
        self.values[labels] = value

    def inc(self, amount: float = 1.0, labels: Labels = ()) -> None:
        self._check(labels)
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def clear(self) -> None:
        """Forget every sample (a collector about to set the current ones)."""
        self.values.clear()

    def value(self, labels: Labels = ()) -> float:
        return self.values.get(labels, 0.0)

    def _sample_lines(self) -> Iterator[str]:
        for labels, value in self.values.items():
            yield f"{self.name}{self._label_text(labels)} {_number(value)}"


class Histogram(_Family):
    """Observations counted into cumulative buckets, with their sum and count, per label set."""

    kind = "histogram"
    __slots__ = ("buckets", "data")

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help, labelnames)
        if "le" in self.labelnames:
            raise ValueError("'le' is reserved for histogram buckets")
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        # per label set: [count per bucket (not cumulative)..., sum]
        self.data: dict[Labels, list[float]] = {}

    def observe(self, value: float, labels: Labels = ()) -> None:
        row = self.data.get(labels)
        if row is None:
            self._check(labels)
            row = self.data[labels] = [0.0] * (len(self.buckets) + 1)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                row[i] += 1
                break
        row[-1] += value

    def count(self, labels: Labels = ()) -> float:
        row = self.data.get(labels)
        return 0.0 if row is None else sum(row[:-1])

    def _sample_lines(self) -> Iterator[str]:
        for labels, row in self.data.items():
            cumulative = 0.0
            for bound, n in zip(self.buckets, row, strict=False):
                cumulative += n
                le = ("le", _number(bound))
                yield f"{self.name}_bucket{self._label_text(labels, le)} {_number(cumulative)}"
            yield f"{self.name}_sum{self._label_text(labels)} {_number(row[-1])}"
            yield f"{self.name}_count{self._label_text(labels)} {_number(cumulative)}"


class Registry:
    """The process's metric families, rendered in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._collectors: list[Callable[[], None]] = []

    def _get(self, name: str, kind: type[_Family], make: Callable[[str], _Family]) -> _Family:
        full = name if name.startswith(PREFIX) else PREFIX + name
        family = self._families.get(full)
        if family is None:
            if not _valid_name(full):
                raise ValueError(f"invalid metric name {full!r}")
            family = self._families[full] = make(full)
        elif type(family) is not kind:
            raise ValueError(f"{full} is already registered as a {family.kind}")
        return family

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``beanrouter_<name>`` (created on first use; ``name`` ends in _total)."""
        if not name.endswith("_total"):
            raise ValueError(f"counter names end in _total: {name!r}")
        family = self._get(name, Counter, lambda full: Counter(full, help, labelnames))
        assert isinstance(family, Counter)
        return family

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        """The gauge ``beanrouter_<name>`` (created on first use)."""
        family = self._get(name, Gauge, lambda full: Gauge(full, help, labelnames))
        assert isinstance(family, Gauge)
        return family

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """The histogram ``beanrouter_<name>`` (created on first use)."""
        family = self._get(name, Histogram, lambda full: Histogram(full, help, labelnames, buckets))
        assert isinstance(family, Histogram)
        return family

    def find(self, name: str) -> Counter | Gauge | Histogram | None:
        """The family ``beanrouter_<name>`` if registered (values as of the last ``collect``)."""
        family = self._families.get(name if name.startswith(PREFIX) else PREFIX + name)
        return family if isinstance(family, Counter | Gauge | Histogram) else None

    def collect(self) -> None:
        """Run the collectors (copy the live values in), as ``render`` does."""
        for collect in self._collectors:
            collect()

    def add_collector(self, collect: Callable[[], None]) -> None:
        """Run ``collect`` before every render (to copy live values into families)."""
        self._collectors.append(collect)

    def render(self) -> str:
        """Every family in the Prometheus text exposition format."""
        for collect in self._collectors:
            collect()
        out: list[str] = []
        for family in self._families.values():
            out.extend(family.lines())
        return "\n".join(out) + "\n" if out else ""
