"""The proxy's asyncio frame: a listening socket, one task per client, replies with backpressure.

Per connection, ``ClientConnection`` feeds received bytes to the project's ``CommandReader`` (the
same codec and the same handling of ``Rejected``, ``PutStarted``, ``NEED_DATA`` and ``CLOSED`` as
the bundled server's ``app.py``) and one task runs the parsed commands in order, one at a time,
through the connection's ``ClientSession`` (``seam.py``). Everything about where a command goes
is the session's business; the frame only counts (``stats.py``), answers rejected input with the
reader's own reply bytes, and handles ``quit``.

Fast path: while the task waits for input, the protocol callback itself runs what arrives when
the session can start it without a task (``ClientSession.start_batch``: the routing core's run is
written to its shard link at once, and the shard's replies answer the client from that link's own
callback, ``ProxyDriver.start``). A put, a delete or a reserve that finds a job then costs no task
wake-up and no future. Whatever the session cannot start that way (``quit``, rejected input, a
wait after a first look that timed out, EOF, a paused writer, commands the core plans no run for)
is handed to the task in order (``_pushback``, ``_pending``, ``_probed``), and the task runs
nothing else while such a batch is out (``_fast``).

Output: replies produced while more input is already parsed are joined and written together; the
batch is written before the task waits for input, before a reserve (which may block), and at
``BATCH_LIMIT`` bytes. While the transport's write buffer is above its high-water mark no further
command runs, and reading stops once ``INPUT_HIGH_WATER`` (plus one job body) of unparsed input is
buffered, so a client that never reads its replies is paused: per client the proxy holds at most
about OUTPUT_HIGH_WATER + the replies of one batch of output (at most ``PIPELINE_LIMIT`` short
replies, and reserves whose job bodies fit ``backend.RUN_REPLY_BUDGET``, 1 MiB; for a streamed
run, whose shard link is not read while the writer is paused, ``pause_replies``, one receive from
that link and one job body) and INPUT_HIGH_WATER + max job size + one receive of input. While a
batch is out, what arrives may join it (``_try_extend``, ``extend_batch``).

EOF: commands received before it still run and are answered (a half-closed client reads its
replies, as with beanstalkd); a reserve blocked when EOF arrives is cancelled and answered
``TIMED_OUT``, as beanstalkd answers a half-closed waiting client, and a reserve issued after EOF
runs as ``reserve-with-timeout 0`` (beanstalkd: a ready job, else TIMED_OUT at once). To tell
a reserve that waits from one whose job is on its way from a shard, a blocking reserve first runs
as ``reserve-with-timeout 0``, which EOF does not cancel: a job ready when the reserve arrived is
delivered, as beanstalkd delivers it; only the wait that follows (one more shard command) is
cancelled by EOF. Crossing the gap between the two adds its few milliseconds to the timeout.
Bytes of a put's body that never came: the job id its line used up is burned (``burn_id``).
``quit``, EOF and a vanished client close the session at once (it gives back the reservations);
a cancelled reserve's task is always finished before ``close`` runs.

Signals (``install_signals``): SIGTERM/SIGINT stop gracefully — stop accepting, let each
connection finish the command it is running and write its replies, cancel blocked reserves (one
waiting at its shard in a streamed batch is ended by a mirrored half-close: TIMED_OUT), close
every session, wait at most ``grace`` seconds for replies to drain, then abort what is left and
close the backend. SIGUSR1 sets ``ProxyStats.draining`` (the core answers puts DRAINING). SIGHUP
re-reads the configuration file with ``load_config``: a bad file is logged and the running
configuration kept; a good one goes to ``Backend.reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from .. import protocol as p
from ..core.config import ClusterConfig
from ..core.errors import ConfigError
from ..protocol import CLOSED, NEED_DATA, CommandReader
from ..router.config import load_config
from .stats import ClientCounters, ProxyStats

if TYPE_CHECKING:  # seam's protocols take ~2.5 ms to make: the first reply waits for imports
    from .seam import Backend, ClientSession

__all__ = [
    "BACKLOG",
    "BATCH_LIMIT",
    "INPUT_HIGH_WATER",
    "OUTPUT_HIGH_WATER",
    "PIPELINE_LIMIT",
    "ClientConnection",
    "ProxyServer",
]

log = logging.getLogger("beanrouter.proxy")

BACKLOG: Final = 1024
"""Listen backlog (``create_server(sock=...)`` would otherwise re-listen with 100)."""
INPUT_HIGH_WATER: Final = 256 * 1024
"""Unparsed input (beyond a job body being collected) above which a client is not read."""
OUTPUT_HIGH_WATER: Final = 64 * 1024
"""Transport write buffer above which a client's next command waits."""
BATCH_LIMIT: Final = 64 * 1024
"""Replies joined into one write at most (more is written at once)."""
PIPELINE_LIMIT: Final = 256
"""Parsed commands handed to the session at once at most (``execute_batch``)."""
DEFAULT_GRACE: Final = 10.0
"""Seconds a graceful stop waits for connections to finish before aborting them."""

