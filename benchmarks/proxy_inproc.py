#!/usr/bin/env python3
"""The proxy's own cost per command, in-process, with no sockets: the frame, the backend, the
routing core and the driver, one client, one shard.

The client and the shard are fake transports in the same event loop: the client's bytes go to
``ClientConnection.data_received``; what the proxy writes to its shard link is answered by a
scripted shard (``put`` -> ``INSERTED``, ``reserve-with-timeout`` -> ``RESERVED`` of the oldest
job, ``delete`` -> ``DELETED``, ``use`` -> ``USING``) on the next loop iteration, as a network
would. What is measured is Python alone: no syscalls, no other process, so the numbers are steady
enough to compare two versions of the code (``proxy_bench.py`` measures the real thing).

    python3 benchmarks/proxy_inproc.py                 # round trips and a pipelined put
    python3 benchmarks/proxy_inproc.py --profile       # the top functions by own time
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beanrouter.proxy.app import ProxyServer
from beanrouter.proxy.backend import make_backend
from beanrouter.proxy.stats import ProxyStats
from beanrouter.router.config import config_from_servers

BODY = b"x" * 100


class Transport(asyncio.Transport):
    """Records writes; ``sink`` (if set) gets each write."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closing = False
        self.sink: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.sink is not None:
            self.sink(bytes(data))
        else:
            self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


class Shard:
    """A scripted beanstalkd behind one link: replies on the next loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        self.loop = loop
        self.protocol = protocol
        self.buf = b""
        self.jobs: collections.deque[tuple[int, bytes]] = collections.deque()
        self.next_id = 0

    def receive(self, data: bytes) -> None:
        self.buf += data
        out: list[bytes] = []
        while True:
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            line = self.buf[:end]
            if line.startswith(b"put "):
                size = int(line.rsplit(b" ", 1)[1])
                if len(self.buf) < end + 2 + size + 2:
                    break
                body = self.buf[end + 2 : end + 2 + size]
                self.buf = self.buf[end + 2 + size + 2 :]
                self.next_id += 1
                self.jobs.append((self.next_id, body))
                out.append(b"INSERTED %d\r\n" % self.next_id)
                continue
            self.buf = self.buf[end + 2 :]
            if line.startswith(b"reserve"):
                if self.jobs:
                    job_id, body = self.jobs.popleft()
                    out.append(b"RESERVED %d %d\r\n%s\r\n" % (job_id, len(body), body))
                else:
                    out.append(b"TIMED_OUT\r\n")
            elif line.startswith(b"delete "):
                out.append(b"DELETED\r\n")
            elif line.startswith(b"use "):
                out.append(b"USING " + line[4:] + b"\r\n")
            elif line.startswith((b"watch ", b"ignore ")):
                out.append(b"WATCHING 1\r\n")
            else:
                out.append(b"UNKNOWN_COMMAND\r\n")
        if out:
            self.loop.call_soon(self.protocol.data_received, b"".join(out))


async def main(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()

    async def connect(factory: Any, host: str, port: int, **_: Any) -> tuple[Transport, Any]:
        protocol = factory()
        transport = Transport()
        transport.sink = Shard(loop, protocol).receive
        protocol.connection_made(transport)
        return transport, protocol

    loop.create_connection = connect  # type: ignore[method-assign,assignment]
    config = config_from_servers(["127.0.0.1:1 s0 id=0"])
    server = ProxyServer(make_backend(config), ProxyStats(max_job_size=65535), config=config)
    conn = server._factory()
    client = Transport()
    conn.connection_made(client)

    async def ask(data: bytes, replies: int) -> None:
        conn.data_received(data)
        # ASYNC110: the fake transport has no hook to set an Event; yielding once per loop
        # turn is the benchmark's driver (no timer, so nothing but the proxy is measured).
        while sum(chunk.count(b"\r\n") for chunk in client.out) < replies:  # noqa: ASYNC110
            await asyncio.sleep(0)
        client.out.clear()

    await ask(b"use bench\r\nwatch bench\r\nignore default\r\n", 3)
    put = b"put 0 0 60 %d\r\n%s\r\n" % (len(BODY), BODY)
    rates: dict[str, float] = {}
    start = time.perf_counter()
    for _ in range(args.cycles):
        await ask(put, 1)
        conn.data_received(b"reserve-with-timeout 5\r\n")
        while not client.out or b"\r\n" not in client.out[-1][-2:]:  # noqa: ASYNC110 (as in ask)
            await asyncio.sleep(0)
        job_id = client.out[0].split(b" ")[1]
        client.out.clear()
        await ask(b"delete %s\r\n" % job_id, 1)
    rates["round trip µs per command"] = (time.perf_counter() - start) / (3 * args.cycles) * 1e6
    start = time.perf_counter()
    for _ in range(args.cycles // 100):
        await ask(put * 100, 100)
    rates["pipelined put µs per put"] = (time.perf_counter() - start) / args.cycles * 1e6
    conn.connection_lost(None)
    return rates


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=5000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    result = asyncio.run(main(args))
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    for key, value in result.items():
        print(f"{key}: {value:.1f}")
