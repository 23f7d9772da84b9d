"""Fixtures shared by the proxy tests that start real shards and proxies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.procs import Proc
from tests.router.cluster import Shard

from .test_failures import Proxy


@pytest.fixture
def cleanup() -> Iterator[list[object]]:
    """Shards and proxies to stop at the end of a test, whatever happened."""
    started: list[object] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, Proxy):
            thing.stop()
        elif isinstance(thing, Proc):
            thing.close()
        elif isinstance(thing, Shard):
            thing.stop()
        else:  # a process left running would probe, and scan, the ports later tests take
            raise AssertionError(f"cleanup does not know how to stop {thing!r}")
