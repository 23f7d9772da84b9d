"""The opt-in HTTP port: ``/healthz``, ``/metrics`` and ``/route?tube=NAME`` (asyncio only).

A deliberately small HTTP/1.1 server: one request per connection (``Connection: close``),
``GET`` and ``HEAD`` only, request head at most ``MAX_HEAD`` bytes read within ``READ_TIMEOUT``
seconds, answers built in memory. Endpoints:

- ``/healthz``: 200 when at least one shard is up (puts can land somewhere: the core fails over),
  503 when none is or the proxy is stopping; a JSON body says how many shards are up and whether
  the proxy drains. Draining alone stays 200: consumers must still be able to connect.
- ``/metrics``: the ``ProxyStats.metrics`` registry in the Prometheus text format.
- ``/route?tube=NAME``: ``Backend.route(NAME)`` as JSON; 400 for a missing or invalid tube name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Final

from ..protocol import is_valid_tube_name
from .app import ProxyServer

__all__ = ["MAX_HEAD", "HttpEndpoint", "healthz"]

log = logging.getLogger("beanrouter.proxy.http")

MAX_HEAD: Final = 8192
READ_TIMEOUT: Final = 10.0
METRICS_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE: Final = "application/json"
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def healthz(proxy: ProxyServer) -> tuple[int, dict[str, object]]:
    """The status and JSON body of ``/healthz``."""
    shards = proxy.backend.shard_health()
    up = sum(1 for _, is_up in shards if is_up)
    ok = up > 0 and not proxy.stopping
    body: dict[str, object] = {
        "status": "ok" if ok else "unavailable",
        "shards_up": up,
        "shards": len(shards),
        "draining": proxy.stats.draining,
        "stopping": proxy.stopping,
    }
    return (200 if ok else 503), body


def _response(status: int, ctype: str, body: bytes, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    )
    if status == 405:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode("ascii") + (b"" if head_only else body)


def _json(status: int, doc: object, head_only: bool) -> bytes:
    import json

    return _response(status, JSON_TYPE, json.dumps(doc).encode() + b"\n", head_only)


class HttpEndpoint:
    """Serves the HTTP endpoints of ``proxy`` on a listening socket."""

    def __init__(self, proxy: ProxyServer) -> None:
        self.proxy = proxy
        self.server: asyncio.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(
            self._client, sock=sock, backlog=128, limit=MAX_HEAD
        )

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    def answer(self, method: str, target: str) -> bytes:
        """The whole response to ``method target``."""
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET and HEAD\n", head_only)
        from urllib.parse import parse_qs, urlsplit  # here: it costs start-up time (ipaddress)

        url = urlsplit(target)
        if url.path == "/healthz":
            status, doc = healthz(self.proxy)
            return _json(status, doc, head_only)
        if url.path == "/metrics":
            text = self.proxy.stats.metrics.render()
            return _response(200, METRICS_TYPE, text.encode(), head_only)
        if url.path == "/route":
            tubes = parse_qs(url.query).get("tube", [])
            if len(tubes) != 1 or not is_valid_tube_name(tubes[0].encode("ascii", "replace")):
                doc = {"error": "give one valid tube name: /route?tube=NAME"}
                return _json(400, doc, head_only)
            return _json(200, self.proxy.backend.route(tubes[0]), head_only)
        return _response(404, "text/plain", b"not found: try /healthz /metrics /route\n", head_only)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                writer.write(_response(431, "text/plain", b"request head too large\n"))
                return
            except (asyncio.IncompleteReadError, TimeoutError):
                return
            if len(head) > MAX_HEAD:
                writer.write(_response(431, "text/plain", b"request head too large\n"))
                return
            words = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if len(words) != 3 or not words[2].startswith("HTTP/"):
                writer.write(_response(400, "text/plain", b"bad request line\n"))
                return
            try:
                writer.write(self.answer(words[0], words[1]))
            except Exception:
                log.exception("HTTP %s %s failed", words[0], words[1])
                writer.write(_response(500, "text/plain", b"internal error\n"))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
