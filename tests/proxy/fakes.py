"""Fake backends for the proxy's tests: no routing, just enough behaviour to observe the frame.

``FakeBackend`` is an in-memory queue behind the seam: ``put`` stores a job (``INSERTED n``),
``reserve`` waits for one, ``delete`` removes a job this session reserved, ``use sleep-MS``
sleeps MS milliseconds before answering (to make commands slow and finish out of order if the
frame ever ran them concurrently), and so does every reserve of the session after it, ``stats``
shows the frame's own ``ProxyStats`` fields, anything else answers ``ECHO <its encoding>``.
Every call is recorded in ``FakeBackend.log`` so tests can check the order of executes, burns
and closes. ``make_backend`` is the ``$BEANROUTER_BACKEND``
factory for subprocess tests.

``ForwardingBackend`` (``make_forwarding_backend``) sends every command to the first shard of
the configuration over one connection per session, except ``list-tube-used``, which it asks of
*every* shard and answers only if all of them answer: a client's first reply proves that the
whole cluster was up when the proxy started serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable, Sequence

from beanrouter import protocol as p
from beanrouter.core.config import ClusterConfig
from beanrouter.protocol import NEED_DATA, ReplyReader
from beanrouter.proxy.stats import ProxyStats


class FakeBackend:
    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config
        self.reloads: list[ClusterConfig] = []
        self.log: list[tuple[str, int, str]] = []
        self.ready: deque[tuple[int, bytes]] = deque()
        self.job_ready = asyncio.Event()
        self.next_id = 1
        self.sessions: list[FakeSession] = []
        self.health: list[tuple[str, bool]] = [("a", True), ("b", False)]
        self.closed = False
        self.fail_reload = False

    def session(self, counters: ProxyStats) -> FakeSession:
        s = FakeSession(self, counters, len(self.sessions))
        self.sessions.append(s)
        return s

    async def reload(self, config: ClusterConfig) -> None:
        if self.fail_reload:
            raise RuntimeError("reload refused by the fake")
        self.reloads.append(config)
        self.config = config

    def shard_health(self) -> list[tuple[str, bool]]:
        return list(self.health)

    def route(self, tube: str) -> dict[str, object]:
        return {"tube": tube, "owner": "a", "fake": True}

    async def aclose(self) -> None:
        self.closed = True

    def give_back(self, job: tuple[int, bytes]) -> None:
        self.ready.appendleft(job)
        self.job_ready.set()


class _NoStreamedRuns:
    """The seam's calls for a streamed run out (these sessions start none)."""

    def extend_batch(
        self, commands: Sequence[p.Command], counted: Callable[[p.Command], None]
    ) -> int:
        return 0

    def pause_replies(self) -> None:
        pass

    def resume_replies(self) -> None:
        pass


