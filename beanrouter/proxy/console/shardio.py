"""One short conversation with one shard: pipelined commands, their replies (asyncio).

The console and ``beanrouter status`` look at the shards themselves (``stats``, ``list-tubes``,
``stats-tube``, peeks, ``stats-job``) and run the admin actions there. Each conversation opens
its own connection, writes every command at once and reads one reply per command with the
project's ``ReplyReader`` (no second parser), within one deadline; any failure is a
``ShardError`` whose message says what went wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from ... import protocol as p

__all__ = ["MAX_BODY", "ShardError", "ask", "mapping", "tube_list"]

MAX_BODY: Final = 4 * 1024 * 1024
"""Largest reply body read from a shard (a job body, a long list-tubes)."""


class ShardError(Exception):
    """The shard could not be asked: refused, closed, too slow, or answered garbage."""


# ASYNC109: the timeout is part of the answer (ShardError names it), not a caller's cancel scope.
async def ask(host: str, port: int, commands: Sequence[p.Command], timeout: float) -> list[p.Reply]:  # noqa: ASYNC109
    """The replies of ``commands`` sent together to ``host:port`` on a new connection."""
    try:
        async with asyncio.timeout(timeout):
            return await _ask(host, port, commands)
    except TimeoutError:
        raise ShardError(f"no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise ShardError("connection refused") from None
    except ConnectionResetError:
        raise ShardError("connection reset") from None
    except OSError as exc:
        raise ShardError(exc.strerror or str(exc) or type(exc).__name__) from None
    except p.ProtocolError as exc:
        raise ShardError(f"bad reply: {exc}") from None


async def _ask(host: str, port: int, commands: Sequence[p.Command]) -> list[p.Reply]:
    stream, writer = await asyncio.open_connection(host, port)
    reader = p.ReplyReader(max_body=MAX_BODY)
    replies: list[p.Reply] = []
    try:
        writer.write(b"".join(cmd.encode() for cmd in commands))
        while len(replies) < len(commands):
            event = reader.next_event()
            if event is p.NEED_DATA:
                reader.receive_data(await stream.read(65536))
            elif event is p.CLOSED:
                raise ShardError("the shard closed the connection")
            else:
                assert isinstance(event, p.Reply)
                replies.append(event)
    finally:
        writer.close()
    return replies


def mapping(reply: p.Reply) -> dict[str, p.StatValue]:
    """The YAML mapping of an ``OK`` reply (``ShardError`` for any other reply)."""
    if not isinstance(reply, p.Ok):
        raise ShardError(f"unexpected reply {reply.encode()[:40]!r}")
    try:
        return p.parse_mapping(reply.body)
    except p.ProtocolError as exc:
        raise ShardError(f"bad reply: {exc}") from None


def tube_list(reply: p.Reply) -> list[str]:
    """The YAML list of an ``OK`` reply (``ShardError`` for any other reply)."""
    if not isinstance(reply, p.Ok):
        raise ShardError(f"unexpected reply {reply.encode()[:40]!r}")
    try:
        return p.parse_list(reply.body)
    except p.ProtocolError as exc:
        raise ShardError(f"bad reply: {exc}") from None
