"""The asyncio shell of the bundled server: sockets in, engine calls, bytes out.

Per connection, ``ServerProtocol`` feeds received bytes to the codec's ``CommandReader``, runs each
event through the ``Session`` dispatcher and writes all replies produced from one read with a
single ``transport.write``. Pipelined input is not parsed while a reserve is blocked (as in
beanstalkd) or while the client is not reading its replies (the transport's write buffer is over
its high-water mark): then reading stops too, so a client that never reads cannot grow our memory.
One server-wide timer drives ``Engine.tick`` at ``Engine.next_wakeup``.
With a binlog (``-b``), ``Server.commit`` (commit.py) runs after each batch and before its replies
are written, and a reply for a woken reserve waits for the next batch end of its connection; both
are marked "binlog hook" below.

A connection that ends ends its session (its reserved jobs ready again, no longer counted) before
any later event of another connection is handled, as beanstalkd does: at EOF or ``quit``
(``_close``), and when a read fails, a reset by the peer say (``Server.reap``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..protocol import CLOSED, NEED_DATA, CommandReader
from .dispatch import QUIT, WAITING, Session, reply_for_wake
from .engine import Engine
from .listen import BACKLOG

if TYPE_CHECKING:  # binlog hook: imported only with -b
    from .commit import GroupCommit

__all__ = ["Server", "ServerProtocol", "serve"]

INPUT_HIGH_WATER = 256 * 1024
"""Unparsed input (beyond a job body being collected) above which we stop reading a client."""


class Server:
    """Owns the engine, the listeners and the engine's timer."""

    def __init__(
        self,
        engine: Engine,
        loop: asyncio.AbstractEventLoop,
        commit: GroupCommit | None = None,
        verbose: int = 0,
    ) -> None:
        self.engine = engine
        self.verbose = verbose  # -V: "accept FD" / "close FD" on stdout, as beanstalkd
        self.loop = loop
        self.commit = commit  # binlog hook: None without -b
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self.protocols: set[ServerProtocol] = set()
        self.recv_view = memoryview(bytearray(RECV_BUFFER))  # shared by every connection
        self.reading: ServerProtocol | None = None  # see reap()

    def protocol_factory(self) -> ServerProtocol:
        return ServerProtocol(self)

    def schedule(self) -> None:
        """Make sure the timer fires no later than the engine's next timed event.

        A timer already set for an earlier moment is kept: firing early only runs a tick that
        finds nothing due and re-arms. That keeps the per-command cost to one comparison when,
        as with every reserve, the next event moves later.
        """
        at = self.engine.next_wakeup()
        if at is None:
            return
        if self._timer is not None:
            assert self._timer_at is not None
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        delay = max(0.0, (at - self.engine.clock()) / 1e9)
        self._timer = self.loop.call_later(delay, self._fire)

    def reap(self) -> None:
        """End the session of a connection whose last read failed (ECONNRESET after the peer
        reset it, or any other error), now rather than at its ``connection_lost``.

        A failed read reaches no protocol callback: the transport closes itself and schedules
        ``connection_lost`` with ``call_soon``, so it runs after every other event of the same
        loop turn. If another client's command was read in that turn (a ``reserve-with-timeout
        0`` sent just after the reset), it would miss the job the reset client held, and see it
        counted; beanstalkd handles the reset first, in arrival order. The loop (asyncio's and
        uvloop's alike) asks for a buffer (``get_buffer``) right before each read and reports
        what it read to ``buffer_updated`` or ``eof_received``: ``reading`` is the connection
        asked last that has reported nothing yet. If its transport is closing when the next
        callback comes, its read failed (an empty read would have left it open), so its session
        ends here. Called at the start of every callback that can run commands or timers:
        ``get_buffer``, ``_process``, the engine's timer.
        """
        proto = self.reading
        self.reading = None
        if proto is not None and proto.transport is not None and proto.transport.is_closing():
            proto._gone()

    def _fire(self) -> None:
        self.reap()
        self._timer = None
        self._timer_at = None
        self.engine.tick()
        self.schedule()


RECV_BUFFER = 256 * 1024
"""Bytes read per receive. Connections read into one buffer the server reuses (the loop runs one
callback at a time and the reader copies what it gets): the plain protocol would make asyncio
allocate 256 KiB per recv, which costs a mmap/munmap pair once past malloc's mmap threshold."""


