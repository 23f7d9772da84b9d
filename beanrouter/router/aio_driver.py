"""The asyncio shells' engine: runs core operations (``beanrouter.core``) over asyncio streams.

Used by ``AsyncRouter`` and by the proxy (one ``AsyncDriver`` per client session). Like the
blocking ``Driver`` it only performs the rounds an operation yields: connects links on first use,
sends, reads the replies through the codec's ``ReplyReader`` (every link of a round at once), and
for a *wait* returns as soon as one link completes or the round's deadline passes. No routing
decision is made here.

Cancellation: a task cancelled while ``run`` awaits (a client that disconnects mid-reserve, a
``wait_for`` timeout) closes the operation and every link it left owing a reply
(``Session.abandon``), so the shards give back whatever they reserved for it. Reading is
cancellation-safe: bytes not yet parsed stay in the link's codec and stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from ..core.links import Link
from ..core.rounds import Failure, FailureKind, Op, Outcome, Round
from ..core.session import Session
from ..protocol import CLOSED, NEED_DATA, ProtocolError, Reply, ReplyReader

__all__ = ["AsyncDriver"]

T = TypeVar("T")

_READ_SIZE = 65536
MAX_CONNECTING = 32
"""Connections being opened at once to one shard, per event loop."""
_CONNECT_SLOTS: dict[tuple[int, str, int], asyncio.Semaphore] = {}


class _Stream:
    """A link's transport: the asyncio stream and the codec reading it."""

    __slots__ = ("codec", "got", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = ReplyReader()
        self.got: list[Reply] = []

    def stale(self) -> bool:
        """The shard closed the idle connection (or sent something unasked)."""
        buffered = getattr(self.reader, "_buffer", b"")  # bytes nobody asked for
        return self.writer.is_closing() or self.reader.at_eof() or bool(buffered)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _Lost(Exception):
    """A link broke while its replies were read."""


class AsyncDriver:
    """Runs one session's operations over asyncio streams.

    Args:
        session: the core session.
        connect_timeout: seconds to wait for a TCP connection.
        timeout: seconds to wait for a reply (blocking reserves excepted).
        clock: the core's clock (a round's ``until`` is on it).
    """

    def __init__(
        self,
        session: Session,
        connect_timeout: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.clock = clock

    async def run(self, op: Op[T]) -> T:
        """Run a core operation to its end and return its result (or raise its error)."""
        try:
            rnd = next(op)
            while True:
                rnd = op.send(await self._execute(rnd))
        except StopIteration as stop:
            self.close_links(self.session.take_closes())
            result: T = stop.value
            return result
        except BaseException:
            op.close()
            self.close_links(self.session.abandon())
            raise

    def close(self) -> None:
        """Close every link of the session (each shard gives back the jobs held on it)."""
        self.close_links(self.session.close())

    @staticmethod
    def close_links(links: Iterable[Link]) -> None:
        for link in links:
            stream = link.io
            link.io = None
            if isinstance(stream, _Stream):
                stream.close()

    async def _connect(self, link: Link) -> _Stream:
        cfg = link.shard.config
        # A burst of sessions (a thousand clients connecting to the proxy at once) would each
        # open their shard links at the same moment: bounded per shard, so that the connect
        # timeout measures the shard, not the queue in front of it.
        loop = asyncio.get_running_loop()
        key = (id(loop), cfg.host, cfg.port)
        slots = _CONNECT_SLOTS.get(key)
        if slots is None:
            slots = _CONNECT_SLOTS[key] = asyncio.Semaphore(MAX_CONNECTING)
        async with slots:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(cfg.host, cfg.port, limit=_READ_SIZE * 4),
                self.connect_timeout,
            )
        stream = _Stream(reader, writer)
        link.io = stream
        return stream

    async def _send(self, link: Link, data: bytes, outcome: Outcome) -> None:
        stream = link.io
        name = link.shard.name
        if isinstance(stream, _Stream) and stream.stale():
            stream.close()
            link.io = None
            outcome[link] = Failure(FailureKind.STALE, f"{name} closed the link")
            return
        if not isinstance(stream, _Stream):
            try:
                stream = await self._connect(link)
            except (TimeoutError, OSError) as exc:
                outcome[link] = Failure(FailureKind.CONNECT, f"cannot connect to {name}: {exc!r}")
                return
        stream.got = []
        try:
            stream.writer.write(data)
            if stream.writer.transport.get_write_buffer_size() > _READ_SIZE:
                await asyncio.wait_for(stream.writer.drain(), self.timeout)
        except (TimeoutError, OSError) as exc:
            stream.close()
            link.io = None
            outcome[link] = Failure(FailureKind.LOST, f"send to {name} failed: {exc!r}")

    async def _read(self, link: Link, stream: _Stream) -> None:
        """Read until ``link`` has every reply it owes (into ``stream.got``)."""
        codec = stream.codec
        got = stream.got
        while len(got) < link.owed:
            try:
                event = codec.next_event()
            except ProtocolError as exc:
                raise _Lost(f"bad reply from {link.shard.name}: {exc}") from exc
            if isinstance(event, Reply):
                got.append(event)
                continue
            if event is CLOSED:
                raise _Lost(f"{link.shard.name} closed the connection")
            assert event is NEED_DATA
            try:
                data = await stream.reader.read(_READ_SIZE)
            except OSError as exc:
                raise _Lost(f"receive from {link.shard.name} failed: {exc!r}") from exc
            codec.receive_data(data)

    def _lost(self, link: Link, message: str, outcome: Outcome, timed_out: bool = False) -> None:
        stream = link.io
        if isinstance(stream, _Stream):
            stream.close()
        link.io = None
        outcome[link] = Failure(FailureKind.LOST, message, timed_out)

    def _cancel(self, links: Sequence[Link], outcome: Outcome) -> None:
        """Read what has arrived on each link without waiting (what the stream holds, then the
        socket itself); close those still owing. Synchronous: nothing runs in between."""
        for link in links:
            stream = link.io
            got: list[Reply] = []
            if isinstance(stream, _Stream):
                codec = stream.codec
                buffered = getattr(stream.reader, "_buffer", None)
                if buffered:
                    codec.receive_data(bytes(buffered))
                    buffered.clear()
                sock = stream.writer.get_extra_info("socket")
                fd = sock.fileno() if sock is not None else -1
                try:
                    while len(got) < link.owed:
                        event = codec.next_event()
                        if isinstance(event, Reply):
                            got.append(event)
                            continue
                        if event is not NEED_DATA or fd < 0:
                            break
                        try:
                            data = os.read(fd, _READ_SIZE)
                        except BlockingIOError:
                            break
                        if not data:
                            break
                        codec.receive_data(data)
                except (OSError, ProtocolError):
                    pass
            if len(got) < link.owed:
                self.close_links([link])
            outcome[link] = got

    async def _execute(self, rnd: Round) -> Outcome:
        self.close_links(rnd.close)
        outcome: Outcome = {}
        if rnd.cancel:
            self._cancel(rnd.cancel, outcome)
        for send in rnd.sends:
            await self._send(send.link, send.data, outcome)
        live = [s.link for s in rnd.sends if s.link not in outcome]
        for link in rnd.wait:
            if link not in outcome and isinstance(link.io, _Stream):
                link.io.got = []
                live.append(link)
        if not live:
            return outcome
        if len(live) == 1 and not rnd.first:
            link = live[0]
            stream = link.io
            assert isinstance(stream, _Stream)
            try:
                async with asyncio.timeout(self.timeout):
                    await self._read(link, stream)
            except TimeoutError:
                self._lost(link, f"no reply from {link.shard.name} in time", outcome, True)
            except _Lost as exc:
                self._lost(link, str(exc), outcome)
            else:
                outcome[link] = stream.got
            return outcome
        waiting = rnd.first and rnd.until != -math.inf
        if waiting:
            self.session.waiting = True  # every reserve of the round is on the wire now
        try:
            return await self._read_round(rnd, live, outcome)
        finally:
            if waiting:
                self.session.waiting = False

    async def _read_round(self, rnd: Round, live: list[Link], outcome: Outcome) -> Outcome:
        tasks: dict[asyncio.Task[None], Link] = {}
        for link in live:
            stream = link.io
            assert isinstance(stream, _Stream)
            tasks[asyncio.ensure_future(self._read(link, stream))] = link
        try:
            if rnd.first:
                until = -math.inf if outcome else rnd.until
                timeout = None if until is None else max(0.0, until - self.clock())
                if timeout == 0.0:
                    await asyncio.sleep(0)  # let what has arrived be read
                    done = {t for t in tasks if t.done()}
                else:
                    done, _ = await asyncio.wait(
                        tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    if done:
                        await asyncio.sleep(0)  # others that completed at the same time
                        done = {t for t in tasks if t.done()}
            else:
                done, _ = await asyncio.wait(tasks, timeout=self.timeout)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            for task in tasks:
                if not task.done():
                    with contextlib.suppress(asyncio.CancelledError, _Lost):
                        await task
        for task, link in tasks.items():
            stream = link.io
            assert isinstance(stream, _Stream)
            if task in done and not task.cancelled():
                error = task.exception()
                if isinstance(error, _Lost):
                    self._lost(link, str(error), outcome)
                    continue
                if error is not None:
                    raise error
                outcome[link] = stream.got
            elif rnd.first:
                outcome[link] = stream.got  # partial: the rest stays owed
            else:
                self._lost(link, f"no reply from {link.shard.name} in time", outcome, True)
        return outcome