class FakeSession(_NoStreamedRuns):
    def __init__(self, backend: FakeBackend, counters: ProxyStats, number: int) -> None:
        self.backend = backend
        self.counters = counters
        self.number = number
        self.reserved: dict[int, bytes] = {}
        self.closed = False
        self.running = 0
        self.max_running = 0
        self.slow = 0.0
        """Seconds every reserve sleeps before it looks for a job (``use sleep-MS``)."""
        self.out: tuple[list[p.Command], Callable[[bool], None]] | None = None
        """The batch ``start_batch`` began, until it is answered (or aborted)."""

    def _log(self, what: str) -> None:
        self.backend.log.append((what, self.number, ""))

    async def execute(self, command: p.Command) -> bytes:
        assert not self.closed, "execute after close"
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            self.backend.log.append(("execute", self.number, type(command).__name__))
            return await self._execute(command)
        finally:
            self.running -= 1

    async def execute_batch(
        self, commands: Sequence[p.Command], counted: Callable[[p.Command], None]
    ) -> list[bytes]:
        """One command at a time (the frame hands the rest back again)."""
        counted(commands[0])
        return [await self.execute(commands[0])]

    def start_batch(
        self,
        commands: Sequence[p.Command],
        counted: Callable[[p.Command], None],
        answer: Callable[[bytes | None], None],
        done: Callable[[bool], None],
        idle: Callable[[], None] | None = None,
    ) -> bool:
        """The leading commands that need no wait (a reserve: a job if one is ready, else
        ``None``, the seam's timed-out first look, which ends the run), answered from a later
        loop callback (``slow`` seconds later), as a shard's replies would come; False when
        the first one needs a wait."""
        assert not self.closed, "start_batch after close"
        taken: list[p.Command] = []
        for command in commands:
            if isinstance(command, p.Use | p.Stats) or (
                isinstance(command, p.Reserve | p.ReserveWithTimeout) and self.slow
            ):
                break
            taken.append(command)
            if isinstance(command, p.Reserve | p.ReserveWithTimeout):
                break
        if not taken:
            return False
        for command in taken:
            counted(command)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.out = (taken, done)

        def reply() -> None:
            if self.out is None:
                return  # aborted
            self.out = None
            self.running -= 1
            for command in taken:
                self.backend.log.append(("execute", self.number, type(command).__name__))
                if isinstance(command, p.Reserve | p.ReserveWithTimeout):
                    if not self.backend.ready:
                        probe = isinstance(command, p.Reserve) or command.timeout != 0
                        answer(None if probe else b"TIMED_OUT\r\n")
                        continue
                    job_id, body = self.backend.ready.popleft()
                    self.reserved[job_id] = body
                    answer(p.encode_job(b"RESERVED", job_id, body))
                    continue
                answer(self._now(command))
            done(False)

        if idle is not None:
            idle()
        asyncio.get_running_loop().call_later(self.slow, reply)  # (``use sleep-MS``)
        return True

    def half_close(self) -> None:
        self._log("half_close")

    def abort(self) -> None:
        self._log("abort")
        if self.out is not None:
            _, done = self.out
            self.out = None
            self.running -= 1
            done(True)

    def _now(self, command: p.Command) -> bytes:
        b = self.backend
        if isinstance(command, p.Put):
            if self.counters.draining:
                return b"DRAINING\r\n"
            job_id = b.next_id
            b.next_id += 1
            b.ready.append((job_id, command.body))
            b.job_ready.set()
            return b"INSERTED %d\r\n" % job_id
        if isinstance(command, p.Delete):
            if self.reserved.pop(command.id, None) is None:
                return b"NOT_FOUND\r\n"
            return b"DELETED\r\n"
        return b"ECHO " + command.encode()

    async def _execute(self, command: p.Command) -> bytes:
        b = self.backend
        if isinstance(command, p.Reserve | p.ReserveWithTimeout):
            timeout = None if isinstance(command, p.Reserve) else command.timeout
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            if self.slow:
                await asyncio.sleep(self.slow)
            while not b.ready:
                b.job_ready.clear()
                wait = None if deadline is None else deadline - loop.time()
                if wait is not None and wait <= 0:
                    return b"TIMED_OUT\r\n"
                try:
                    await asyncio.wait_for(b.job_ready.wait(), wait)
                except TimeoutError:
                    return b"TIMED_OUT\r\n"
            job_id, body = b.ready.popleft()
            self.reserved[job_id] = body
            return p.encode_job(b"RESERVED", job_id, body)
        if isinstance(command, p.Use):
            if command.tube.startswith("sleep-"):
                self.slow = int(command.tube[6:]) / 1000
                await asyncio.sleep(self.slow)
            return p.encode_using(command.tube)
        if isinstance(command, p.Stats):
            return p.encode_ok(p.format_mapping(self.counters.fields()))
        return self._now(command)

    async def burn_id(self) -> None:
        self._log("burn")
        self.backend.next_id += 1

    async def close(self) -> None:
        assert not self.closed, "closed twice"
        assert self.running == 0, "close while execute runs"
        self.closed = True
        self._log("close")
        for job_id, body in list(self.reserved.items()):
            self.backend.give_back((job_id, body))
        self.reserved.clear()


def make_backend(config: ClusterConfig) -> FakeBackend:
    return FakeBackend(config)


class ForwardingBackend:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config

    def session(self, counters: ProxyStats) -> ForwardingSession:
        return ForwardingSession(self.config)

    async def reload(self, config: ClusterConfig) -> None:
        self.config = config

    def shard_health(self) -> list[tuple[str, bool]]:
        return [(s.name, True) for s in self.config.servers]

    def route(self, tube: str) -> dict[str, object]:
        return {"tube": tube, "pid": os.getpid()}

    async def aclose(self) -> None:
        pass


class _Link:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.replies = ReplyReader()

    async def request(self, data: bytes) -> bytes:
        self.writer.write(data)
        while True:
            event = self.replies.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, p.Reply)
                return event.encode()
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError("shard closed")
            self.replies.receive_data(chunk)


class ForwardingSession(_NoStreamedRuns):
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.link: _Link | None = None

    async def _open(self, host: str, port: int) -> _Link:
        reader, writer = await asyncio.open_connection(host, port)
        return _Link(reader, writer)

    async def execute(self, command: p.Command) -> bytes:
        try:
            if isinstance(command, p.ListTubeUsed):
                replies = []
                for shard in self.config.servers:
                    link = await self._open(shard.host, shard.port)
                    try:
                        replies.append(await asyncio.wait_for(link.request(command.encode()), 1))
                    finally:
                        link.writer.close()
                return replies[0]
            if self.link is None:
                first = self.config.servers[0]
                self.link = await self._open(first.host, first.port)
            return await self.link.request(command.encode())
        except (OSError, TimeoutError):
            return b"INTERNAL_ERROR\r\n"

    async def execute_batch(
        self, commands: Sequence[p.Command], counted: Callable[[p.Command], None]
    ) -> list[bytes]:
        counted(commands[0])
        return [await self.execute(commands[0])]

    def start_batch(
        self,
        commands: Sequence[p.Command],
        counted: Callable[[p.Command], None],
        answer: Callable[[bytes | None], None],
        done: Callable[[bool], None],
        idle: Callable[[], None] | None = None,
    ) -> bool:
        return False

    def half_close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    async def burn_id(self) -> None:
        pass

    async def close(self) -> None:
        if self.link is not None:
            self.link.writer.close()
            with contextlib.suppress(Exception):
                await self.link.writer.wait_closed()


def make_forwarding_backend(config: ClusterConfig) -> ForwardingBackend:
    return ForwardingBackend(config)
