"""The asyncio shells' engine: runs core operations (``beanrouter.core``) over asyncio transports.

Used by ``AsyncRouter`` and by the proxy (one ``ProxyDriver``, ``beanrouter.proxy.driver``, per
client session: this driver plus the proxy's fast path and connection pool). Like the
blocking ``Driver`` it only performs the rounds an operation yields: connects links on first use,
sends, reads the replies through the codec's ``ReplyReader`` (every link of a round at once), and
for a *wait* returns as soon as one link completes or the round's deadline passes. No routing
decision is made here.

Each link is an ``asyncio.Protocol`` (``Stream``) that parses replies as they arrive; a round
waits on one future (and at most one timer), not a task per link.

Cancellation: a task cancelled while ``run`` awaits (a client that disconnects mid-reserve, a
``wait_for`` timeout) closes the operation and every link it left owing a reply
(``Session.abandon``), so the shards give back whatever they reserved for it. Reading is
cancellation-safe: replies that arrive later stay in the link's ``Stream``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import os
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from ..core.links import Link
from ..core.reserve import cancelled
from ..core.rounds import Failure, FailureKind, Op, Outcome, Round
from ..core.session import Session
from ..protocol import CLOSED, NEED_DATA, ProtocolError, Reply, ReplyReader

__all__ = ["AsyncDriver", "Posted", "Stream", "watchdog"]

T = TypeVar("T")

_READ_SIZE = 65536
MAX_CONNECTING = 32
"""Connections being opened at once to one shard, per event loop."""
_CONNECT_SLOTS: dict[tuple[int, str, int], asyncio.Semaphore] = {}


class Stream(asyncio.Protocol):
    """A link's transport: the asyncio protocol, parsing replies as they arrive (into ``got``).

    A round that waits for a link sets ``want`` (the replies it owes) and ``notify``, called once
    when ``got`` holds that many or the link failed (``failed``)."""

    __slots__ = (
        "codec",
        "expect",
        "failed",
        "got",
        "half",
        "notify",
        "posted",
        "resume",
        "transport",
        "want",
    )

    def __init__(self) -> None:
        self.codec = ReplyReader()
        self.got: list[Reply] = []
        self.expect: collections.deque[Reply] = collections.deque()
        """Replies of posted commands (``Send.posted``), answered already: checked and
        dropped as they arrive, before anything goes to ``got``."""
        self.posted: Posted | None = None
        """Counts the posted replies still to come (``AsyncDriver.posted``)."""
        self.want = 0
        self.notify: Callable[[], None] | None = None
        self.failed: str | None = None
        self.transport: asyncio.Transport | None = None
        self.resume: asyncio.Future[None] | None = None
        """Set while a send waits for the transport's buffer to drain."""
        self.half = False
        """EOF was sent (``ProxyDriver.half_close``, ``_read_out``): nothing more may be."""

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.failed is not None:
            return
        codec = self.codec
        codec.receive_data(data)
        got = self.got
        try:
            while True:
                event = codec.next_event()
                if event is NEED_DATA:
                    break
                if event is CLOSED:
                    self._fail("closed the connection")
                    return
                expect = self.expect
                if expect:
                    wanted = expect.popleft()
                    if self.posted is not None:
                        self.posted.arrived(1)
                    if event != wanted:
                        self._fail(f"unexpected reply to a posted command: {event!r}")
                        return
                    continue
                got.append(event)  # type: ignore[arg-type]
        except ProtocolError as exc:
            self._fail(f"bad reply: {exc}")
            return
        if self.notify is not None and len(got) >= self.want:
            self._notify()

    def eof_received(self) -> bool:
        self.data_received(b"")
        self._fail("closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc!r}" if exc is not None else "closed the connection")
        resume = self.resume
        if resume is not None and not resume.done():
            resume.set_result(None)

    def pause_writing(self) -> None:
        if self.resume is None:
            self.resume = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        resume = self.resume
        self.resume = None
        if resume is not None and not resume.done():
            resume.set_result(None)

    # -- for the driver

    def _fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
        if self.expect:  # they will never come
            if self.posted is not None:
                self.posted.arrived(len(self.expect))
            self.expect.clear()
        if self.notify is not None:
            self._notify()

    def _notify(self) -> None:
        notify = self.notify
        self.notify = None
        if notify is not None:
            notify()

    def stale(self) -> bool:
        """The shard closed the idle connection (or sent something unasked)."""
        transport = self.transport
        return (
            self.failed is not None
            or self.half
            or transport is None
            or transport.is_closing()
            or bool(self.got)
            or (self.codec.pending and not self.expect)  # (a posted reply half arrived)
        )

    def take(self, count: int) -> list[Reply]:
        """The first ``count`` replies received (fewer if not all arrived)."""
        got = self.got
        if len(got) <= count:
            self.got = []
            return got
        out = got[:count]
        del got[:count]
        return out

    def close(self) -> None:
        self.notify = None
        transport = self.transport
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()


