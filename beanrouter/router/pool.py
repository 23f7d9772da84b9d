"""Connections to the shards: one control connection and a pool of consumer connections per shard.

``Pool`` owns every socket of a ``Router`` and the jobs held through them, and runs requests on
several shards at once (``gather``/``broadcast``: send everything, then read with ``selectors``).

Invariants: a job this router holds stays on the connection that reserved it (``held``);
``discard`` closes a connection and moves the jobs it held from ``held`` to ``lost`` (the shard
puts them back to ready; the caller's next operation on one of them is told so); a network
failure (``fail``) also counts against the shard's health; a connection is reused only when
``reusable()`` (no reply owed, no reserve unsettled, not closed by the shard), otherwise it is
discarded; at most ``MAX_IDLE_CONSUMERS`` idle consumer connections are kept per shard.

Threads: a ``Pool`` is used by one thread, with one exception: ``close()`` may be called from
another thread or from a signal handler while ``reserve`` runs (between ``begin()`` and ``end()``).
It then only marks the pool closed and wakes the wait (through ``wake_fd()``), and the reserving
thread closes everything in ``end()``: closing a socket another thread waits on would silently
drop it from that thread's epoll set and leave it blocked forever.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..protocol import Reply
from . import ids
from .config import ClusterConfig, ShardConfig
from .connection import ConnectFailed, Connection, ConnectionFailure, ReplyLost, SendFailed
from .errors import JobIdError, RouterError, ShardUnavailable
from .health import Health

__all__ = ["MAX_IDLE_CONSUMERS", "Held", "Pool", "Request", "Result", "Shard"]

MAX_IDLE_CONSUMERS = 2
"""Idle consumer connections kept per shard."""
MAX_LOST = 10_000
"""Lost reservations remembered (the oldest are forgotten first)."""


class Shard:
    """One shard: its configuration, health and connections."""

    __slots__ = ("config", "consumers", "ctl", "health", "id", "id_base", "name")

    def __init__(self, config: ShardConfig, health: Health) -> None:
        self.config = config
        self.name = config.name
        self.id = config.id
        self.id_base = ids.encode(config.id, 0)
        self.health = health
        self.ctl: Connection | None = None
        self.consumers: list[Connection] = []


@dataclass(slots=True)
class Held:
    """A job this router holds reserved."""

    conn: Connection
    shard: Shard
    deadline: float
    priority: int
    ttr: int
    tube: str


Request = tuple[Shard, Connection, bytes, int]
"""(shard, connection, bytes to send, number of replies they produce)."""
Result = list[Reply] | ConnectionFailure


class Pool:
    """The shards of one router and their connections.

    Args:
        config: the cluster.
        connect_timeout: seconds to wait for a TCP connection.
        timeout: seconds to wait for a reply.
        clock: monotonic clock.
        rng: random source for probe jitter.
    """

    def __init__(
        self,
        config: ClusterConfig,
        connect_timeout: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.clock = clock
        self.shards: dict[str, Shard] = {}
        self.by_id: dict[int, Shard] = {}
        self.held: dict[int, Held] = {}
        self.lost: dict[int, str] = {}
        """Jobs that were held on a connection that has since been closed, by global id: the
        shard put them back to ready (value: the shard's name)."""
        self.closed = False
        # Reentrant: close() may run in a signal handler that interrupted begin() or end().
        self._lock = threading.RLock()
        self._busy = False
        # A socket pair rather than a pipe: sockets close themselves when a Router that was
        # never closed is collected.
        self._wake: tuple[socket.socket, socket.socket] | None = None
        for sc in config.servers:
            health = Health(
                failure_limit=config.server_failure_limit,
                retry=config.server_retry_timeout,
                retry_max=config.server_retry_timeout_max,
                jitter=config.server_retry_jitter,
                clock=clock,
                rng=rng,
            )
            shard = Shard(sc, health)
            self.shards[sc.name] = shard
            self.by_id[sc.id] = shard

    def close(self) -> None:
        """Close every connection: each shard puts the jobs held through them back to ready.

        Safe to call from another thread or a signal handler while ``reserve`` runs: that
        ``reserve`` is woken, raises ``RouterError`` and closes everything as it returns.
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
        for shard in self.shards.values():
            ctl, shard.ctl = shard.ctl, None
            if ctl is not None:
                ctl.close()
            consumers, shard.consumers = shard.consumers, []
            for conn in consumers:
                conn.close()
        self.held.clear()
        self.lost.clear()
        wake, self._wake = self._wake, None
        if wake is not None:
            for sock in wake:
                sock.close()

    def begin(self) -> None:
        """A ``reserve`` starts (``close()`` from elsewhere will now leave closing to ``end()``).

        Raises:
            RouterError: the pool is closed.
        """
        with self._lock:
            if self.closed:
                raise RouterError("the router is closed")
            self._busy = True

    def end(self) -> None:
        """The ``reserve`` is over: close everything if ``close()`` was called meanwhile."""
        with self._lock:
            self._busy = False
            closed = self.closed
        if closed:
            self._close_all()

    def wake_fd(self) -> socket.socket:
        """A socket that becomes readable when ``close()`` is called during a ``reserve``."""
        with self._lock:
            if self._wake is None:
                pair = socket.socketpair()
                for sock in pair:
                    sock.setblocking(False)
                self._wake = pair
            return self._wake[0]

    def check_open(self, what: str) -> None:
        """Raises ``RouterError`` if ``close()`` was called."""
        if self.closed:
            raise RouterError(f"{what}: the router was closed")

    def abandon(self) -> None:
        """Close every connection left in an unknown state by an exception that escaped
        mid-request (a reply owed, or a reserve whose job is not settled): the shard puts back
        whatever such a connection reserved."""
        if self.closed:
            return  # end() closes everything
        for shard in self.shards.values():
            conns = [shard.ctl] if shard.ctl is not None else []
            for conn in conns + list(shard.consumers):
                if conn.pending or conn.reserving:
                    self.discard(shard, conn)

    def shard_of(self, job_id: int) -> tuple[Shard, int]:
        shard_id, local = ids.decode(job_id)
        shard = self.by_id.get(shard_id)
        if shard is None:
            raise JobIdError(f"job id {job_id} names shard id {shard_id}, not in this cluster")
        return shard, local

    def open(self, shard: Shard) -> Connection:
        """A new connection to ``shard``.

        Raises:
            ConnectFailed: (counted against the shard's health).
            RouterError: the pool is closed (no connection is opened after ``close()``).
        """
        self.check_open("connect")
        cfg = shard.config
        try:
            return Connection.open(
                shard.name, cfg.host, cfg.port, self.connect_timeout, self.timeout
            )
        except ConnectFailed as exc:
            shard.health.failure(str(exc))
            raise

    def ctl(self, shard: Shard) -> Connection:
        conn = shard.ctl
        if conn is not None:
            if conn.reusable():
                return conn
            self.discard(shard, conn)
        conn = self.open(shard)
        shard.ctl = conn
        return conn

    def consumer(self, shard: Shard, idle_only: bool) -> Connection:
        """A consumer connection of ``shard`` (one holding no job when ``idle_only``)."""
        for conn in list(shard.consumers):
            if not idle_only or conn.held == 0:
                if conn.reusable():
                    return conn
                self.discard(shard, conn)  # jobs it held are back to ready: they are lost
        conn = self.open(shard)
        shard.consumers.append(conn)
        return conn

    def discard(self, shard: Shard, conn: Connection) -> None:
        """Close ``conn`` and forget it and the jobs it held (the shard releases them)."""
        conn.close()
        if shard.ctl is conn:
            shard.ctl = None
        if conn in shard.consumers:
            shard.consumers.remove(conn)
        if conn.held:
            for job_id in [j for j, h in self.held.items() if h.conn is conn]:
                del self.held[job_id]
                self.lost[job_id] = shard.name
            conn.held = 0
            while len(self.lost) > MAX_LOST:
                del self.lost[next(iter(self.lost))]

    def fail(self, shard: Shard, conn: Connection, exc: BaseException) -> None:
        """A network failure on ``conn``: close it and count a failure of the shard."""
        self.discard(shard, conn)
        shard.health.failure(str(exc))

    def trim(self, shard: Shard) -> None:
        idle = [c for c in shard.consumers if c.held == 0]
        for conn in idle[MAX_IDLE_CONSUMERS:]:
            self.discard(shard, conn)

    def unhold(self, job_id: int) -> None:
        held = self.held.pop(job_id, None)
        if held is not None:
            held.conn.held -= 1
            if held.conn.held == 0 and held.conn is not held.shard.ctl:
                self.trim(held.shard)

    def gather(self, requests: Sequence[Request]) -> list[Result]:
        """Send each request on its connection, then read all replies concurrently."""
        results: list[Result | None] = [None] * len(requests)
        for i, (_, conn, data, count) in enumerate(requests):
            if count == 0:
                results[i] = []
                continue
            try:
                conn.send(data, count)
            except SendFailed as exc:
                results[i] = exc
        live = [i for i in range(len(requests)) if results[i] is None]
        deadline = time.monotonic() + self.timeout
        if len(live) == 1:
            i = live[0]
            conn, count = requests[i][1], requests[i][3]
            try:
                results[i] = [conn.read(deadline) for _ in range(count)]
            except ReplyLost as exc:
                results[i] = exc
        elif live:
            got: dict[int, list[Reply]] = {i: [] for i in live}
            with selectors.DefaultSelector() as sel:
                for i in live:
                    sel.register(requests[i][1].sock, selectors.EVENT_READ, i)
                while got:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        for i in got:
                            requests[i][1].close()
                            results[i] = ReplyLost("no reply in time", timed_out=True)
                        break
                    for key, _ in sel.select(min(remaining, 3600.0)):  # epoll's limit: ~24 days
                        i = key.data
                        conn, count = requests[i][1], requests[i][3]
                        replies = got[i]
                        try:
                            conn.pump()
                            while len(replies) < count:
                                reply = conn.next_reply()
                                if reply is None:
                                    break
                                replies.append(reply)
                        except ReplyLost as exc:
                            results[i] = exc
                        else:
                            if len(replies) < count:
                                continue
                            results[i] = replies
                        sel.unregister(key.fileobj)
                        del got[i]
        return [r if r is not None else ReplyLost("lost") for r in results]

    def broadcast(
        self, shards: Iterable[Shard], data: Callable[[Connection], tuple[bytes, int]]
    ) -> list[tuple[Shard, list[Reply] | None, str]]:
        """Send a request to the control connection of every available shard.

        Returns ``(shard, replies or None, reason)``; failures are recorded and skipped.
        """
        now = self.clock()
        requests: list[Request] = []
        out: list[tuple[Shard, list[Reply] | None, str]] = []
        for shard in shards:
            if not shard.health.available(now):
                out.append((shard, None, "down: " + shard.health.last_error))
                continue
            try:
                conn = self.ctl(shard)
            except ConnectFailed as exc:
                out.append((shard, None, str(exc)))
                continue
            payload, count = data(conn)
            requests.append((shard, conn, payload, count))
        for (shard, conn, _, _), result in zip(requests, self.gather(requests), strict=True):
            if isinstance(result, ConnectionFailure):
                self.fail(shard, conn, result)
                out.append((shard, None, str(result)))
            else:
                shard.health.success()
                out.append((shard, result, ""))
        return out

    def ctl_request(self, shard: Shard, data: bytes, count: int = 1) -> list[Reply]:
        """One request on a shard's control connection.

        Raises:
            ShardUnavailable: the shard could not be reached or did not answer.
        """
        if not shard.health.available(self.clock()):
            raise ShardUnavailable(
                f"shard {shard.name} is down", ((shard.name, shard.health.last_error),)
            )
        try:
            conn = self.ctl(shard)
            replies = conn.request(data, count)
        except ConnectFailed as exc:
            raise ShardUnavailable(
                f"shard {shard.name} unreachable", ((shard.name, str(exc)),)
            ) from exc
        except (SendFailed, ReplyLost) as exc:
            self.fail(shard, conn, exc)
            raise ShardUnavailable(f"shard {shard.name} failed", ((shard.name, str(exc)),)) from exc
        shard.health.success()
        return replies