class ServerProtocol(asyncio.BufferedProtocol):
    """One client connection."""

    __slots__ = (
        "_closing",
        "_fd",
        "_held",
        "_out_paused",
        "_read_paused",
        "_waiting",
        "reader",
        "server",
        "session",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        engine = server.engine
        self.reader = CommandReader(engine.max_job_size)
        conn = engine.connect()
        conn.on_wake = self._on_wake
        self.session = Session(engine, conn)
        self.transport: asyncio.Transport | None = None
        self._waiting = False
        self._out_paused = False
        self._read_paused = False
        self._closing = False
        self._held: bytes | None = None  # binlog hook: a woken reserve's reply, see _on_wake
        self._fd = -1  # the socket's descriptor, kept for -V only

    # -- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.server.protocols.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.verbose and sock is not None:
            self._fd = sock.fileno()
            print(f"accept {self._fd}", flush=True)

    def get_buffer(self, sizehint: int) -> memoryview:
        server = self.server
        if server.reading is not None:
            server.reap()
        server.reading = self  # a read follows: see Server.reap
        return server.recv_view

    def buffer_updated(self, nbytes: int) -> None:
        server = self.server
        server.reading = None
        self.reader.receive_data(server.recv_view[:nbytes])
        self._process()

    def eof_received(self) -> bool:
        self.server.reading = None
        self.reader.receive_data(b"")
        # A blocked reserve answers TIMED_OUT now (beanstalkd watches for RDHUP while waiting).
        self.server.engine.half_close(self.session.conn)
        self._process()
        return True  # keep the transport open: pending replies still go out

    def connection_lost(self, exc: Exception | None) -> None:
        # A write error lands here first, and a failed read unless Server.reap came first; after
        # _close there is nothing left to do.
        if self.server.reading is self:
            self.server.reading = None
        self._gone()

    def _gone(self) -> None:
        """The transport is closed or closing on its own: end the session now."""
        self._closing = True
        self.server.protocols.discard(self)
        self._end_session()

    def pause_writing(self) -> None:
        self._out_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._out_paused = False
        self._resume_reading()
        self.server.loop.call_soon(self._process)

    # -- processing -----------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._closing:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self._closing:
            self._read_paused = False
            self.transport.resume_reading()

    def _process(self) -> None:
        """Run every complete command buffered, unless blocked; write the replies at once."""
        if self.server.reading is not None:
            self.server.reap()
        if self._closing or self._waiting or self._out_paused:
            return
        reader = self.reader
        handle = self.session.handle
        out: list[bytes] = []
        if self._held is not None:  # binlog hook
            out.append(self._held)
            self._held = None
        close = False
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                break
            if event is CLOSED:
                close = True
                break
            result = handle(event)  # type: ignore[arg-type]
            if result is WAITING:
                self._waiting = True
                break
            if result is QUIT:
                close = True
                break
            out.append(result)  # type: ignore[arg-type]
        transport = self.transport
        assert transport is not None
        if out:
            commit = self.server.commit
            if commit is not None:  # binlog hook: records before replies
                commit.end_of_batch()
            transport.write(b"".join(out))
        if close:
            self._close()
            return
        if reader.buffered > INPUT_HIGH_WATER + reader.max_job_size:
            self._pause_reading()
        elif self._read_paused and not self._out_paused:
            self._resume_reading()
        self.server.schedule()

    def _on_wake(self, result: object) -> None:
        """The engine answered our blocked reserve (called from inside another engine call)."""
        if self._closing or self.transport is None:
            return
        self._waiting = False
        if self.server.commit is None:
            self.transport.write(reply_for_wake(result))
        else:  # binlog hook: the put that woke us may not be logged yet; _process sends it
            self._held = reply_for_wake(result)
        self.server.loop.call_soon(self._process)

    def _close(self) -> None:
        """End the session now (EOF or quit), as beanstalkd's ``connclose``: its reserved jobs
        are ready and it stops being counted before any later event of another connection is
        handled (``connection_lost`` comes a loop turn later). Replies written still go out."""
        if self._closing:
            return
        self._closing = True
        self._end_session()
        assert self.transport is not None
        self.transport.close()

    def _end_session(self) -> None:
        conn = self.session.conn
        if conn.closed:
            return
        server = self.server
        server.engine.disconnect(conn)
        server.schedule()
        if server.verbose and self._fd >= 0:
            print(f"close {self._fd}", flush=True)


def _install_signals(
    loop: asyncio.AbstractEventLoop, engine: Engine, stop: Callable[[], None]
) -> None:
    def drain() -> None:
        engine.draining = True

    try:
        loop.add_signal_handler(signal.SIGUSR1, drain)
        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
        pass


async def serve(
    engine: Engine,
    sock: socket.socket,
    *,
    ready: Callable[[list[str]], None] | None = None,
    commit: Callable[[asyncio.AbstractEventLoop], GroupCommit] | None = None,
    verbose: int = 0,
) -> None:
    """Serve on the listening socket ``sock`` until SIGTERM/SIGINT.

    ``commit`` makes the binlog's GroupCommit for the loop; it is closed (synced) on the way out.
    ``verbose`` (``-V``) reports each connection's accept and close on stdout.
    """
    loop = asyncio.get_running_loop()
    server = Server(engine, loop, commit(loop) if commit is not None else None, verbose)
    # create_*_server listens on ``sock`` again, with asyncio's backlog of 100 unless told.
    if sock.family == socket.AF_UNIX:
        listener = await loop.create_unix_server(
            server.protocol_factory, sock=sock, backlog=BACKLOG
        )
    else:
        listener = await loop.create_server(server.protocol_factory, sock=sock, backlog=BACKLOG)
    stopped = asyncio.Event()
    _install_signals(loop, engine, stopped.set)
    if ready is not None:
        ready([str(s.getsockname()) for s in listener.sockets])
    try:
        await stopped.wait()
    finally:
        listener.close()
        for proto in list(server.protocols):
            if proto.transport is not None:
                proto.transport.abort()
        if server.commit is not None:  # binlog hook
            server.commit.close()
