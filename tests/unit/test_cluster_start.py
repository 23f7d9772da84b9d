"""Pieces of ``beanrouter cluster``'s start (no processes): the synchronous readiness check and
the ketama continua built once per set of shards."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from beanrouter.core.ring import Placement, Ring
from beanrouter.proxy.shards import answering_now


class _FakeShard:
    def __init__(self, port: int, status: int | None = None) -> None:
        self.port = port
        self.status = status

    def poll(self) -> int | None:
        return self.status


@contextmanager
def _answering(reply: bytes | None) -> Iterator[int]:
    """A loopback port that answers every connection's first line with ``reply`` (None: closes
    it at once)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                if reply is not None:
                    conn.recv(256)
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_answering_now_only_when_every_shard_says_using() -> None:
    with _answering(b"USING default\r\n") as a, _answering(b"USING default\r\n") as b:
        assert answering_now([_FakeShard(a), _FakeShard(b)])  # type: ignore[list-item]
        assert not answering_now([_FakeShard(a), _FakeShard(b, status=3)])  # type: ignore[list-item]
        assert not answering_now([_FakeShard(a), _FakeShard(_closed_port())])  # type: ignore[list-item]
    with _answering(b"OUT_OF_MEMORY\r\n") as a:
        assert not answering_now([_FakeShard(a)])  # type: ignore[list-item]
    with _answering(None) as a:
        assert not answering_now([_FakeShard(a)])  # type: ignore[list-item]


def test_answering_now_does_not_wait_past_its_timeout() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never answers
    try:
        shard = _FakeShard(int(silent.getsockname()[1]))
        assert not answering_now([shard], timeout=0.05)  # type: ignore[list-item]
    finally:
        silent.close()


def test_rings_of_the_same_shards_share_one_continuum() -> None:
    shards = [("shard-0", 1), ("shard-1", 1), ("shard-2", 1)]
    first, second = Ring(shards), Ring(list(shards))
    assert first._points is second._points and first._owners is second._owners
    heavier = Ring([("shard-0", 2), ("shard-1", 1), ("shard-2", 1)])
    assert heavier._points is not first._points
    assert heavier.point_counts() != first.point_counts()
    assert [first.owner(f"t{i}") for i in range(200)] == [
        Placement(shards).owner(f"t{i}") for i in range(200)
    ]
