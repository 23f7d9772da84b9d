"""The client role: turn a server's byte stream into reply events.

``ReplyReader`` is a pull parser: ``receive_data(bytes)``, then ``next_event()`` until it returns
``NEED_DATA``. Replies carry no reference to the command they answer; beanstalkd answers in order,
so callers pair them first-in first-out. ``encode_command`` is the matching serialiser (each
command's ``encode()``), kept here so both directions of the client role live in one place.
A reply line longer than ``MAX_REPLY_LINE`` or a body longer than ``max_body`` is a
``RemoteProtocolError``: a broken peer cannot grow our memory without bound.
"""

from __future__ import annotations

from collections.abc import Callable

from ._commands import Command
from ._errors import RemoteProtocolError
from ._replies import (
    WORDS,
    Buried,
    Found,
    Inserted,
    Kicked,
    Ok,
    Reply,
    Reserved,
    Using,
    Watching,
)
from ._server import CLOSED, NEED_DATA, Sentinel
from ._wire import MAX_JOB_SIZE_LIMIT, U64_MAX, is_valid_tube_name

__all__ = ["MAX_REPLY_LINE", "ReplyReader", "encode_command"]

MAX_REPLY_LINE = 1024


def encode_command(command: Command) -> bytes:
    """The bytes that send ``command``."""
    return command.encode()


def _int_arg(args: list[bytes], line: bytes) -> int:
    if len(args) != 1 or not args[0].isdigit():
        raise RemoteProtocolError(f"bad reply line {line!r}")
    value = int(args[0])
    if value > U64_MAX:
        raise RemoteProtocolError(f"number out of range in {line!r}")
    return value


def _opt_int_arg(args: list[bytes], line: bytes) -> int | None:
    return None if not args else _int_arg(args, line)


def _tube_arg(args: list[bytes], line: bytes) -> str:
    if len(args) != 1 or not is_valid_tube_name(args[0]):
        raise RemoteProtocolError(f"bad reply line {line!r}")
    return args[0].decode("ascii")


_LINE_REPLIES: dict[bytes, Callable[[list[bytes], bytes], Reply]] = {
    b"INSERTED": lambda a, line: Inserted(_int_arg(a, line)),
    b"BURIED": lambda a, line: Buried(_opt_int_arg(a, line)),
    b"USING": lambda a, line: Using(_tube_arg(a, line)),
    b"WATCHING": lambda a, line: Watching(_int_arg(a, line)),
    b"KICKED": lambda a, line: Kicked(_opt_int_arg(a, line)),
}


class ReplyReader:
    """Incremental parser of the server → client direction."""

    __slots__ = ("_buf", "_eof", "_head", "_pos", "max_body")

    def __init__(self, max_body: int = MAX_JOB_SIZE_LIMIT + 65536) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        # A parsed header waiting for its body: (kind, id, size).
        self._head: tuple[bytes, int, int] | None = None

    @property
    def pending(self) -> bool:
        """True when bytes were received that are not returned as a reply yet."""
        return self._pos < len(self._buf) or self._head is not None

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the server; ``b""`` marks the end of its stream."""
        if not data:
            self._eof = True
            return
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Reply | Sentinel:
        """The next reply, ``NEED_DATA``, or ``CLOSED`` once the server closed and all is read."""
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n", self._pos, self._pos + MAX_REPLY_LINE)
            if end < 0:
                if len(buf) - self._pos >= MAX_REPLY_LINE:
                    raise RemoteProtocolError("reply line too long")
                return self._no_data()
            line = bytes(buf[self._pos : end])
            self._pos = end + 2
            word, sep, rest = line.partition(b" ")
            simple = WORDS.get(line)
            if simple is not None:
                return simple
            args = rest.split(b" ") if sep else []  # "BURIED " is not "BURIED"
            if word in (b"RESERVED", b"FOUND"):
                if len(args) != 2:
                    raise RemoteProtocolError(f"bad reply line {line!r}")
                self._head = (word, _int_arg(args[:1], line), _int_arg(args[1:], line))
            elif word == b"OK":
                self._head = (word, 0, _int_arg(args, line))
            else:
                parse = _LINE_REPLIES.get(word)
                if parse is None:
                    raise RemoteProtocolError(f"unknown reply {line!r}")
                return parse(args, line)
            if self._head[2] > self.max_body:
                raise RemoteProtocolError(f"reply body too large in {line!r}")
        kind, job_id, size = self._head
        if len(buf) - self._pos < size + 2:
            return self._no_data()
        start = self._pos
        if buf[start + size : start + size + 2] != b"\r\n":
            raise RemoteProtocolError("reply body not followed by CRLF")
        body = bytes(buf[start : start + size])
        self._pos = start + size + 2
        self._head = None
        if kind == b"RESERVED":
            return Reserved(job_id, body)
        if kind == b"FOUND":
            return Found(job_id, body)
        return Ok(body)

    def _no_data(self) -> Sentinel:
        if self._eof:
            if self._pos < len(self._buf) or self._head is not None:
                raise RemoteProtocolError("connection closed in the middle of a reply")
            return CLOSED
        return NEED_DATA