class Posted:
    """The posted replies (``Send.posted``) of every session of one event loop that have not
    come yet: a command that observes what posted commands change on the shards (which tubes
    exist) waits for them first (``drained``), so another client's ``use`` answered a moment
    ago is seen, as on one beanstalkd."""

    def __init__(self) -> None:
        self.pending = 0
        self._drained: list[asyncio.Future[None]] = []

    def sent(self, count: int) -> None:
        self.pending += count

    def arrived(self, count: int) -> None:
        self.pending = max(0, self.pending - count)
        if not self.pending:
            for future in self._drained:
                if not future.done():
                    future.set_result(None)
            self._drained.clear()

    # ASYNC109: a bounded wait that returns quietly when the time is up (never raises TimeoutError).
    async def drained(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until no posted reply is still to come (at most ``timeout`` seconds: a shard that
        does not answer is found failing by the command itself)."""
        if not self.pending:
            return
        future = asyncio.get_running_loop().create_future()
        self._drained.append(future)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await future
        finally:
            if future in self._drained:  # (timed out or cancelled: not kept until drained)
                self._drained.remove(future)


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
        posted: Posted | None = None,
    ) -> None:
        self.session = session
        self.posted = posted
        """Where posted replies are counted (``Posted``; the proxy shares one)."""
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._nudged = False
        """``nudge`` came while no wait round waited: the next one ends at once."""
        self._wake: Callable[[], None] | None = None
        """Ends the wait round a task waits in now (``_until``, ``_sleep``)."""

    def nudge(self) -> None:
        """End the wait round this driver's operation waits in now (its outcome has what
        arrived so far), or the next one at once: the core looks at its state again (the
        sentinels' coverage changed). Call it from the event loop, outside any operation."""
        if self._wake is not None:
            self._wake()
            return
        self._nudged = True

    async def run(self, op: Op[T]) -> T:
        """Run a core operation to its end and return its result (or raise its error)."""
        return await self._drive(op, None)

    async def _drive(
        self, op: Op[T], rnd: Round | None, idle: Callable[[], None] | None = None
    ) -> T:
        """``run``, or (``rnd``) the rest of an operation whose round ``rnd`` is due; ``idle()``
        each time the operation starts to wait for replies (``_execute``)."""
        try:
            if rnd is None:
                rnd = next(op)
            while True:
                rnd = op.send(await self._execute(rnd, idle))
        except StopIteration as stop:
            self.close_links(self.session.take_closes())
            result: T = stop.value
            return result
        except BaseException:
            op.close()
            self.close_links(self.session.abandon())
            raise

    def _complete(self, live: list[Link], outcome: Outcome, partial: bool = False) -> list[Link]:
        """Put the links of ``live`` that have every reply they owe (``partial``: any reply),
        or failed, in ``outcome``; the others are returned."""
        pending: list[Link] = []
        for link in live:
            stream = link.io
            assert isinstance(stream, Stream)
            if len(stream.got) >= link.owed or (partial and stream.got):
                outcome[link] = stream.take(link.owed)
            elif stream.failed is not None:
                self._lost(link, f"{link.shard.name} {stream.failed}", outcome)
            else:
                pending.append(link)
        return pending

    def _settle(self, first: bool, pending: list[Link], outcome: Outcome) -> None:
        """After a round's wait: what each link still owing replies came to."""
        for link in pending:
            stream = link.io
            if not isinstance(stream, Stream):  # closed meanwhile
                self._lost(link, f"{link.shard.name} closed the link", outcome)
            elif stream.failed is not None and len(stream.got) < link.owed:
                self._lost(link, f"{link.shard.name} {stream.failed}", outcome)
            elif first or len(stream.got) >= link.owed:
                outcome[link] = stream.take(link.owed)  # (a wait: partial, the rest stays owed)
            else:
                self._lost(link, f"no reply from {link.shard.name} in time", outcome, True)

    def _post(self, link: Link, replies: tuple[Reply, ...], outcome: Outcome) -> None:
        """A posted send is written: answer it now, and check the shard's replies when they
        come (``Stream.expect``)."""
        stream = link.io
        assert isinstance(stream, Stream)
        stream.expect.extend(replies)
        if self.posted is not None:
            stream.posted = self.posted
            self.posted.sent(len(replies))
        outcome[link] = list(replies)

    def _loop_of(self) -> asyncio.AbstractEventLoop:
        """The event loop the driver runs on (the running one, remembered)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def close(self) -> None:
        """Close every link of the session (each shard gives back the jobs held on it)."""
        self.closed = True
        self.close_links(self.session.close())

    def close_links(self, links: Iterable[Link]) -> None:
        """Close the links' transports. A link with a reserve unanswered and no job held (a
        wait cancelled past the caller's deadline, by an interruption, or with its session) is
        read out first (``_read_out``): the shard's answer may be a job it reserved just then."""
        for link in links:
            stream = link.io
            link.io = None
            if not isinstance(stream, Stream):
                continue
            if link.reserving and link.owed > 0 and not link.held:
                self._read_out(link, stream, link.owed)
            else:
                stream.close()

    def _idle_stream(self, host: str, port: int) -> Stream | None:
        """A connection to ``host:port`` kept from an earlier session, to use instead of
        connecting (the proxy's driver keeps some); None here."""
        return None

    async def _connect(self, link: Link) -> Stream:
        cfg = link.shard.config
        idle = self._idle_stream(cfg.host, cfg.port)
        if idle is not None:
            link.io = idle
            return idle
        # A burst of sessions (a thousand clients connecting to the proxy at once) would each
        # open their shard links at the same moment: bounded per shard, so that the connect
        # timeout measures the shard, not the queue in front of it.
        loop = asyncio.get_running_loop()
        key = (id(loop), cfg.host, cfg.port)
        slots = _CONNECT_SLOTS.get(key)
        if slots is None:
            slots = _CONNECT_SLOTS[key] = asyncio.Semaphore(MAX_CONNECTING)
        # (``asyncio.timeout``, not ``wait_for``: 3.11's ``wait_for`` loses a cancellation that
        # comes as the connection is made, and a cancelled reserve then waited on forever.)
        async with slots, asyncio.timeout(self.connect_timeout):
            _, stream = await loop.create_connection(Stream, cfg.host, cfg.port)
        link.io = stream
        return stream

    async def _send(self, link: Link, data: bytes, outcome: Outcome) -> None:
        stream = link.io
        name = link.shard.name
        if isinstance(stream, Stream) and stream.stale():
            stream.close()
            link.io = None
            outcome[link] = Failure(FailureKind.STALE, f"{name} closed the link")
            return
        if not isinstance(stream, Stream):
            try:
                stream = await self._connect(link)
            except (TimeoutError, OSError) as exc:
                outcome[link] = Failure(FailureKind.CONNECT, f"cannot connect to {name}: {exc!r}")
                return
        transport = stream.transport
        assert transport is not None
        transport.write(data)
        if stream.resume is not None:
            await self._drained(link, stream, outcome)

    async def _drained(self, link: Link, stream: Stream, outcome: Outcome) -> None:
        """Above the transport's high-water mark: wait for it to drain (bounded)."""
        resume = stream.resume
        if resume is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.shield(resume)
        except TimeoutError as exc:
            stream.close()
            link.io = None
            outcome[link] = Failure(FailureKind.LOST, f"send to {link.shard.name} failed: {exc!r}")

    def _lost(self, link: Link, message: str, outcome: Outcome, timed_out: bool = False) -> None:
        stream = link.io
        if isinstance(stream, Stream):
            stream.close()
        link.io = None
        outcome[link] = Failure(FailureKind.LOST, message, timed_out)

    def _cancel(self, links: Sequence[Link], outcome: Outcome) -> None:
        """Read what has arrived on each link without waiting (what was parsed, then the socket
        itself); half-close those still owing and read their last replies in the background
        (``_read_out``). Synchronous: nothing runs in between."""
        for link in links:
            stream = link.io
            got: list[Reply] = []
            if isinstance(stream, Stream):
                transport = stream.transport
                sock = transport.get_extra_info("socket") if transport is not None else None
                fd = sock.fileno() if sock is not None else -1
                while len(stream.got) < link.owed and stream.failed is None and fd >= 0:
                    try:
                        data = os.read(fd, _READ_SIZE)
                    except OSError:  # BlockingIOError: nothing more has arrived
                        break
                    if not data:
                        break
                    stream.data_received(data)
                got = stream.take(link.owed)
            if len(got) < link.owed:
                link.io = None
                if isinstance(stream, Stream):
                    self._read_out(link, stream, link.owed - len(got))
            outcome[link] = got

    def _read_out(self, link: Link, stream: Stream, owed: int) -> None:
        """A cancelled wait's link (``Round.cancel``, or ``close_links`` of a link with its
        reserve unanswered): send EOF, so the shard answers the reserve at once (``TIMED_OUT``,
        or the job it reserved just before), read the ``owed`` replies as they come (bounded by
        the reply timeout), hand them to the core (``reserve.cancelled``) and close."""
        cluster = self.session.cluster
        transport = stream.transport
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (closed from outside it): nothing can be read
                stream.close()
                return
        if transport is None or stream.failed is not None:  # the shard closed it already
            got = stream.take(owed)
            stream.close()
            cancelled(cluster, link, got, len(got) >= owed)
            return
        if not stream.half:  # (else the client's own half-close was passed on already)
            stream.half = True
            try:
                transport.write_eof()
            except Exception:  # the transport is broken: nothing more will come
                stream.close()
                return

        def finish() -> None:
            if stream.want < 0:
                return  # finished already
            stream.want = -1
            stream.notify = None
            timer.cancel()
            got = stream.take(owed)
            stream.close()
            cancelled(cluster, link, got, len(got) >= owed)

        stream.want = owed
        stream.notify = finish
        timer = loop.call_later(self.timeout, finish)
        if len(stream.got) >= owed or stream.failed is not None:
            finish()

    def _begin(self, rnd: Round) -> Outcome:
        """A round's first step: close what it closes, cancel what it cancels."""
        if rnd.close:
            self.close_links(rnd.close)
        outcome: Outcome = {}
        if rnd.cancel:
            self._cancel(rnd.cancel, outcome)
        return outcome

    async def _execute(self, rnd: Round, idle: Callable[[], None] | None = None) -> Outcome:
        outcome = self._begin(rnd)
        live: list[Link] = []
        for send in rnd.sends:
            link = send.link
            stream = link.io
            if isinstance(stream, Stream) and not stream.stale():  # connected and idle
                transport = stream.transport
                assert transport is not None
                transport.write(send.data)
                if stream.resume is not None:
                    await self._drained(link, stream, outcome)
            else:
                await self._send(link, send.data, outcome)
            if link not in outcome:
                if send.posted:
                    self._post(link, send.posted, outcome)
                else:
                    live.append(link)
        for link in rnd.wait:
            if link not in outcome and isinstance(link.io, Stream):
                live.append(link)
        if not live:
            if rnd.first and not outcome and rnd.until != -math.inf:
                await self._sleep(rnd.until)  # a wait on no link: until then, or a nudge
            return outcome
        pending = self._complete(live, outcome, rnd.partial)
        if not pending:
            return outcome
        first = rnd.first
        if first and self._nudged:
            self._nudged = False
            rnd = Round(first=True, until=-math.inf, partial=rnd.partial)  # one look, no wait
        if idle is not None:
            idle()
        waiting = first and rnd.until != -math.inf
        if waiting:
            self.session.waiting = True  # every reserve of the round is on the wire now
        try:
            if first:
                until = -math.inf if outcome else rnd.until
                wait = None if until is None else max(0.0, until - self.clock())
                if wait == 0.0:
                    await asyncio.sleep(0)  # one look: let what has arrived be read
                else:
                    await self._until(pending, 1, wait, False, rnd.partial)
            else:
                await self._until(pending, len(pending), None, True)
        finally:
            if waiting:
                self.session.waiting = False
        self._settle(first, pending, outcome)
        return outcome

    async def _sleep(self, until: float | None) -> None:
        """Until ``until`` on the core's clock (None: no limit), or a ``nudge``."""
        if self._nudged:
            self._nudged = False
            return
        loop = self._loop_of()
        done: asyncio.Future[None] = loop.create_future()
        fire = functools.partial(_settle, done)
        timer = None if until is None else loop.call_later(max(0.0, until - self.clock()), fire)
        self._wake = fire
        try:
            await done
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    async def _until(
        self,
        links: list[Link],
        count: int,
        wait: float | None,
        request: bool,
        partial: bool = False,
    ) -> None:
        """Until ``count`` of ``links`` are complete or failed, or ``wait`` seconds have passed
        (None: no limit); a ``request`` is bounded by the reply timeout instead (checked by the
        loop's ``_Watchdog``)."""
        loop = self._loop_of()
        done: asyncio.Future[None] = loop.create_future()
        left = count

        def one() -> None:
            nonlocal left
            left -= 1
            if left <= 0 and not done.done():
                done.set_result(None)

        for link in links:
            stream = link.io
            assert isinstance(stream, Stream)
            stream.want = 1 if partial else link.owed
            stream.notify = one
        timer = None
        dog = None
        fire = functools.partial(_settle, done)
        if wait is not None:
            timer = loop.call_later(wait, fire)
        elif request:
            dog = watchdog(loop)
            dog.add(fire, loop.time() + self.timeout)
        if not request:
            self._wake = fire
        try:
            await done
        finally:
            if not request:
                self._wake = None
            if timer is not None:
                timer.cancel()
            if dog is not None:
                dog.rounds.pop(fire, None)
            for link in links:
                stream = link.io
                if isinstance(stream, Stream):
                    stream.notify = None


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class _Watchdog:
    """The reply deadlines of every request round on one event loop, checked every ``TICK``
    seconds by one timer (instead of a timer per round): a reply timeout is honoured within
    ``TICK``."""

    TICK = 0.05

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rounds: dict[Callable[[], None], float] = {}
        """What to call when each round's deadline has passed (the round ends it: ``pop``)."""
        self.timer: asyncio.TimerHandle | None = None

    def add(self, fire: Callable[[], None], deadline: float) -> None:
        self.rounds[fire] = deadline
        if self.timer is None:
            self.timer = self.loop.call_later(self.TICK, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        late = [fire for fire, deadline in self.rounds.items() if deadline <= now]
        for fire in late:
            del self.rounds[fire]
        for fire in late:
            fire()
        self.timer = self.loop.call_later(self.TICK, self._tick) if self.rounds else None


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = (
    weakref.WeakKeyDictionary()
)


def watchdog(loop: asyncio.AbstractEventLoop) -> _Watchdog:
    dog = _WATCHDOGS.get(loop)
    if dog is None:
        dog = _WATCHDOGS[loop] = _Watchdog(loop)
    return dog
