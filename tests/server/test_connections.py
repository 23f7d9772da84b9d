"""Connections arriving in bursts, and connections closing: what the kernel and the loop see.

- Listen backlog: beanstalkd listens with a backlog of 1024. A server that does not accept for a
  moment (busy, or stopped here with SIGSTOP) must still have every connection of a burst of a few
  hundred completed by the kernel, not drop their SYNs (which costs the clients 1 s retries).
- Close ordering: beanstalkd handles a peer's EOF in arrival order, so a job held by a client that
  has gone is ready for the very next command of any other client, and the closed session is no
  longer counted.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import BEANROUTER, BEANSTALKD, HOST, Server

BURST = 400
"""Connections opened while the server accepts none (asyncio's default backlog is 100)."""


@pytest.fixture(params=[BEANSTALKD, BEANROUTER])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(request.param)
    srv.start()
    yield srv
    srv.stop()


def established(socks: list[socket.socket], wait: float) -> int:
    """How many of the non-blocking connects in ``socks`` completed within ``wait`` seconds."""
    pending = {s.fileno(): s for s in socks}
    done = 0
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], list(pending), [], max(0.0, deadline - time.monotonic()))
        for fd in writable:
            s = pending.pop(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done += 1
    return done


def test_listen_backlog_holds_a_burst_while_not_accepting(server: Server) -> None:
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if somaxconn < BURST:
        pytest.skip(f"net.core.somaxconn is {somaxconn}, below the {BURST} this test needs")
    pid = server.pid
    os.kill(pid, signal.SIGSTOP)
    socks: list[socket.socket] = []
    try:
        for _ in range(BURST):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((HOST, server.port))
            socks.append(s)
        # A dropped SYN is retried after 1 s: well within this wait the kernel completes every
        # handshake the backlog has room for, and none of the others.
        count = established(socks, 0.7)
    finally:
        os.kill(pid, signal.SIGCONT)
        for s in socks:
            s.close()
    assert count == BURST, f"only {count} of {BURST} connects completed: listen backlog too small"


def test_burst_of_connections_each_sending_stats(server: Server) -> None:
    socks = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(200)]
    try:
        for s in socks:
            s.sendall(b"stats\r\n")
        for s in socks:
            data = b""
            while not data.endswith(b"\r\n") or data.count(b"\r\n") < 2:
                chunk = s.recv(65536)
                assert chunk, "server closed the connection"
                data += chunk
            assert data.startswith(b"OK ")
    finally:
        for s in socks:
            s.close()
