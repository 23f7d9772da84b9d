#!/usr/bin/env python3
"""A byte relay in front of one server: the floor of any asyncio proxy on this machine.

Each client connection gets its own connection to the server; bytes are forwarded both ways
from the protocol callbacks (``data_received`` -> ``transport.write``), with no parsing, no
routing and no task per connection: the least work an asyncio shell can do per command. It is
not a beanstalkd proxy (ids, routing, stats: none of it) and exists only so that
``proxy_bench.py --relay`` can show how much of the proxy's cost is the event loop and the
extra hop rather than beanrouter's own code.

    python3 benchmarks/relay.py LISTEN_PORT SERVER_PORT
"""

from __future__ import annotations

import asyncio
import socket
import sys

HOST = "127.0.0.1"


class Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Downstream(asyncio.Protocol):
    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connecting = asyncio.ensure_future(self._connect(transport))

    async def _connect(self, client: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(lambda: Upstream(client), HOST, self.server_port)
        self.upstream = upstream
        for data in self.early:
            upstream.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def main(listen: int, server: int) -> None:
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Downstream(server), HOST, listen)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
