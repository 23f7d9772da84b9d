"""Fixtures: a three-shard cluster of real beanstalkd or bundled servers (parametrized), and a
``Router`` over it whose shard ids put tube ``default`` on shard id 0 (so the seed session sees
beanstalkd's own ids)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from beanrouter.core.ring import Placement
from beanrouter.router import Router

from .async_shell import SyncAsyncRouter
from .cluster import BACKENDS, Shard, start_all

NAMES = ("s0", "s1", "s2")


@dataclass
class Cluster:
    backend: str
    shards: dict[str, Shard]
    lines: list[str]
    shell: str = "blocking"

    def router(self, **kw: object) -> Router:
        """A router over the cluster: ``Router``, or ``AsyncRouter`` behind the same blocking API
        (modules that set ``SHELLS`` run their tests with both)."""
        if self.shell == "async":
            return SyncAsyncRouter(self.lines, **kw)  # type: ignore[return-value]
        return Router(self.lines, **kw)  # type: ignore[arg-type]

    def tube_on(self, owner: str, prefix: str = "t") -> str:
        """A tube name whose ring owner is ``owner``."""
        placement = Placement([(n, 1) for n in NAMES])
        for i in range(10_000):
            tube = f"{prefix}{i}"
            if placement.owner(tube) == owner:
                return tube
        raise AssertionError("no tube found")


def server_lines(shards: list[Shard]) -> list[str]:
    placement = Placement([(n, 1) for n in NAMES])
    owner = placement.owner("default")
    others = iter(range(1, len(NAMES)))
    lines = []
    for name, shard in zip(NAMES, shards, strict=True):
        sid = 0 if name == owner else next(others)
        lines.append(f"{shard.address} {name} id={sid}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "shell" in metafunc.fixturenames:
        metafunc.parametrize("shell", getattr(metafunc.module, "SHELLS", ("blocking",)))


@pytest.fixture(params=BACKENDS)
def cluster(request: pytest.FixtureRequest, shell: str) -> Iterator[Cluster]:
    backend: str = request.param
    shards = start_all(backend, len(NAMES))
    try:
        yield Cluster(backend, dict(zip(NAMES, shards, strict=True)), server_lines(shards), shell)
    finally:
        for shard in shards:
            shard.stop()


@pytest.fixture
def router(cluster: Cluster) -> Iterator[Router]:
    r = cluster.router()
    try:
        yield r
    finally:
        r.close()
