"""Connections to the shards: one control connection and a pool of consumer connections per shard.

``Pool`` owns every socket of a ``Router`` and the jobs held through them, and runs requests on
several shards at once (``gather``/``broadcast``: send everything, then read with ``selectors``).

Invariants: a job this router holds stays on the connection that reserved it (``held``);
``discard`` closes a connection and forgets the jobs it held (the shard puts them back to ready);
a network failure (``fail``) also counts against the shard's health; at most
``MAX_IDLE_CONSUMERS`` idle consumer connections are kept per shard.
"""

from __future__ import annotations

import random
import selectors
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..protocol import Reply
from . import ids
from .config import ClusterConfig, ShardConfig
from .connection import ConnectFailed, Connection, ConnectionFailure, ReplyLost, SendFailed
from .errors import JobIdError, ShardUnavailable
from .health import Health

__all__ = ["MAX_IDLE_CONSUMERS", "Held", "Pool", "Request", "Result", "Shard"]

MAX_IDLE_CONSUMERS = 2
"""Idle consumer connections kept per shard."""


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
        """Close every connection: each shard puts the jobs held through them back to ready."""
        for shard in self.shards.values():
            if shard.ctl is not None:
                shard.ctl.close()
                shard.ctl = None
            for conn in shard.consumers:
                conn.close()
            shard.consumers.clear()
        self.held.clear()

    def shard_of(self, job_id: int) -> tuple[Shard, int]:
        shard_id, local = ids.decode(job_id)
        shard = self.by_id.get(shard_id)
        if shard is None:
            raise JobIdError(f"job id {job_id} names shard id {shard_id}, not in this cluster")
        return shard, local

    def open(self, shard: Shard) -> Connection:
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
            if not conn.stale():
                return conn
            self.discard(shard, conn)
        conn = self.open(shard)
        shard.ctl = conn
        return conn

    def consumer(self, shard: Shard, idle_only: bool) -> Connection:
        """A consumer connection of ``shard`` (one holding no job when ``idle_only``)."""
        for conn in shard.consumers:
            if not idle_only or conn.held == 0:
                if conn.held == 0 and conn.stale():
                    self.discard(shard, conn)
                    return self.consumer(shard, idle_only)
                return conn
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
            conn.held = 0

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
                conn.send(data)
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
                    for key, _ in sel.select(remaining):
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
