"""Placement: which shards a tube lives on (the ketama ring over shard *names*).

The continuum is built by uhashring in ketama mode and equals libmemcached's weighted ketama and
twemproxy's ``distribution: ketama`` with ``hash: md5``: each shard gets
``floor(weight / total * 40 * n) `` MD5 digests of ``"<name>-<i>"``, 4 points per digest; a key
(the tube name) hashes to the first 4 bytes of its MD5, little-endian, and belongs to the first
point at or after it, wrapping at the end.

Two details are computed here rather than left to uhashring, so placement matches twemproxy bit for
bit: the digest count per shard uses twemproxy's single-precision arithmetic (uhashring's integer
formula differs for some weight mixes, e.g. 104 of 650 with 5 shards), and lookup takes the first
point *at or after* the hash (uhashring takes the first point strictly after it).

Invariants: a ``Placement`` is immutable once built (a new configuration builds a new one and the
router swaps it in one assignment, since uhashring is not safe to mutate while read); its
tube -> preference-list cache only ever grows with values that never change.
"""

from __future__ import annotations

import hashlib
import math
import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from uhashring import HashRing  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from .config import ClusterConfig

__all__ = ["POINTS_PER_SERVER", "Placement", "Ring", "ketama_digests", "key_hash"]

POINTS_PER_SERVER = 160
"""Ketama points per shard of average weight (libmemcached's MEMCACHED_POINTS_PER_SERVER_KETAMA)."""
_POINTS_PER_DIGEST = 4
_MAX_CONTINUA = 32
_CONTINUA: dict[tuple[tuple[str, int], ...], tuple[list[int], list[str]]] = {}
"""The continua built, by ``(name, digest count)`` of each shard: building one takes ~1 ms for
three shards, and ``beanrouter cluster`` builds the same one twice before its first reply (shard
ids, then the proxy's placement), as do the facades of one process for one configuration."""


