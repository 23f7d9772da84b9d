"""The opt-in HTTP port: ``/healthz``, ``/metrics``, ``/route?tube=NAME`` and the console.

A deliberately small HTTP/1.1 server: one request per connection (``Connection: close``),
request head at most ``MAX_HEAD`` bytes and a body (``Content-Length`` only) of at most
``MAX_BODY`` bytes, read within ``READ_TIMEOUT`` seconds; answers built in memory. Endpoints:

- ``/healthz``: 200 when at least one shard is up (puts can land somewhere: the core fails over),
  503 when none is or the proxy is stopping; a JSON body says how many shards are up and whether
  the proxy drains. Draining alone stays 200: consumers must still be able to connect.
- ``/metrics``: the ``ProxyStats.metrics`` registry in the Prometheus text format.
- ``/route?tube=NAME``: ``Backend.route(NAME)`` as JSON; 400 for a missing or invalid tube name.
- ``/``, ``/console/*``, ``/api/*``: the console (``proxy/console``, docs/console.md); its
  actions (``POST /api/action``) only with ``admin``.

These three take ``GET`` and ``HEAD`` only. Nothing a request sends can make this module raise
into the proxy: a handler's exception is logged and answered 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Final
from urllib.parse import parse_qs, urlsplit

from ..protocol import is_valid_tube_name
from .app import ProxyServer
from .console.app import Console
from .console.web import Request, Response

__all__ = ["MAX_BODY", "MAX_HEAD", "HttpEndpoint", "healthz", "parse_head"]

log = logging.getLogger("beanrouter.proxy.http")

MAX_HEAD: Final = 8192
MAX_BODY: Final = 16384
READ_TIMEOUT: Final = 10.0
METRICS_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
JSON_TYPE: Final = "application/json"


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
    extra = (("Allow", "GET, HEAD"),) if status == 405 else ()
    return Response(status, ctype, body, extra).encode(head_only)


class BadRequest(Exception):
    """A request this server will not read: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[Request, int]:
    """The request a head (request line and headers, up to the blank line) names, and the
    length of the body that follows (``BadRequest`` for what this server does not take)."""
    lines = head.decode("latin-1").split("\r\n")
    words = lines[0].split(" ")
    if len(words) != 3 or not words[2].startswith("HTTP/") or not words[1].startswith("/"):
        raise BadRequest(400, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, "bad header line")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(411, "send a Content-Length, not a Transfer-Encoding")
    length_text = headers.get("content-length", "0")
    if not length_text.isascii() or not length_text.isdigit():
        raise BadRequest(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise BadRequest(413, f"request bodies are at most {MAX_BODY} bytes")
    url = urlsplit(words[1])
    try:
        query = parse_qs(url.query, keep_blank_values=True, max_num_fields=20)
    except ValueError:
        raise BadRequest(400, "too many query parameters") from None
    return Request(words[0], url.path, query, headers), length


def _json(status: int, doc: object, head_only: bool) -> bytes:
    return _response(status, JSON_TYPE, json.dumps(doc).encode() + b"\n", head_only)


class HttpEndpoint:
    """Serves the HTTP endpoints of ``proxy`` on a listening socket."""

    def __init__(self, proxy: ProxyServer, *, admin: bool = False) -> None:
        self.proxy = proxy
        self.server: asyncio.Server | None = None
        self.console = Console(proxy, admin=admin) if proxy.config is not None else None

    async def start(self, sock: socket.socket) -> None:
        if self.console is not None:
            await self.console.start()
        self.server = await asyncio.start_server(
            self._client, sock=sock, backlog=128, limit=MAX_HEAD
        )

    async def aclose(self) -> None:
        if self.console is not None:
            await self.console.aclose()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    def answer(self, method: str, target: str) -> bytes:
        """The whole response to ``method target`` (``/healthz``, ``/metrics``, ``/route``)."""
        url = urlsplit(target)
        return self._plain(method, url.path, parse_qs(url.query))

    def _plain(self, method: str, path: str, query: dict[str, list[str]]) -> bytes:
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET and HEAD\n", head_only)
        if path == "/healthz":
            status, doc = healthz(self.proxy)
            return _json(status, doc, head_only)
        if path == "/metrics":
            text = self.proxy.stats.metrics.render()
            return _response(200, METRICS_TYPE, text.encode(), head_only)
        if path == "/route":
            tubes = query.get("tube", [])
            if len(tubes) != 1 or not is_valid_tube_name(tubes[0].encode("ascii", "replace")):
                doc = {"error": "give one valid tube name: /route?tube=NAME"}
                return _json(400, doc, head_only)
            return _json(200, self.proxy.backend.route(tubes[0]), head_only)
        return _response(
            404, "text/plain", b"not found: try / /healthz /metrics /route\n", head_only
        )

    async def respond(self, req: Request) -> bytes:
        """The whole response to ``req``."""
        head_only = req.method == "HEAD"
        if self.console is not None and self.console.owns(req.path):
            return (await self.console.handle(req)).encode(head_only)
        return self._plain(req.method, req.path, req.query)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
                    if len(head) > MAX_HEAD:
                        raise BadRequest(431, "request head too large")
                    req, length = parse_head(head)
                    if length:
                        req.body = await reader.readexactly(length)
            except asyncio.LimitOverrunError:
                writer.write(_response(431, "text/plain", b"request head too large\n"))
                return
            except BadRequest as exc:
                writer.write(_response(exc.status, "text/plain", f"{exc}\n".encode()))
                return
            except (asyncio.IncompleteReadError, TimeoutError):
                return
            try:
                writer.write(await self.respond(req))
            except Exception:
                log.exception("HTTP %s %s failed", req.method, req.path[:200])
                writer.write(_response(500, "text/plain", b"internal error\n"))
            async with asyncio.timeout(READ_TIMEOUT):  # (a client that never reads)
                await writer.drain()
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            writer.close()