_TIMED_OUT: Final = p.TIMED_OUT.encode()
_NO_WAIT: Final = p.ReserveWithTimeout(0)
_INTERNAL_ERROR: Final = p.INTERNAL_ERROR.encode()


class ClientConnection(asyncio.Protocol):
    """One client connection: the protocol callbacks feed the reader; ``_run`` does the rest."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.reader = CommandReader(server.stats.max_job_size)
        self.transport: asyncio.Transport | None = None
        self.session: ClientSession | None = None
        self.counters: ClientCounters | None = None
        self.task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._blocked: asyncio.Task[bytes] | None = None
        self._out: list[bytes] = []
        """Replies not written yet (joined into one write)."""
        self._size = 0
        self._read_paused = False
        self._write_paused = False
        self._eof = False
        self._lost = False
        self._stop = False
        self._parked = False
        """The task waits for input (the callbacks may run commands: ``_try_fast``)."""
        self._fast = False
        """A batch ``_try_fast`` began is running (the task waits for it)."""
        self._trying = False
        self._pushback: p.Event | None = None
        """An event taken from the reader and not handled yet (the task's, first)."""
        self._pending: list[p.Command] = []
        """Parsed commands not run yet (the task's, before any other input)."""
        self._probed: p.Command | None = None
        """A blocking reserve whose first look timed out: its wait is the task's, next."""
        self._out_batch: list[p.Command] = []
        """The batch ``_try_fast`` began, while it is out."""
        self._answered = 0
        """How many of its commands have their replies."""
        self._taken = 0
        """How many of its commands the session took (``_counted``)."""
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        """Done at ``connection_lost`` (the socket is really closed)."""

    # -- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        server.connections.add(self)
        if server.stopping:  # accepted just as we stopped accepting
            self.transport.abort()
            return
        self.counters = server.stats.connect()
        try:
            self.session = server.backend.session(server.stats)
        except Exception:
            log.exception("the backend could not open a session; closing the connection")
            self.counters.disconnect()
            self.counters = None
            self.transport.abort()
            return
        self.task = asyncio.get_running_loop().create_task(self._run())
        server.tasks.add(self.task)
        self.task.add_done_callback(server.tasks.discard)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.receive_data(data)
        if reader.buffered > INPUT_HIGH_WATER + reader.max_job_size:
            self._pause_reading()
        if self._parked:
            if not self._fast:
                self._try_fast()
            else:
                self._try_extend()
        else:
            self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self.reader.receive_data(b"")
        if self._fast and self.session is not None:
            self.session.half_close()  # the shard answers a waiting reserve TIMED_OUT
        if self._blocked is not None:
            self._blocked.cancel()  # answered TIMED_OUT by _run, as beanstalkd does
        self._wake()
        return True  # keep the transport open: pending replies still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        if not self._closed.done():
            self._closed.set_result(None)
        if self._fast and self.session is not None:
            self.session.abort()  # its links close: the shards give back what it reserved
        if self._blocked is not None:
            self._blocked.cancel()
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._fast and self.session is not None:
            self.session.pause_replies()  # (a streamed run's shard link is not read meanwhile)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.session is not None:
            self.session.resume_replies()
        self._wake()
        if self._fast and self._parked:
            self._try_extend()

    # -- control from the server ------------------------------------------------------------------

    def stop(self) -> None:
        """Graceful stop: finish the running command, write what is pending, close."""
        self._stop = True
        if self._fast and self.session is not None:
            self.session.half_close()  # a waiting reserve ends (TIMED_OUT), the rest is answered
        if self._blocked is not None:
            self._blocked.cancel()
        self._wake()

    async def wait_closed(self) -> None:
        await self._closed

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- the connection's task ------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._lost:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()

    def _flush(self) -> None:
        out = self._out
        if out:
            if not self._lost and self.transport is not None:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
        self._size = 0

    def _reply(self, reply: bytes) -> None:
        self._out.append(reply)
        self._size += len(reply)
        if self._size >= BATCH_LIMIT:
            self._flush()

    async def _run(self) -> None:
        session = self.session
        counters = self.counters
        assert session is not None and counters is not None
        reader = self.reader
        try:
            while not (self._stop or self._lost):
                if self._fast:  # a batch the callbacks began: it finishes first
                    await self._wait()
                    continue
                if self._probed is not None:
                    cmd, self._probed = self._probed, None
                    self._flush()
                    reply = await self._execute_blocking(session, cmd, probed=True)
                    if not self._answer(counters, cmd, reply):
                        break
                    continue
                if self._pending:
                    batch, self._pending = self._pending, []
                    if not await self._commands(session, counters, batch):
                        break
                    continue
                if self._pushback is None:
                    event = reader.next_event()
                else:
                    event, self._pushback = self._pushback, None
                if event is NEED_DATA:
                    self._flush()
                    self._resume_reading()
                    self._parked = True
                    try:
                        await self._wait()
                    finally:
                        self._parked = False
                    continue
                if event is CLOSED:
                    break
                if isinstance(event, p.Command):
                    if type(event) is p.Quit:
                        counters.command(event)
                        break
                    if self._write_paused:
                        self._flush()
                        while self._write_paused and not (self._stop or self._lost):
                            await self._wait()
                        if self._stop or self._lost:
                            break
                    batch = self._batch(event)
                    if not await self._commands(session, counters, batch):
                        break
                    if self._read_paused and reader.buffered <= INPUT_HIGH_WATER:
                        self._resume_reading()
                elif isinstance(event, p.PutStarted):
                    counters.put_started(event)
                else:
                    assert isinstance(event, p.Rejected)
                    burned = counters.rejected(event)
                    self._reply(event.reply.encode())
                    if burned:
                        await self._burn_id(session)
            if counters.abandoned():  # gone in the middle of a put's body
                await self._burn_id(session)
        finally:
            while self._fast:  # (it ends: its shard replies, fails or times out)
                await self._wait()
            self._flush()
            counters.disconnect()
            self.counters = None
            try:
                await session.close()
            except Exception:
                log.exception("closing a client session failed")
            if self.transport is not None and not self._lost:
                self.transport.close()  # after the pending replies are written

    def _batch(self, event: p.Command) -> list[p.Command]:
        """``event`` and what the client pipelined after it, for the session to run together
        (as much of it as it can): up to ``quit`` or anything that is not a command (pushed
        back)."""
        batch = [event]
        if self.reader.buffered:
            while len(batch) < PIPELINE_LIMIT:
                more = self._read_command(None)
                if more is None:
                    break
                batch.append(more)
        return batch

    def _read_command(self, counters: ClientCounters | None) -> p.Command | None:
        """The next command the reader has for a batch, or None: nothing more yet (NEED_DATA),
        or what came cannot join one (``quit``, rejected input, EOF: kept in ``_pushback``,
        handled next). A put whose body is still on its way is counted now with ``counters``
        (none: it is kept too, so that it is counted after the commands before it, a ``stats``
        among them)."""
        while True:
            event = self.reader.next_event()
            if event is NEED_DATA:
                return None
            if type(event) is p.PutStarted and counters is not None:
                assert isinstance(event, p.PutStarted)
                counters.put_started(event)
                continue
            if not isinstance(event, p.Command) or type(event) is p.Quit:
                self._pushback = event
                return None
            return event

    def _try_fast(self) -> None:
        """Run what the client sent from this callback while the task is parked: each batch the
        session can start without a task (``start_batch``: its replies then come from the
        shard links' callbacks, and ``_fast_done`` goes on). Anything else (quit, rejected
        input, a put body still on its way is fine, a wait, EOF, a paused writer, a batch the
        session cannot start) is left to the task, in order, and wakes it."""
        if self._trying or self._fast or not self._parked:
            return
        session = self.session
        counters = self.counters
        if session is None or counters is None:
            return
        self._trying = True
        try:
            while not self._fast:
                if (
                    self._stop
                    or self._lost
                    or self._eof
                    or self._write_paused
                    or self._probed is not None
                ):
                    self._wake()
                    return
                if self._pending:  # what the last batch did not take, first
                    batch, self._pending = self._pending, []
                elif self._pushback is not None:
                    self._wake()
                    return
                else:
                    event = self._read_command(counters)
                    if event is None:
                        if self._pushback is not None:
                            continue  # (the task's, next)
                        self._flush()
                        self._resume_reading()
                        return
                    batch = self._batch(event)
                self._fast = True
                self._out_batch = batch
                self._answered = self._taken = 0
                try:
                    started = session.start_batch(
                        batch, self._counted, self._fast_answer, self._fast_done, self._flush
                    )
                except Exception:
                    log.exception("the backend failed to start %r; the task runs it", batch[0])
                    started = False
                if not started:
                    self._fast = False
                    self._out_batch = []
                    self._pending = batch
                    self._wake()  # the task runs it
                    return
        finally:
            self._trying = False

    def _counted(self, cmd: p.Command) -> None:
        """The session took ``cmd`` of the batch out."""
        self._taken += 1
        assert self.counters is not None
        self.counters.command(cmd)

    def _try_extend(self) -> None:
        """While a batch ``_try_fast`` began is out, the commands after it (those of the batch
        the session did not take, then ``_pending``, then what the client sent since) join it
        when the session lets them (``extend_batch``: a streamed run, whose shard keeps the
        order); the others wait for the batch's end, in order. Not while the client does not
        read its replies, or the batch's first look of a blocking reserve timed out."""
        session = self.session
        counters = self.counters
        if (
            session is None
            or counters is None
            or self._trying
            or self._stop
            or self._lost
            or self._eof
            or self._write_paused
            or self._probed is not None
        ):
            return
        queue = self._out_batch[self._taken :]
        del self._out_batch[self._taken :]
        if self._pending:
            queue += self._pending
            self._pending = []
        # More is parsed only once every command parsed before has joined (so what waits
        # parsed is at most one input buffer's worth), and a put's line is counted at once only
        # when nothing waits before it.
        if not queue and self._pushback is None:  # (a pushback is the task's, after the batch)
            more = self._read_command(counters)
            if more is not None:
                queue = self._batch(more)
        if queue:
            try:
                session.extend_batch(queue, self._counted)
            except Exception:
                log.exception("the backend failed to extend a batch with %r", queue[0])
            self._out_batch += queue  # (those not taken come back at the end: ``_fast_done``)
        waiting = self._taken < len(self._out_batch)
        if self._read_paused and not waiting and self.reader.buffered <= INPUT_HIGH_WATER:
            self._resume_reading()

    def _fast_answer(self, reply: bytes | None) -> None:
        """The reply to the next command of the batch out (None: that blocking reserve's first
        look timed out; its wait is the task's, next)."""
        cmd = self._out_batch[self._answered]
        self._answered += 1
        counters = self.counters
        if reply is None and not self._eof:
            self._probed = cmd
        elif counters is not None:
            self._answer(counters, cmd, _TIMED_OUT if reply is None else reply)

    def _fast_done(self, aborted: bool) -> None:
        """The batch ``_try_fast`` began has ended: what it did not take goes to the task (unless
        it was aborted: the connection is ending), then go on."""
        self._fast = False
        batch, self._out_batch = self._out_batch, []
        if not aborted and self._answered < len(batch):
            self._pending = batch[self._answered :]  # not in that run: offered again first
        if self._read_paused and self.reader.buffered <= INPUT_HIGH_WATER:
            self._resume_reading()
        if self._trying:
            return  # (ended within ``start_batch``: the loop of ``_try_fast`` goes on)
        if self._parked:
            self._try_fast()
        else:
            self._wake()

    async def _commands(
        self, session: ClientSession, counters: ClientCounters, batch: list[p.Command]
    ) -> bool:
        """Run and answer ``batch`` in order. False: the connection is to end (a reserve was
        cancelled by a lost client or a stop)."""
        while batch:
            if len(batch) == 1 and p.may_wait(batch[0]):
                cmd = batch[0]
                counters.command(cmd)
                self._flush()
                return self._answer(counters, cmd, await self._execute_blocking(session, cmd))
            replies = await self._execute_batch(session, counters, batch)
            for cmd, reply in zip(batch, replies, strict=False):
                answer: bytes | None = reply
                # A blocking reserve ran as reserve-with-timeout 0: nothing at once, so now the
                # wait. (A client's own reserve-with-timeout 0 ran as itself: that was its answer.)
                if reply == _TIMED_OUT and p.may_wait(cmd) and not self._eof:
                    self._flush()
                    answer = await self._execute_blocking(session, cmd, probed=True)
                if not self._answer(counters, cmd, answer):
                    return False
            del batch[: len(replies)]
            if batch and (self._stop or self._lost):
                return False
        return True

    def _answer(self, counters: ClientCounters, cmd: p.Command, reply: bytes | None) -> bool:
        counters.replied(cmd, reply)
        if reply is None:  # a reserve cancelled by EOF, a lost client or a stop
            if self._lost or self._stop or not self._eof:
                return False
            reply = _TIMED_OUT
        self._reply(reply)
        return True

    async def _execute_batch(
        self, session: ClientSession, counters: ClientCounters, batch: list[p.Command]
    ) -> list[bytes]:
        taken = 0

        def counted(cmd: p.Command) -> None:
            nonlocal taken
            taken += 1
            counters.command(cmd)

        try:
            replies = await session.execute_batch(batch, counted)
        except Exception:
            log.exception("the backend failed on %r; answering INTERNAL_ERROR", batch[0])
            replies = []
        if len(replies) != taken or not replies:
            if replies:
                log.error("the backend took %d commands and answered %d", taken, len(replies))
            if not taken:
                counters.command(batch[0])
            n = max(1, taken)
            replies = [*replies, *[_INTERNAL_ERROR] * n][:n]
        return replies

    async def _execute(self, session: ClientSession, cmd: p.Command) -> bytes:
        try:
            return await session.execute(cmd)
        except Exception:
            log.exception("the backend failed on %r; answering INTERNAL_ERROR", cmd)
            return _INTERNAL_ERROR

    async def _execute_blocking(
        self, session: ClientSession, cmd: p.Command, probed: bool = False
    ) -> bytes | None:
        """Run a reserve in its own task, so EOF, a lost client or a stop can cancel it (and
        only it). Returns None when it was cancelled; its task has finished by then.
        ``probed``: its ``reserve-with-timeout 0`` ran already (in a batch) and timed out."""
        if probed:
            if self._eof or self._lost or self._stop:
                return None
        elif self._eof:  # half-closed: a job if one is ready, else TIMED_OUT at once
            cmd = _NO_WAIT
        elif cmd != _NO_WAIT:
            # What is there at once is taken without waiting, beyond the reach of EOF, so a
            # reserve sent just before a half-close gets the job that was ready, as with
            # beanstalkd; only the wait that follows is cancelled by EOF (TIMED_OUT).
            reply = await self._execute(session, _NO_WAIT)
            if reply != _TIMED_OUT:
                return reply
            if self._eof or self._lost or self._stop:
                return None
        task = self._loop.create_task(session.execute(cmd))
        self._blocked = task
        if self._lost or self._stop:
            task.cancel()
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:  # our own task is being cancelled (hard stop)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait((task,))
            raise
        finally:
            self._blocked = None
        if task.cancelled():
            return None
        exc = task.exception()
        if exc is not None:
            log.error("the backend failed on %r; answering INTERNAL_ERROR", cmd, exc_info=exc)
            return _INTERNAL_ERROR
        return task.result()

    async def _burn_id(self, session: ClientSession) -> None:
        try:
            await session.burn_id()
        except Exception:
            log.exception("the backend failed to burn a job id")


class ProxyServer:
    """The proxy of one process: listeners, connections, signals, reload, graceful stop.

    Args:
        backend: the routing core's backend for this process.
        stats: the process's counters (its ``max_job_size`` sizes the command reader).
        config: the running configuration (kept when a reload fails).
        config_path: the file SIGHUP re-reads; None: SIGHUP only logs that there is none.
        grace: seconds a graceful stop waits for connections.
    """

    def __init__(
        self,
        backend: Backend,
        stats: ProxyStats,
        *,
        config: ClusterConfig | None = None,
        config_path: str | None = None,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.backend = backend
        self.stats = stats
        self.config = config
        self.config_path = config_path
        self.grace = grace
        self.connections: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.listeners: list[asyncio.Server] = []
        self.stopping = False
        self.stopped = asyncio.Event()
        """Set when a stop was asked for (SIGTERM, SIGINT or ``request_stop``)."""
        self._reload_lock = asyncio.Lock()
        self._signals: list[int] = []
        self._background: set[asyncio.Task[object]] = set()
        registry = stats.metrics
        up = registry.gauge("shard_up", "1 when the proxy sees the shard up, else 0.", ["shard"])
        reloads = registry.counter(
            "config_reloads_total", "Configuration reloads, by result.", ["result"]
        )
        self._reloads = reloads

        def collect_shards() -> None:
            up.clear()
            for name, is_up in self.backend.shard_health():
                up.set(1 if is_up else 0, (name,))

        registry.add_collector(collect_shards)

    async def start(self, sock: socket.socket) -> None:
        """Accept clients on the listening socket ``sock`` (TCP or UNIX)."""
        loop = asyncio.get_running_loop()
        if sock.family == socket.AF_UNIX:
            listener = await loop.create_unix_server(self._factory, sock=sock, backlog=BACKLOG)
        else:
            listener = await loop.create_server(self._factory, sock=sock, backlog=BACKLOG)
        self.listeners.append(listener)

    def _factory(self) -> ClientConnection:
        return ClientConnection(self)

    # -- signals ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        self.stopped.set()

    def drain(self) -> None:
        """SIGUSR1: refuse puts from now on (DRAINING), as beanstalkd does."""
        if not self.stats.draining:
            log.info("drain mode: puts answer DRAINING from now on")
        self.stats.draining = True

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGUSR1 drains, SIGHUP reloads (removed by ``remove_signals``)."""
        loop = asyncio.get_running_loop()
        handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.request_stop,
            signal.SIGINT: self.request_stop,
            signal.SIGUSR1: self.drain,
            signal.SIGHUP: self.request_reload,
        }
        for signum, handler in handlers.items():
            try:
                loop.add_signal_handler(signum, handler)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                continue
            self._signals.append(signum)

    def remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._signals:
            loop.remove_signal_handler(signum)
        self._signals.clear()

    def request_reload(self) -> None:
        """SIGHUP: reload in the background (reloads run one at a time)."""
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Re-read ``config_path``; a valid configuration goes to the backend. Returns success."""
        if self.config_path is None:
            log.warning("SIGHUP: there is no configuration file to reload")
            return False
        async with self._reload_lock:
            try:
                config = load_config(self.config_path)  # a small file: read in the loop
            except ConfigError as exc:
                log.error("SIGHUP: %s; keeping the running configuration", exc)
                self._reloads.inc(("rejected",))
                return False
            try:
                await self.backend.reload(config)
            except Exception:
                log.exception("SIGHUP: the backend could not switch; keeping the running one")
                self._reloads.inc(("failed",))
                return False
            self.config = config
            self._reloads.inc(("ok",))
            log.info("SIGHUP: reloaded %s (%d shards)", self.config_path, len(config.servers))
            return True

    # -- stopping ---------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Graceful stop (see the module docstring); closes the backend last."""
        self.stopping = True
        for listener in self.listeners:
            listener.close()
        for conn in list(self.connections):
            conn.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.grace)
        for task in list(self.tasks):  # past the grace period: sessions still close in finally
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=1.0)
        pending = [c.wait_closed() for c in list(self.connections)]
        if pending:
            await asyncio.wait(
                [loop.create_task(w) for w in pending], timeout=max(0.0, deadline - loop.time())
            )
        for conn in list(self.connections):
            conn.abort()
        for listener in self.listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), 1.0)
        for job in list(self._background):
            job.cancel()
        try:
            await self.backend.aclose()
        except Exception:
            log.exception("closing the backend failed")