def _f32(value: float) -> float:
    """``value`` rounded to single precision, as a C ``float`` holds it."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def ketama_digests(weights: Sequence[int]) -> list[int]:
    """MD5 digests (each giving 4 points) per shard, exactly as twemproxy/libmemcached compute them.

    ``floor((float)(pct * 160 / 4 * (float)n) + 1e-10)`` with ``pct = (float)w / (float)total``,
    every step in single precision.
    """
    if not weights or any(w <= 0 for w in weights):
        raise ValueError("weights must be positive and at least one")
    total = _f32(float(sum(weights)))
    n = _f32(float(len(weights)))
    counts = []
    for w in weights:
        pct = _f32(_f32(float(w)) / total)
        scaled = _f32(_f32(_f32(pct * POINTS_PER_SERVER) / _POINTS_PER_DIGEST) * n)
        counts.append(math.floor(scaled + 0.0000000001))
    return counts


class Ring:
    """The ketama continuum over shard names.

    Args:
        shards: ``(name, weight)`` pairs; names unique, weights positive integers.
    """

    __slots__ = ("_names", "_owners", "_points", "digests")

    def __init__(self, shards: Sequence[tuple[str, int]]) -> None:
        names = [name for name, _ in shards]
        if len(set(names)) != len(names):
            raise ValueError("shard names must be unique")
        self.digests = dict(zip(names, ketama_digests([w for _, w in shards]), strict=True))
        # Weight 1 for all and vnodes = the digest count makes uhashring generate exactly
        # `digests` digests of "<name>-<i>" per shard (its count is vnodes * n * w // sum(w)).
        key = tuple(self.digests.items())
        continuum = _CONTINUA.get(key)
        if continuum is None:
            nodes: dict[str, dict[str, Any]] = {
                name: {"weight": 1, "vnodes": count} for name, count in self.digests.items()
            }
            ring = HashRing(nodes=nodes, hash_fn="ketama")
            points: list[tuple[int, str]] = ring.get_points()
            continuum = ([p for p, _ in points], [name for _, name in points])
            if len(_CONTINUA) >= _MAX_CONTINUA:
                _CONTINUA.clear()
            _CONTINUA[key] = continuum
        self._points, self._owners = continuum  # shared: never changed once built
        self._names = tuple(names)

    @property
    def names(self) -> tuple[str, ...]:
        """Shard names in configuration order."""
        return self._names

    @property
    def points(self) -> int:
        """Number of points on the continuum."""
        return len(self._points)

    def point_counts(self) -> dict[str, int]:
        """Points per shard."""
        return {name: 4 * n for name, n in self.digests.items()}

    def shares(self) -> dict[str, float]:
        """Fraction of the hash space (so of tube names, on average) each shard owns."""
        share = dict.fromkeys(self._names, 0.0)
        points, owners = self._points, self._owners
        for i, point in enumerate(points):
            start = points[i - 1] if i else points[-1] - (1 << 32)
            share[owners[i]] += (point - start) / (1 << 32)
        return share

    def _position(self, key: str) -> int:
        pos = bisect_left(self._points, key_hash(key))
        return 0 if pos == len(self._points) else pos

    def owner(self, key: str) -> str:
        """The shard that owns ``key``."""
        return self._owners[self._position(key)]

    def successors(self, key: str, count: int | None = None) -> tuple[str, ...]:
        """The owner of ``key`` then the next distinct shards clockwise (at most ``count``)."""
        limit = len(self._names) if count is None else min(count, len(self._names))
        start = self._position(key)
        owners = self._owners
        seen: list[str] = []
        n = len(owners)
        for i in range(n):
            name = owners[(start + i) % n]
            if name not in seen:
                seen.append(name)
                if len(seen) == limit:
                    break
        return tuple(seen)


def key_hash(key: str) -> int:
    """Ketama hash of a key: the first 4 bytes of its MD5, little-endian."""
    digest = hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "little")


class Placement:
    """A ring plus the failover depth: where a tube's puts go and where its consumers look.

    Args:
        shards: ``(name, weight)`` pairs.
        failover: successors after the owner that take puts when the owner is down and that
            consumers also watch (0 disables failover).
        draining: names of shards being emptied (``drain: true``): they are left off the ring
            that places puts, but stay where consumers look for the tubes the full ring (with
            them) placed there (``consumers``).
    """

    __slots__ = ("_cache", "_consumers", "draining", "failover", "full", "ring")

    def __init__(
        self, shards: Sequence[tuple[str, int]], failover: int = 1, draining: Iterable[str] = ()
    ) -> None:
        if failover < 0:
            raise ValueError("failover must be >= 0")
        drained = frozenset(draining)
        names = {name for name, _ in shards}
        if not drained <= names:
            raise ValueError(f"draining shards not in the ring: {sorted(drained - names)}")
        live = [(name, weight) for name, weight in shards if name not in drained]
        if not live:
            raise ValueError("every shard is draining: at least one must take puts")
        self.ring = Ring(live)
        self.full: Ring | None = Ring(shards) if drained else None
        """The ring with the draining shards (None when none drains)."""
        self.draining = drained
        self.failover = failover
        self._cache: dict[str, tuple[str, ...]] = {}
        self._consumers: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_config(cls, config: ClusterConfig, failover: int | None = None) -> Placement:
        """The placement of ``config`` (its weights, failover and draining shards); ``failover``
        overrides ``config.failover``."""
        return cls(
            [(s.name, s.weight) for s in config.servers],
            config.failover if failover is None else failover,
            config.draining,
        )

    def preference(self, tube: str) -> tuple[str, ...]:
        """The tube's owner then its first ``failover`` successors (cached); never a draining
        shard."""
        pref = self._cache.get(tube)
        if pref is None:
            pref = self.ring.successors(tube, self.failover + 1)
            if len(self._cache) < 100_000:
                self._cache[tube] = pref
        return pref

    def owner(self, tube: str) -> str:
        """The ring owner of ``tube``."""
        return self.preference(tube)[0]

    def consumers(self, tube: str) -> tuple[str, ...]:
        """Where consumers of ``tube`` look: ``preference(tube)``, then, while shards drain, the
        shards of its preference on the ring with them (where its jobs were put before the
        drain). Equal to ``preference`` when nothing drains."""
        if self.full is None:
            return self.preference(tube)
        found = self._consumers.get(tube)
        if found is None:
            names = list(self.preference(tube))
            for name in self.full.successors(tube, self.failover + 1):
                if name not in names:
                    names.append(name)
            found = tuple(names)
            if len(self._consumers) < 100_000:
                self._consumers[tube] = found
        return found
