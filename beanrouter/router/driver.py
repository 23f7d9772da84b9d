"""The blocking shell's engine: runs core operations (``beanrouter.core``) over blocking sockets.

``Driver.run(op)`` performs each ``Round`` the operation yields: connects links on first use
(``Connection``), sends, and reads the replies (one link: plain blocking reads bounded by the
reply timeout; several: ``poll``; a *wait*: ``poll`` until one link completes or the
round's deadline). It makes no routing decision: what to send where, and what the replies mean,
is the core's.

Threads: a ``Driver`` is used by one thread, with one exception: ``close()`` may be called from
another thread or from a signal handler while ``run`` waits. It then only marks the driver closed
and wakes the wait (through a socket pair); the running thread raises ``RouterError`` and closes
every link as ``run`` returns: closing a socket another thread waits on would leave that thread
polling a closed (or reused) file descriptor.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from ..core.errors import RouterError
from ..core.links import Link
from ..core.reserve import cancelled
from ..core.rounds import Failure, FailureKind, Op, Outcome, Round
from ..core.session import Session
from ..protocol import Reply
from .connection import ConnectFailed, Connection, ReplyLost, SendFailed

__all__ = ["Driver"]

T = TypeVar("T")

_MAX_SELECT = 3600.0
"""Longest single ``poll`` (waking early sends nothing)."""
_READABLE = select.POLLIN | select.POLLPRI


def _ms(seconds: float) -> int:
    """A ``poll`` timeout: whole milliseconds, rounded up (never a busy loop on a sub-ms wait)."""
    return math.ceil(seconds * 1000)


CANCEL_READ = 0.5
"""Seconds a cancelled wait's last replies are waited for (``Driver._read_out``): a healthy
shard answers a half-closed reserve at once; the caller waits meanwhile."""


class Driver:
    """Runs one session's operations over blocking sockets.

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
        self.closed = False
        # Reentrant: close() may run in a signal handler that interrupted run().
        self._lock = threading.RLock()
        self._busy = False
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._poller: select.poll | None = None

    # ---- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every link (each shard gives back the jobs held on it).

        Safe from another thread or a signal handler while ``run`` waits: the wait is woken,
        raises ``RouterError``, and everything is closed as ``run`` returns.
        """
        with self._lock:
            self.closed = True
            if self._busy:
                if self._wake is not None:
                    with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                        self._wake[1].send(b"\0")
                return
        self._close_all()

    def _close_all(self) -> None:
        self._close(self.session.close())
        wake, self._wake = self._wake, None
        if wake is not None:
            for sock in wake:
                sock.close()

    def check_open(self, what: str) -> None:
        if self.closed:
            raise RouterError(f"{what}: the router is closed")

    def run(self, op: Op[T]) -> T:
        """Run a core operation to its end and return its result (or raise its error)."""
        with self._lock:
            if self.closed:
                op.close()
                raise RouterError("the router is closed")
            self._busy = True
        try:
            try:
                rnd = next(op)
                while True:
                    rnd = op.send(self._execute(rnd))
            except StopIteration as stop:
                self._close(self.session.take_closes())
                result: T = stop.value
                return result
            except BaseException:
                op.close()
                self._close(self.session.abandon())
                raise
        finally:
            with self._lock:
                self._busy = False
                closed = self.closed
            if closed:
                self._close_all()

    # ---- one round ---------------------------------------------------------------------------

    @staticmethod
    def _close(links: Iterable[Link]) -> None:
        for link in links:
            conn = link.io
            link.io = None
            if isinstance(conn, Connection):
                conn.close()

    def _connect(self, link: Link) -> Connection:
        cfg = link.shard.config
        conn = Connection.open(cfg.name, cfg.host, cfg.port, self.connect_timeout, self.timeout)
        link.io = conn
        return conn

    def _execute(self, rnd: Round) -> Outcome:
        sends = rnd.sends
        if len(sends) == 1 and not (rnd.first or rnd.wait or rnd.close or rnd.cancel):
            # The common round (a put, a delete...): one command on a connected link.
            link, data, replies = sends[0][:3]  # (a posted send is read like any: no posting here)
            if replies == 1 and link.owed == 1:
                result = self.one(link, data)
                if result is not None:
                    return {link: result}
        self._close(rnd.close)
        outcome: Outcome = {}
        if rnd.cancel:
            self._cancel(rnd.cancel, outcome)
        for send in rnd.sends:
            link = send.link
            conn = link.io
            try:
                if not isinstance(conn, Connection):
                    conn = self._connect(link)
                elif conn.stale():
                    conn.close()
                    link.io = None
                    outcome[link] = Failure(FailureKind.STALE, f"{conn.shard} closed the link")
                    continue
                conn.send(send.data, send.replies)
            except ConnectFailed as exc:
                outcome[link] = Failure(FailureKind.CONNECT, str(exc))
                link.io = None
            except SendFailed as exc:
                outcome[link] = Failure(FailureKind.SEND, str(exc))
                link.io = None
        live = [s.link for s in rnd.sends if s.link not in outcome] + [
            k for k in rnd.wait if k not in outcome
        ]
        if rnd.first:
            # A link that failed already ends the round: one non-blocking pass for the others.
            self._wait(live, -math.inf if outcome else rnd.until, outcome)
        elif len(live) == 1:
            self._read_one(live[0], outcome)
        elif live:
            self._read_all(live, outcome)
        return outcome

    def one(self, link: Link, data: bytes) -> list[Reply] | Failure | None:
        """Send one command on a connected link and read its reply. None: the link is not
        connected, or its connection was found closed by the shard (nothing was sent)."""
        conn = link.io
        if type(conn) is not Connection or conn.stale():
            return None
        try:
            conn.send(data, 1)
        except SendFailed as exc:
            link.io = None
            return Failure(FailureKind.SEND, str(exc))
        try:
            return [conn.read_next()]
        except ReplyLost as exc:
            link.io = None
            return Failure(FailureKind.LOST, str(exc), exc.timed_out)

    def _cancel(self, links: Sequence[Link], outcome: Outcome) -> None:
        """Read what has arrived on each link without waiting; close those still owing."""
        for link in links:
            conn = link.io
            replies: list[Reply] = []
            if isinstance(conn, Connection):
                try:
                    while True:
                        if self._drain_buffered(link, conn, replies, outcome):
                            break
                        conn.sock.setblocking(False)
                        try:
                            data = conn.sock.recv(65536)
                        except BlockingIOError:
                            break
                        finally:
                            with contextlib.suppress(OSError):
                                conn.sock.setblocking(True)
                        conn.reader.receive_data(data)
                        if not data:
                            break
                except OSError:
                    pass
            if link in outcome and not isinstance(outcome[link], list):
                continue  # failed: closed already
            if len(replies) < link.owed:
                if isinstance(conn, Connection):
                    link.io = None
                    self._read_out(link, conn, link.owed - len(replies))
                else:
                    self._close([link])
            outcome[link] = replies

    def _read_out(self, link: Link, conn: Connection, owed: int) -> None:
        """A cancelled wait's link (``Round.cancel``): send EOF, so the shard answers its
        reserve at once (``TIMED_OUT``, or the job it reserved just before), read the ``owed``
        replies (at most ``CANCEL_READ`` seconds), hand them to the core
        (``reserve.cancelled``) and close."""
        got: list[Reply] = []
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            wait = min(self.timeout, CANCEL_READ)
            conn.sock.settimeout(wait)  # each receive too (the connection closes after)
            deadline = time.monotonic() + wait
            while len(got) < owed:
                got.append(conn.read(deadline))
        except (OSError, ReplyLost):
            pass
        conn.close()
        cancelled(self.session.cluster, link, got, len(got) >= owed)

    def _read_one(self, link: Link, outcome: Outcome) -> None:
        conn = link.io
        assert isinstance(conn, Connection)
        try:
            if link.owed == 1:
                # Nothing is buffered: a link is sent to only once every earlier reply was read.
                outcome[link] = [conn.read_next()]
                return
            deadline = time.monotonic() + self.timeout
            outcome[link] = [conn.read(deadline) for _ in range(link.owed)]
        except ReplyLost as exc:
            outcome[link] = Failure(FailureKind.LOST, str(exc), exc.timed_out)
            link.io = None

    def _read_all(self, links: list[Link], outcome: Outcome) -> None:
        """Read every reply owed on several links concurrently (bounded by the reply timeout)."""
        deadline = time.monotonic() + self.timeout
        got: dict[Link, list[Reply]] = {link: [] for link in links}
        poller = self._poll()
        fds: dict[int, Link] = {}
        try:
            for link in links:
                conn = link.io
                assert isinstance(conn, Connection)
                if self._drain_buffered(link, conn, got[link], outcome):
                    del got[link]
                    continue
                fd = conn.sock.fileno()
                poller.register(fd, _READABLE)
                fds[fd] = link
            while got:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    for link in got:
                        self._fail_lost(link, "no reply in time", outcome, timed_out=True)
                    return
                for fd, _ in poller.poll(_ms(remaining)):
                    ready = fds.get(fd)  # (not the wake-up socket: it is not registered here)
                    if ready is not None and self._pump(ready, got[ready], outcome):
                        poller.unregister(fd)
                        del fds[fd], got[ready]
        finally:
            for fd in fds:
                poller.unregister(fd)

    def _wait(self, links: list[Link], until: float | None, outcome: Outcome) -> None:
        """Read until one link has every reply it owes (or failed), or ``until`` passes; one
        non-blocking pass when it has passed already. Partial replies are reported too."""
        got: dict[Link, list[Reply]] = {link: [] for link in links}
        done = False
        with self._lock:
            if self.closed:
                raise RouterError("reserve: the router was closed")
            if self._wake is None:
                pair = socket.socketpair()
                for sock in pair:
                    sock.setblocking(False)
                self._wake = pair
            wake = self._wake[0].fileno()
        poller = self._poll()
        poller.register(wake, _READABLE)
        fds: dict[int, Link] = {}
        try:
            for link in links:
                conn = link.io
                assert isinstance(conn, Connection)
                if self._drain_buffered(link, conn, got[link], outcome):
                    done = True
                    continue
                fd = conn.sock.fileno()
                poller.register(fd, _READABLE)
                fds[fd] = link
            first = True
            while not done:
                if until is None:
                    timeout = _MAX_SELECT
                else:
                    timeout = max(0.0, until - self.clock())
                    if timeout == 0.0 and not first:
                        break
                    timeout = min(timeout, _MAX_SELECT)
                first = False
                events = poller.poll(_ms(timeout))
                if self.closed:
                    raise RouterError("reserve: the router was closed")
                for fd, _ in events:
                    ready = fds.get(fd)
                    if ready is None:
                        continue
                    if self._pump(ready, got[ready], outcome):
                        poller.unregister(fd)
                        del fds[fd]
                        done = True
                if until is not None and until - self.clock() <= 0 and not events:
                    break
        finally:
            poller.unregister(wake)
            for fd in fds:
                poller.unregister(fd)
        for link, replies in got.items():
            if link not in outcome:
                outcome[link] = replies

    def _poll(self) -> select.poll:
        """The driver's ``poll`` object (registering with it makes no system call; one ``poll``
        per look, where a selector costs an ``epoll`` of its own and a call per socket)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
        return poller

    def _drain_buffered(
        self, link: Link, conn: Connection, replies: list[Reply], outcome: Outcome
    ) -> bool:
        """Replies already parsed or buffered. True when the link is complete or failed."""
        try:
            while len(replies) < link.owed:
                reply = conn.next_reply()
                if reply is None:
                    return False
                replies.append(reply)
        except ReplyLost as exc:
            self._fail_lost(link, str(exc), outcome)
            return True
        outcome[link] = replies
        return True

    def _pump(self, link: Link, replies: list[Reply], outcome: Outcome) -> bool:
        """Receive on a readable link. True when it is complete or failed."""
        conn = link.io
        assert isinstance(conn, Connection)
        try:
            conn.pump()
        except ReplyLost as exc:
            self._fail_lost(link, str(exc), outcome)
            return True
        return self._drain_buffered(link, conn, replies, outcome)

    @staticmethod
    def _fail_lost(link: Link, message: str, outcome: Outcome, timed_out: bool = False) -> None:
        conn = link.io
        if isinstance(conn, Connection):
            conn.close()
        link.io = None
        outcome[link] = Failure(FailureKind.LOST, message, timed_out)
