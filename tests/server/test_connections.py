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


def stopped(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it really is stopped (delivery is asynchronous)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


class Client:
    """A blocking client connection reading whole replies."""

    def __init__(self, srv: Server) -> None:
        self.sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One reply: a line, plus its body for ``OK``/``RESERVED``/``FOUND``."""
        line = self.file.readline()
        assert line.endswith(b"\r\n"), f"connection closed after {line!r}"
        words = line.split()
        if words and words[0] in (b"OK", b"RESERVED", b"FOUND"):
            return line + self.file.read(int(words[-1]) + 2)
        return line

    def ask(self, command: bytes) -> bytes:
        self.send(command)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def stat(reply: bytes, key: bytes) -> int:
    for line in reply.split(b"\n"):
        name, _, value = line.partition(b": ")
        if name == key:
            return int(value)
    raise AssertionError(f"{key!r} not in {reply!r}")


@pytest.mark.parametrize("round_", range(3))
def test_job_of_a_vanished_client_goes_to_the_next_command(server: Server, round_: int) -> None:
    """A holds a job and closes; B's reserve-with-timeout 0, read in the same loop turn as A's
    EOF, gets the job (beanstalkd releases it at the EOF, before B's command)."""
    holder, other = Client(server), Client(server)
    try:
        tube = f"t{round_}".encode()
        assert holder.ask(b"use " + tube + b"\r\n") == b"USING " + tube + b"\r\n"
        assert holder.ask(b"watch " + tube + b"\r\n") == b"WATCHING 2\r\n"
        assert other.ask(b"watch " + tube + b"\r\n") == b"WATCHING 2\r\n"
        assert holder.ask(b"put 0 0 100 3\r\nabc\r\n").startswith(b"INSERTED ")
        assert holder.ask(b"reserve-with-timeout 0\r\n").startswith(b"RESERVED ")
        stopped(server.pid)
        try:
            holder.close()  # FIN: everything it was sent has been read
            other.send(b"reserve-with-timeout 0\r\n")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        reply = other.reply()
        assert reply.startswith(b"RESERVED ") and reply.endswith(b"\r\nabc\r\n"), reply
    finally:
        holder.close()
        other.close()


@pytest.mark.parametrize("round_", range(3))
def test_closed_connection_is_not_counted_by_the_next_one(server: Server, round_: int) -> None:
    """A connects and closes, B connects and asks: both are accepted, and A's EOF and B's
    commands read, in the same loop turns; B must see only itself."""
    stopped(server.pid)
    try:
        probe = Client(server)
        probe.close()
        client = Client(server)
        client.send(b"stats-tube default\r\nstats\r\n")
    finally:
        os.kill(server.pid, signal.SIGCONT)
    try:
        tube, stats = client.reply(), client.reply()
    finally:
        client.close()
    assert stat(tube, b"current-using") == 1
    assert stat(tube, b"current-watching") == 1
    assert stat(stats, b"current-connections") == 1
