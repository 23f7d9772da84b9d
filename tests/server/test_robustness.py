"""The running server under hostile input: random and mutated streams, and clients that never read.

- Differential fuzz: the same random/mutated command streams go to the real beanstalkd and to our
  server; every reply must be the same bytes (volatile stats values normalised), the server must
  never log a traceback, and a control connection must be served throughout.
- Backpressure: a client that pipelines commands and never reads its replies is stopped being
  read from, so the server's memory stays bounded and other clients are still served.
"""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import BEANROUTER, BEANSTALKD, HOST, Server, normalise

pytestmark = pytest.mark.reference  # every test here runs beanstalkd next to our server

COMMANDS = [
    b"put {pri} 0 {ttr} {n}\r\n{body}\r\n",
    b"put {pri} {delay} {ttr} {n}\r\n{body}\r\n",
    b"use {tube}\r\n",
    b"watch {tube}\r\n",
    b"ignore {tube}\r\n",
    b"peek {id}\r\n",
    b"peek-ready\r\n",
    b"peek-delayed\r\n",
    b"peek-buried\r\n",
    b"delete {id}\r\n",
    b"kick {n}\r\n",
    b"kick-job {id}\r\n",
    b"stats-job {id}\r\n",
    b"stats-tube {tube}\r\n",
    b"list-tubes\r\n",
    b"list-tube-used\r\n",
    b"list-tubes-watched\r\n",
    b"reserve-job {id}\r\n",
    b"bury {id} {pri}\r\n",
    b"release {id} {pri} 0\r\n",
    b"stats\r\n",
]
TUBES = [b"default", b"a", b"b-1", b"x" * 200, b"x" * 201, b"-bad", b"ok(1)"]
# Commands whose replies depend on time (blocking reserves, pauses, TTR): kept out of the fuzz.
TIMING = re.compile(rb"reserve(?!-job)|pause-tube|touch")


def command(rng: random.Random) -> bytes:
    body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 40])))
    fields = {
        "pri": str(rng.choice([0, 1, 1023, 1024, 2**32 - 1])),
        "delay": str(rng.choice([0, 100])),
        "ttr": str(rng.choice([100, 120])),
        "n": str(len(body)),
        "tube": rng.choice(TUBES).decode(),
        "id": str(rng.choice([0, 1, 2, 3, 5, 2**64])),
    }
    template = rng.choice(COMMANDS)
    text = template.replace(b"{body}", b"\0BODY\0")
    for key, value in fields.items():
        text = text.replace(b"{" + key.encode() + b"}", value.encode())
    return text.replace(b"\0BODY\0", body)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(4)
        pos = rng.randrange(len(buf) + 1)
        if kind == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif kind == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif kind == 2:
            del buf[pos : pos + rng.randrange(1, 8)]
        else:
            buf[pos:pos] = rng.choice([b"\r\n", b"\r", b"\n", b"\0", b" ", b"x" * 230])
    return bytes(buf)


def stream(seed: int) -> bytes:
    rng = random.Random(seed)
    while True:
        data = b"".join(command(rng) for _ in range(rng.randrange(5, 40)))
        if rng.random() < 0.7:
            data = mutate(rng, data)
        if not TIMING.search(data):
            return data


def transcript(server: Server, data: bytes, seed: int) -> list[bytes]:
    """Send ``data`` in random chunks, half-close, and collect everything until the server closes.

    Both servers answer every complete command they have read before closing on EOF.
    """
    rng = random.Random(seed)
    with server.connect(timeout=5.0) as session:
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 7, 64, len(data)])
            session.send(data[pos : pos + step])
            pos += step
        session.shutdown_write()
        received, closed = session.read_available(5.0)
    assert closed, f"{server.impl} did not close after EOF"
    return split_replies(received)


_HEAD = re.compile(rb"(?:RESERVED|FOUND) [0-9]+ ([0-9]+)\r\n|OK ([0-9]+)\r\n")


def split_replies(data: bytes) -> list[bytes]:
    replies: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        if end < 0:
            replies.append(data[pos:])
            break
        m = _HEAD.fullmatch(data, pos, end + 2)
        if m is not None:
            end += int(m.group(1) or m.group(2)) + 2
        replies.append(normalise(data[pos : end + 2], loose_job_times=True))
        pos = end + 2
    return replies


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    pair = {impl: Server(impl) for impl in (BEANSTALKD, BEANROUTER)}
    try:
        for server in pair.values():
            server.start()
        yield pair
    finally:
        for server in pair.values():
            server.stop()


def check_alive(server: Server) -> None:
    with server.connect(timeout=5.0) as control:
        control.send(b"list-tube-used\r\n")
        assert control.reply() == b"USING default\r\n"


@pytest.mark.parametrize("block", range(12))
def test_fuzz_same_replies_as_beanstalkd(servers: dict[str, Server], block: int) -> None:
    """25 streams per block; a fresh pair of servers per block keeps job ids comparable."""
    fresh = {impl: Server(impl) for impl in servers}
    try:
        for seed in range(block * 25, block * 25 + 25):
            data = stream(seed)
            got = {impl: transcript(server, data, seed) for impl, server in fresh.items()}
            assert got[BEANROUTER] == got[BEANSTALKD], f"seed {seed}: stream {data!r}"
        check_alive(fresh[BEANROUTER])
        assert "Traceback" not in fresh[BEANROUTER].output()
    finally:
        for server in fresh.values():
            server.stop()


def test_garbage_on_many_connections_never_stops_the_server(servers: dict[str, Server]) -> None:
    server = servers[BEANROUTER]
    rng = random.Random(7)
    socks = []
    for _ in range(20):
        sock = socket.create_connection((HOST, server.port))
        sock.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000))))
        socks.append(sock)
    for i, sock in enumerate(socks):  # some abruptly reset, some half-closed, some left open
        if i % 3 == 0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            sock.close()
        elif i % 3 == 1:
            sock.shutdown(socket.SHUT_WR)
    check_alive(server)
    for sock in socks:
        sock.close()
    check_alive(server)
    assert "Traceback" not in server.output()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_client_that_never_reads_cannot_grow_memory(servers: dict[str, Server]) -> None:
    server = servers[BEANROUTER]
    pid = server.pid
    before = rss_kib(pid)
    hog = socket.create_connection((HOST, server.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    chunk = b"stats\r\n" * 10000  # each ~70 bytes of input asks for ~1 KB of output
    sent = 0
    stalled_since: float | None = None
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        try:
            sent += hog.send(chunk)
            stalled_since = None
        except BlockingIOError:
            if stalled_since is None:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > 1.0:
                break  # the server stopped reading us: backpressure reached the client
            time.sleep(0.01)
    assert stalled_since is not None, f"the server kept reading: {sent} bytes accepted"
    grown = rss_kib(pid) - before
    assert sent < 64 * 2**20, f"{sent} bytes of commands accepted"
    assert grown < 64 * 1024, f"server RSS grew by {grown} KiB"
    check_alive(server)  # others are still served
    hog.close()
    check_alive(server)
