"""Fixtures for the conformance suite.

``conformance`` is parametrized over the implementations: ``beanstalkd`` (the real server,
from ``$BEANSTALKD_BIN`` or ``/usr/bin/beanstalkd``), ``beanrouter``
(``python -m beanrouter server``), ``cluster1`` (``python -m beanrouter cluster --shards 1``:
the proxy over one shard, byte-identical) and ``cluster3`` (``--shards 3``: job ids mapped to
the reference's, ``harness.IdMap``; cases in ``harness.SHARDED_SKIPS`` skipped, see
docs/compatibility.md).
Each test gets its implementation's ``Conformance`` object, which starts servers lazily inside
the test, so a server that cannot start makes the test fail rather than be skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import IMPLEMENTATIONS, Case, Conformance, Entry, Server, ServerPool


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    """Fresh servers, one spare per implementation booting ahead of use."""
    pool = ServerPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def shared_servers() -> Iterator[dict[tuple[str, tuple[str, ...]], Server]]:
    """Long-lived servers per implementation and flags, for cases that ignore server state."""
    servers: dict[tuple[str, tuple[str, ...]], Server] = {}
    yield servers
    for srv in servers.values():
        srv.stop()


@pytest.fixture(scope="session")
def reference_cache() -> dict[Case, list[Entry]]:
    """Transcripts of the real beanstalkd, so each case runs there once per session."""
    return {}


@pytest.fixture(params=IMPLEMENTATIONS)
def conformance(
    request: pytest.FixtureRequest,
    server_pool: ServerPool,
    shared_servers: dict[tuple[str, tuple[str, ...]], Server],
    reference_cache: dict[Case, list[Entry]],
) -> Iterator[Conformance]:
    """The implementation under test, with the real beanstalkd as the reference."""
    impl: str = request.param
    c = Conformance(impl, server_pool, shared_servers, reference_cache)
    yield c
    c.close()
