"""The HTTP port's request and response values (shared by ``proxy/http.py`` and the console)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

__all__ = ["JSON_TYPE", "REASONS", "Request", "Response", "error", "json_response"]

JSON_TYPE: Final = "application/json"
REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Request:
    """One parsed request: ``headers`` keyed by lower-case name (the last one of a name wins)."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    ctype: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, head_only: bool = False) -> bytes:
        head = (
            f"HTTP/1.1 {self.status} {REASONS[self.status]}\r\n"
            f"Content-Type: {self.ctype}\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Connection: close\r\n"
        )
        for name, value in self.headers:
            head += f"{name}: {value}\r\n"
        return (head + "\r\n").encode("latin-1") + (b"" if head_only else self.body)


def json_response(status: int, doc: object, *headers: tuple[str, str]) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    return Response(status, JSON_TYPE, body, (("Cache-Control", "no-store"), *headers))


def error(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """A JSON error: ``{"error": message}``."""
    return json_response(status, {"error": message}, *headers)
