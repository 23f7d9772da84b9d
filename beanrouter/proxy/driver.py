"""The proxy's driver: ``AsyncDriver`` (``beanrouter.router.aio_driver``) plus what only the
proxy needs.

- ``ProxyDriver.start`` runs a core operation from the links' callbacks while its rounds need no
  connection, drained buffer or timer (the proxy's fast path: no task, no future), the rest in a
  task; ``can_extend``/``extend`` write more of a streamed run on its link
  (``core.batch.extend``); ``pause_reading``/``resume_reading`` bound what is read for a client
  whose output is paused; ``half_close`` mirrors a client's half-close; ``abort`` ends what
  ``start`` began.
- ``LinkPool``: idle shard connections that sessions left behind, for later sessions.
- ``answers``: is a shard up at ``host:port`` (the proxy's background probe, ``beanrouter
  cluster``'s readiness check).

Layers (docs/architecture.md): a driver. Imports ``beanrouter.router.aio_driver``, the core and
the codec only; no routing decision is made here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..core.links import Link
from ..core.rounds import Op, Outcome, Round
from ..core.session import Session
from ..protocol import NEED_DATA, ProtocolError, ReplyReader, Using
from ..router.aio_driver import AsyncDriver, Posted, Stream, watchdog

__all__ = ["LinkPool", "ProxyDriver", "answers"]

T = TypeVar("T")


class ProxyDriver(AsyncDriver):
    """``AsyncDriver`` for one proxy client session: the fast path (``start``) and a pool of
    idle shard connections (``pool``, shared by the proxy's sessions).

    Args:
        session, connect_timeout, timeout, clock, posted: as for ``AsyncDriver``.
        pool: where the session's reusable links are kept when it closes, and links are taken
            from instead of connecting.
    """

    def __init__(
        self,
        session: Session,
        connect_timeout: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        pool: LinkPool | None = None,
        posted: Posted | None = None,
    ) -> None:
        super().__init__(session, connect_timeout, timeout, clock, posted)
        self.pool = pool
        self._tasks: set[asyncio.Task[object]] = set()
        """The tasks that go on with operations ``start`` began."""
        self._fast: set[_Fast[Any]] = set()
        """Operations ``start`` began that have not ended."""

    def nudge(self) -> None:
        """``AsyncDriver.nudge``, for a wait round of an operation ``start`` runs from callbacks
        too."""
        if self._wake is None:
            for fast in list(self._fast):
                if fast.pending is not None and fast.first:
                    fast._finish()
                    return
        super().nudge()

    def start(
        self,
        op: Op[T],
        done: Callable[[T | None, BaseException | None], None],
        idle: Callable[[], None] | None = None,
    ) -> None:
        """Run ``op`` from callbacks, with no task and no future while its rounds allow: a
        round whose links are all connected and idle is written at once, and the replies that
        complete it go on with the operation from the links' ``data_received``. A round that
        needs more (a connection, a drained buffer, a timer, a look after a pause) and the
        rest after it run in a task, as ``run`` would. ``done(result, None)`` or
        ``done(None, error)`` is called exactly once (possibly before ``start`` returns);
        ``idle()`` each time the operation starts to wait for replies (in a task too).
        Ended early only by ``abort`` (or ``close``)."""
        fast = _Fast(self, op, done, idle)
        self._fast.add(fast)
        fast.begin()

    def can_extend(self, link: Link) -> bool:
        """An operation ``start`` began waits from callbacks for replies on ``link`` (what it
        sent there is written), and more may be written on it now: connected, no EOF sent, not
        above the write buffer's high-water mark."""
        stream = link.io
        if not isinstance(stream, Stream) or stream.failed is not None or stream.half:
            return False
        transport = stream.transport
        if transport is None or transport.is_closing() or stream.resume is not None:
            return False
        return any(fast.pending is not None and link in fast.pending for fast in self._fast)

    @staticmethod
    def extend(link: Link, data: bytes) -> None:
        """Write ``data`` on ``link`` after what it carries (``can_extend`` said it may): more
        commands of the run out on it, whose replies it owes now (``core.batch.extend``)."""
        stream = link.io
        assert isinstance(stream, Stream) and stream.transport is not None
        stream.transport.write(data)

    @staticmethod
    def pause_reading(link: Link) -> bool:
        """Stop reading ``link``'s connection (False: it has none open): what the shard sends
        waits in the kernel's buffers, and the shard waits too once they are full."""
        stream = link.io
        if not isinstance(stream, Stream) or stream.transport is None:
            return False
        if stream.transport.is_closing():
            return False
        stream.transport.pause_reading()
        return True

    @staticmethod
    def resume_reading(link: Link) -> None:
        """Read ``link``'s connection again (after ``pause_reading``)."""
        stream = link.io
        if isinstance(stream, Stream) and stream.transport is not None:
            with contextlib.suppress(Exception):  # (closed meanwhile)
                stream.transport.resume_reading()

    @staticmethod
    def connected(link: Link) -> bool:
        """``link`` has a connection that is open and idle (nothing unread, no EOF sent)."""
        stream = link.io
        return isinstance(stream, Stream) and not stream.stale()

    def abort(self) -> None:
        """End every operation ``start`` began and has not finished: each is closed, the links
        it left owing replies are closed (the shards give back what they reserved for it), and
        its ``done`` gets ``CancelledError`` (at once, or when its task has stopped)."""
        for task in list(self._tasks):
            task.cancel()
        for fast in list(self._fast):
            fast.abort()

    def half_close(self) -> None:
        """Mirror a client's half-close: send EOF on every link that owes replies. A shard then
        answers a waiting reserve ``TIMED_OUT``, runs the rest of what it was sent, and closes
        (beanstalkd's half-close; the bundled server's too); the replies still come in."""
        for link in self.session.all_links():
            stream = link.io
            if link.owed and isinstance(stream, Stream) and stream.transport is not None:
                stream.half = True
                with contextlib.suppress(Exception):
                    stream.transport.write_eof()

    def _fast_ready(self, rnd: Round) -> bool:
        """``rnd`` can run from callbacks (``_fast_round``): no deadline, every send on a
        connected idle link that is not above its write buffer's high-water mark."""
        if rnd.first and rnd.until is not None:
            return False
        for send in rnd.sends:
            link = send.link
            stream = link.io
            if not isinstance(stream, Stream) or stream.stale() or stream.resume is not None:
                return False
            if link in rnd.close or link in rnd.cancel:
                return False
        return True

    def _fast_round(self, rnd: Round) -> tuple[Outcome, list[Link]]:
        """``_execute`` up to its wait, for a round ``_fast_ready`` accepted: the outcome so
        far and the links still owing replies."""
        outcome = self._begin(rnd)
        live: list[Link] = []
        for send in rnd.sends:
            link = send.link
            stream = link.io
            assert isinstance(stream, Stream) and stream.transport is not None
            stream.transport.write(send.data)
            if send.posted:
                self._post(link, send.posted, outcome)
            else:
                live.append(link)
        for link in rnd.wait:
            if link not in outcome and isinstance(link.io, Stream):
                live.append(link)
        return outcome, self._complete(live, outcome, rnd.partial)

    def _later(self, fast: _Fast[T], rnd: Round) -> None:
        """The rest of ``fast``'s operation, from round ``rnd``, in a task."""
        loop = self._loop_of()
        task = loop.create_task(self._drive(fast.op, rnd, fast.idle))
        self._tasks.add(task)

        def finished(task: asyncio.Task[T]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                fast.end(None, asyncio.CancelledError())
            else:
                exc = task.exception()
                fast.end(None if exc is not None else task.result(), exc)

        task.add_done_callback(finished)

    def close(self) -> None:
        """Close every link of the session (each shard gives back the jobs held on it); with
        ``pool``, the links the core calls reusable are reset and kept for later sessions.
        An operation ``start`` began and not finished ends with an error."""
        self.closed = True
        self.abort()
        if self.pool is None:
            self.close_links(self.session.close())
            return
        kept: set[Link] = set()
        for link, data, replies in self.session.reusable():
            stream = link.io
            if not isinstance(stream, Stream) or stream.stale():
                continue
            if self.pool.keep(link.shard.config.host, link.shard.config.port, stream, replies):
                if data:
                    assert stream.transport is not None
                    stream.transport.write(data)
                kept.add(link)
                link.io = None
        self.close_links(link for link in self.session.close() if link not in kept)

    def _idle_stream(self, host: str, port: int) -> Stream | None:
        return None if self.pool is None else self.pool.take(host, port)


class _Fast(Generic[T]):
    """One operation ``ProxyDriver.start`` runs from callbacks (see there)."""

    __slots__ = ("done", "driver", "fire", "first", "idle", "left", "op", "outcome", "pending")

    def __init__(
        self,
        driver: ProxyDriver,
        op: Op[T],
        done: Callable[[T | None, BaseException | None], None],
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.driver = driver
        self.idle = idle
        """Called each time the operation starts to wait for replies."""
        self.op = op
        self.done: Callable[[T | None, BaseException | None], None] | None = done
        self.pending: list[Link] | None = None
        """The links a round waits for (None: no round is waiting)."""
        self.outcome: Outcome = {}
        self.first = False
        self.left = 0
        self.fire: Callable[[], None] | None = None
        """The reply deadline's callback while a request round waits (``_Watchdog``)."""

    def begin(self) -> None:
        self._go(self._advance(None))

    def end(self, result: T | None, error: BaseException | None) -> None:
        self.driver._fast.discard(self)
        done = self.done
        self.done = None
        if done is not None:
            done(result, error)

    def abort(self) -> None:
        """``ProxyDriver.abort`` for this operation, if a round of it waits on callbacks (in a
        task, cancelling the task ends it)."""
        if self.pending is None:
            return
        self._disarm()
        driver = self.driver
        self.op.close()
        driver.close_links(driver.session.abandon())
        self.end(None, asyncio.CancelledError())

    def _advance(self, outcome: Outcome | None) -> Round | None:
        """The operation's next round (None: it ended, and ``end`` was called)."""
        driver = self.driver
        try:
            return next(self.op) if outcome is None else self.op.send(outcome)
        except StopIteration as stop:
            driver.close_links(driver.session.take_closes())
            self.end(stop.value, None)
        except BaseException as exc:
            self.op.close()
            driver.close_links(driver.session.abandon())
            self.end(None, exc)
            if not isinstance(exc, Exception):
                raise
        return None

    def _go(self, rnd: Round | None) -> None:
        driver = self.driver
        while rnd is not None:
            if driver.closed:
                self.op.close()
                self.end(None, ConnectionError("the session is closed"))
                return
            if not driver._fast_ready(rnd):
                driver._later(self, rnd)
                return
            outcome, pending = driver._fast_round(rnd)
            if pending:
                self._arm(rnd, pending, outcome)
                return
            rnd = self._advance(outcome)

    def _arm(self, rnd: Round, pending: list[Link], outcome: Outcome) -> None:
        driver = self.driver
        self.pending = pending
        self.outcome = outcome
        # A wait round here has no deadline (``_fast_ready``): one link completes it, and if
        # one is complete already, it is over at once, with what the others have so far.
        self.first = rnd.first
        if rnd.first and outcome:
            self._finish()
            return
        self.left = 1 if rnd.first else len(pending)
        if rnd.first:
            driver.session.waiting = True
            if driver._nudged:  # (``ProxyDriver.nudge``)
                driver._nudged = False
                driver._loop_of().call_soon(self._finish)
        for link in pending:
            stream = link.io
            assert isinstance(stream, Stream)
            stream.want = 1 if rnd.partial else link.owed
            stream.notify = self._one
        if self.idle is not None:
            self.idle()
        if not rnd.first:
            loop = driver._loop
            if loop is None:
                loop = driver._loop = asyncio.get_running_loop()
            self.fire = self._finish
            watchdog(loop).add(self.fire, loop.time() + driver.timeout)

    def _one(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self._finish()

    def _disarm(self) -> list[Link]:
        """Stop waiting: the links' callbacks, the reply deadline, the waiting flag."""
        pending = self.pending or []
        self.pending = None
        driver = self.driver
        for link in pending:
            stream = link.io
            if isinstance(stream, Stream):
                stream.notify = None
        if self.fire is not None:
            assert driver._loop is not None
            watchdog(driver._loop).rounds.pop(self.fire, None)
            self.fire = None
        elif self.first:
            driver.session.waiting = False
        return pending

    def _finish(self) -> None:
        if self.pending is None:
            return
        pending = self._disarm()
        outcome = self.outcome
        self.outcome = {}
        self.driver._settle(self.first, pending, outcome)
        self._go(self._advance(outcome))


class LinkPool:
    """Idle shard connections that sessions left behind (``ProxyDriver.close``), taken by later
    sessions instead of connecting (the proxy's many short client connections). Each was reset
    by the core (``Session.reusable``: ``use default``); it is handed out once those replies
    have come and said so, and only while the shard has not closed it. At most ``limit`` per
    shard address; the oldest is handed out first."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self.idle: dict[tuple[str, int], collections.deque[tuple[Stream, int]]] = {}

    def keep(self, host: str, port: int, stream: Stream, replies: int) -> bool:
        """Keep ``stream`` (``replies``: the reset's replies still to come). False: full."""
        queue = self.idle.setdefault((host, port), collections.deque())
        if len(queue) >= self.limit:
            return False
        stream.want = 0
        queue.append((stream, replies))
        return True

    def take(self, host: str, port: int) -> Stream | None:
        """A reusable connection to ``host:port``, or None."""
        queue = self.idle.get((host, port))
        for _ in range(len(queue) if queue else 0):
            assert queue is not None
            stream, replies = queue.popleft()
            if replies and len(stream.got) < replies and stream.failed is None:
                queue.append((stream, replies))  # its reset is still on the way
                continue
            reset = stream.take(replies)
            if all(isinstance(r, Using) for r in reset) and not stream.stale():
                return stream
            stream.close()
        return None

    def close(self) -> None:
        for queue in self.idle.values():
            for stream, _ in queue:
                stream.close()
        self.idle.clear()


async def answers(host: str, port: int) -> bool:
    """``host:port`` accepts a connection and answers ``list-tube-used`` with ``USING``: a shard
    is up there (False: refused, closed, or another answer). No deadline of its own."""
    reader = ReplyReader()
    try:
        stream, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(b"list-tube-used\r\n")
        while (event := reader.next_event()) is NEED_DATA:
            reader.receive_data(await stream.read(4096))
    except (OSError, ProtocolError):
        return False
    finally:
        writer.close()
    return isinstance(event, Using)
