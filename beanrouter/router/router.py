"""``Router``: a set of independent beanstalkd shards used like one beanstalkd (blocking, sockets).

The public facade. Tubes are placed on shards by the ketama ring (``ring.Placement``); job ids
are global (``ids``); connections and held jobs live in ``pool.Pool``; the watch list and the
cross-shard reserve in ``reserve.Reserver``; every byte on the wire goes through the codec in
``beanrouter.protocol``.

Connections per shard: one *control* connection (puts, ``use``, peeks, stats, kicks, deletes of
jobs this router does not hold) and a pool of *consumer* connections (watch lists, reserves and the
jobs reserved through them). Invariants:

* a job this router holds stays on the connection that reserved it, and delete/release/bury/touch
  of it go there (beanstalkd lets only the reserver act on a reserved job);
* a connection waiting in a blocking reserve holds no job, so a wait is cancelled by closing the
  connection: beanstalkd puts anything it reserved in the race straight back to ready with its
  original priority and no counter changed;
* a connection whose reply state is unknown (timeout, reset, unparsable reply, or an exception
  such as ``KeyboardInterrupt`` escaping between a send and its reply) is closed, never reused;
  the jobs it held go back to ready on the shard, and the next delete/release/bury/touch of one
  of them raises ``ReservationLost`` rather than acting on it from another connection;
* the router holds no job that it has not handed to the caller: jobs reserved on its behalf but not
  chosen are released at once with their original priority.

A ``Router`` is not thread-safe: use one per thread (it is cheap; the ring is shared by value).
The one exception is ``close()``, which may be called from another thread or a signal handler to
end a blocked ``reserve``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .. import protocol as _protocol
from ..protocol import Buried as BuriedReply
from ..protocol import (
    Bury,
    Delete,
    ErrorReply,
    Found,
    Inserted,
    Kick,
    Kicked,
    KickJob,
    ListTubes,
    Ok,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Release,
    Reply,
    StatsJob,
    StatsTube,
    StatValue,
    Touch,
    Use,
    Using,
    Word,
    parse_list,
    parse_mapping,
)
from ..protocol import Stats as StatsCommand
from . import ids
from .config import ClusterConfig, config_from_servers, load_config
from .connection import ConnectFailed, Connection, ReplyLost, SendFailed
from .errors import (
    Buried,
    CommandError,
    ConfigError,
    JobIdError,
    JobTooBig,
    NotFound,
    PutUncertain,
    ReservationLost,
    RouterError,
    ShardUnavailable,
    UnexpectedReply,
    error_for_reply,
    reply_mapping,
)
from .job import DEFAULT_PRIORITY, DEFAULT_TTR, Job
from .merge import merge_stats, merge_stats_tube
from .pool import Pool, Shard
from .reserve import Reserver
from .ring import Placement

__all__ = ["DEFAULT_PRIORITY", "DEFAULT_TTR", "Job", "Router"]


class Router:
    """A cluster of beanstalkd shards with the API of one beanstalkd client (beanstalkc-style).

    Args:
        servers: server lines ``"host:port[:weight] [name] [id=N]"`` or mappings, or a
            ``ClusterConfig``.
        failover: overrides the configuration's ``failover``.
        connect_timeout: overrides the configuration's ``connect_timeout`` (seconds).
        timeout: overrides the configuration's reply ``timeout`` (seconds).
        clock: monotonic clock (for tests).
        rng: random source in [0, 1) for probe jitter (for tests).
    """

    def __init__(
        self,
        servers: Sequence[str | Mapping[str, Any]] | str | ClusterConfig,
        *,
        failover: int | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        config = servers if isinstance(servers, ClusterConfig) else config_from_servers(servers)
        for field, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            # As in the configuration: 0 would mean "wait forever" to the socket layer.
            if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigError(f"must be a number of seconds > 0, got {value!r}", field=field)
        if failover is not None and (
            isinstance(failover, bool) or not isinstance(failover, int) or failover < 0
        ):
            raise ConfigError(f"must be an integer >= 0, got {failover!r}", field="failover")
        self.config = config
        self._clock = clock
        self._placement = Placement(
            [(s.name, s.weight) for s in config.servers],
            failover=config.failover if failover is None else failover,
        )
        self._pool = Pool(
            config,
            connect_timeout=config.connect_timeout if connect_timeout is None else connect_timeout,
            timeout=config.timeout if timeout is None else timeout,
            clock=clock,
            rng=rng,
        )
        self._reserver = Reserver(self._pool, self._placement, clock, self._job)
        self._using = "default"
        self._pref_shards: dict[str, tuple[Shard, ...]] = {}
        self._closed = False

    def _job(self, job_id: int, body: bytes, tube: str, priority: int, reserved: bool) -> Job:
        return Job(self, job_id, body, tube, priority, reserved)

    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> Router:
        """A router for the cluster described by the YAML file at ``path``.

        Raises:
            ConfigError: the file is missing or invalid (with line and field).
        """
        return cls(load_config(path), **overrides)

    def __enter__(self) -> Router:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection: each shard puts the jobs this router held back to ready.

        May be called from another thread or a signal handler to end a ``reserve`` blocked in
        this router: that ``reserve`` raises ``RouterError`` and closes the connections itself
        as it returns (at once when it is waiting; after the reply it is reading otherwise).
        """
        self._closed = True
        self._pool.close()

    @property
    def shards(self) -> tuple[str, ...]:
        """Shard names in configuration order."""
        return tuple(self._pool.shards)

    def preference(self, tube: str) -> tuple[str, ...]:
        """The tube's shards: its ring owner, then the successors it fails over to."""
        return self._placement.preference(tube)

    def shard_for(self, tube: str) -> str:
        """The shard that puts to ``tube`` go to now (the first available in its preference).

        Raises:
            ShardUnavailable: every shard of the tube is marked down.
        """
        Use(tube)  # validates the name
        now = self._clock()
        for name in self._placement.preference(tube):
            if self._pool.shards[name].health.available(now):
                return name
        raise ShardUnavailable(f"no shard of tube {tube!r} is up", self._causes(tube))

    def _causes(self, tube: str) -> tuple[tuple[str, str], ...]:
        return tuple(
            (n, "down: " + (self._pool.shards[n].health.last_error or "failed"))
            for n in self._placement.preference(tube)
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RouterError("the router is closed")

    def _use_bytes(self, conn: Connection, tube: str) -> tuple[bytes, int]:
        """``use tube`` if ``conn`` does not use it already (``conn.used`` updated)."""
        if conn.used == tube:
            return b"", 0
        conn.used = tube
        return Use(tube).encode(), 1

    def _check_using(self, replies: Sequence[Reply], count: int) -> None:
        for reply in replies[:count]:
            if not isinstance(reply, Using):
                raise UnexpectedReply(f"use: unexpected reply {reply!r}")

    def use(self, tube: str) -> str:
        """Use ``tube`` for puts (and peeks and kicks). Returns the tube name."""
        self._check_open()
        Use(tube)  # validates the name
        self._using = tube
        # Make the tube exist where its puts will go, and let go of the previous one elsewhere,
        # so that tubes() lists what one beanstalkd would.
        target = None
        now = self._clock()
        for name in self._placement.preference(tube):
            if self._pool.shards[name].health.available(now):
                target = self._pool.shards[name]
                break
        shards = [
            s
            for s in self._pool.shards.values()
            if s is target or (s.ctl is not None and not s.ctl.closed)
        ]

        def data(conn: Connection) -> tuple[bytes, int]:
            shard = self._pool.shards[conn.shard]
            return self._use_bytes(conn, tube if shard is target else "default")

        for _shard, replies, _ in self._pool.broadcast(shards, data):
            if replies is not None:
                self._check_using(replies, len(replies))
        return tube

    def using(self) -> str:
        """The tube puts go to."""
        return self._using

    def put(
        self,
        body: bytes | str,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
    ) -> int:
        """Put a job into the used tube; returns its global id.

        The job goes to the first available shard of the tube's preference list; a shard that
        refuses the connection (or is draining, or out of memory) costs nothing: the next one
        is tried at once.

        Args:
            body: the job body; ``str`` is encoded as UTF-8.
            priority: 0 (most urgent) .. 2**32-1.
            delay: seconds before the job becomes ready.
            ttr: seconds a worker may hold the job.

        Raises:
            PutUncertain: the put was sent but no reply came: it may or may not be stored.
            ShardUnavailable: no shard of the tube could take it.
            JobTooBig: the body exceeds the shard's max-job-size.
            Buried: the shard stored the job buried (out of memory).
        """
        if self._closed:
            raise RouterError("the router is closed")
        if isinstance(body, str):
            body = body.encode("utf-8")
        command = _protocol.encode_put(priority, delay, ttr, body)
        tube = self._using
        causes: list[tuple[str, str]] = []
        shards = self._pref_shards.get(tube)
        if shards is None:
            if len(self._pref_shards) >= 100_000:
                self._pref_shards.clear()
            shards = self._pref_shards[tube] = tuple(
                self._pool.shards[n] for n in self._placement.preference(tube)
            )
        for shard in shards:
            name = shard.name
            health = shard.health
            if health.failures >= health.failure_limit and self._clock() < health.retry_at:
                causes.append((name, "down: " + health.last_error))
                continue
            conn = shard.ctl
            if conn is None or not conn.reusable():
                try:
                    conn = self._pool.ctl(shard)
                except ConnectFailed as exc:
                    causes.append((name, str(exc)))
                    continue
            if conn.used == tube:
                data, count = command, 1
            else:
                data, count = Use(tube).encode() + command, 2
            try:
                conn.send(data, count)
            except SendFailed as exc:
                self._pool.fail(shard, conn, exc)
                causes.append((name, str(exc)))
                continue
            try:
                if count == 2:
                    deadline = time.monotonic() + self._pool.timeout
                    used = conn.read(deadline)
                    reply = conn.read(deadline)
                    if not isinstance(used, Using):
                        self._pool.discard(shard, conn)
                        raise UnexpectedReply(f"use {tube}: unexpected reply {used!r}")
                    conn.used = tube
                else:
                    reply = conn.read_next()
            except ReplyLost as exc:
                self._pool.fail(shard, conn, exc)
                raise PutUncertain(
                    f"put to tube {tube!r} was sent to shard {name} but its reply was lost"
                    f" ({exc}): the job may or may not be stored",
                    shard=name,
                    tube=tube,
                ) from exc
            if health.failures:
                health.success()
            if type(reply) is Inserted:
                local = reply.id
                if local <= ids.MAX_LOCAL_ID:
                    return shard.id_base | local
                raise JobIdError(
                    f"put to tube {tube!r}: the job WAS stored on shard {name} as id {local},"
                    f" which does not fit {ids.LOCAL_BITS} bits: it has no global id"
                )
            if isinstance(reply, BuriedReply):
                gid = None if reply.id is None else ids.encode(shard.id, reply.id)
                raise Buried(f"put to tube {tube!r}: BURIED on shard {name}", gid)
            if isinstance(reply, ErrorReply) and reply.word in ("DRAINING", "OUT_OF_MEMORY"):
                causes.append((name, reply.word))
                continue
            if isinstance(reply, ErrorReply) and reply.word == "JOB_TOO_BIG":
                raise JobTooBig(f"put to tube {tube!r}: JOB_TOO_BIG on shard {name}")
            raise error_for_reply(reply, f"put to tube {tube!r} on shard {name}")
        raise ShardUnavailable(f"no shard can take a put to tube {tube!r}", tuple(causes))

    def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list; returns the number of watched tubes."""
        self._check_open()
        return self._reserver.watch(tube)

    def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list; returns the number of watched tubes.

        Raises:
            NotIgnored: ``tube`` is the only watched tube.
        """
        self._check_open()
        return self._reserver.ignore(tube)

    def watching(self) -> list[str]:
        """The watched tubes, in the order beanstalkd lists them."""
        return self._reserver.watching()

    def reserve(self, timeout: float | None = None) -> Job | None:
        """Reserve the most urgent ready job of the watched tubes across all shards.

        Waits for one when none is ready (forever when ``timeout`` is None) without polling:
        each shard gets one reserve command per wait.

        Returns:
            The job, or None when ``timeout`` passed.

        Raises:
            DeadlineSoon: no job is ready and a job this router holds is less than a second
                from its TTR deadline (also ends a wait at deadline - 1 s).
            ShardUnavailable: no shard that holds a watched tube can be reached.
        """
        self._check_open()
        return self._reserver.reserve(timeout)

    def reserve_job(self, job_id: int) -> Job:
        """Reserve the job ``job_id`` whatever its state or tube (beanstalkd's ``reserve-job``).

        Raises:
            NotFound: no such job, or it is reserved already.
        """
        self._check_open()
        return self._reserver.reserve_job(job_id)

    def _job_conn(self, job_id: int) -> tuple[Shard, int, Connection | None]:
        self._check_open()
        shard, local = self._pool.shard_of(job_id)
        held = self._pool.held.get(job_id)
        return shard, local, None if held is None else held.conn

    def _job_request(self, job_id: int, data: bytes, what: str, reservation: bool = True) -> Reply:
        """Send a job command where it belongs: to the connection holding the job, else to the
        shard's control connection. ``reservation``: the command acts on this router's
        reservation of the job (delete, release, bury, touch).

        Raises:
            ReservationLost: ``reservation`` and the connection that held the job was closed.
        """
        shard, _, conn = self._job_conn(job_id)
        if conn is not None and not conn.reusable():
            self._pool.discard(shard, conn)  # broken: the shard has put its jobs back to ready
            conn = None
        if conn is None:
            if reservation:
                lost = self._pool.lost.pop(job_id, None)
                if lost is not None:
                    raise ReservationLost(
                        f"{what}: the connection to shard {lost} that held the job was closed;"
                        " the shard put the job back to ready and will deliver it again",
                        lost,
                    )
            return self._pool.ctl_request(shard, data)[0]
        try:
            reply = conn.request(data)[0]
        except (SendFailed, ReplyLost) as exc:
            self._pool.fail(shard, conn, exc)
            raise ShardUnavailable(
                f"{what}: the connection to shard {shard.name} that held the job failed; the job"
                " went back to ready there (unless this command took effect first)",
                ((shard.name, str(exc)),),
            ) from exc
        shard.health.success()
        return reply

    def delete(self, job_id: int) -> None:
        """Delete a job (reserved by this router, or ready, delayed or buried).

        Raises:
            NotFound: no such job, or it is reserved by someone else.
            ReservationLost: this router held the job, and the connection holding it was closed
                (the job is ready again on its shard); it is not deleted.
        """
        _, local = self._pool.shard_of(job_id)
        reply = self._job_request(job_id, Delete(local).encode(), f"delete {job_id}")
        self._pool.unhold(job_id)
        if not (isinstance(reply, Word) and reply.word == "DELETED"):
            raise error_for_reply(reply, f"delete {job_id}")

    def release(self, job_id: int, priority: int | None = None, delay: int = 0) -> None:
        """Release a job this router holds (``priority`` defaults to its priority).

        Raises:
            NotFound: the job is not reserved by this router (``ReservationLost`` when the
                connection that held it was closed).
            Buried: the shard buried it instead (out of memory).
        """
        held = self._pool.held.get(job_id)
        if priority is None:
            priority = held.priority if held is not None else DEFAULT_PRIORITY
        _, local = self._pool.shard_of(job_id)
        reply = self._job_request(
            job_id, Release(local, priority, delay).encode(), f"release {job_id}"
        )
        if isinstance(reply, Word) and reply.word == "RELEASED":
            self._pool.unhold(job_id)
            return
        if isinstance(reply, BuriedReply):
            self._pool.unhold(job_id)
            raise Buried(f"release {job_id}: BURIED", job_id)
        self._pool.unhold(job_id)
        raise error_for_reply(reply, f"release {job_id}")

    def bury(self, job_id: int, priority: int | None = None) -> None:
        """Bury a job this router holds (``priority`` defaults to its priority).

        Raises:
            NotFound: the job is not reserved by this router (``ReservationLost`` when the
                connection that held it was closed).
        """
        held = self._pool.held.get(job_id)
        if priority is None:
            priority = held.priority if held is not None else DEFAULT_PRIORITY
        _, local = self._pool.shard_of(job_id)
        reply = self._job_request(job_id, Bury(local, priority).encode(), f"bury {job_id}")
        self._pool.unhold(job_id)
        if not isinstance(reply, BuriedReply):
            raise error_for_reply(reply, f"bury {job_id}")

    def touch(self, job_id: int) -> None:
        """Restart the TTR of a job this router holds.

        Raises:
            NotFound: the job is not reserved by this router (``ReservationLost`` when the
                connection that held it was closed).
        """
        _, local = self._pool.shard_of(job_id)
        start = self._clock()
        reply = self._job_request(job_id, Touch(local).encode(), f"touch {job_id}")
        if not (isinstance(reply, Word) and reply.word == "TOUCHED"):
            self._pool.unhold(job_id)
            raise error_for_reply(reply, f"touch {job_id}")
        held = self._pool.held.get(job_id)
        if held is not None:
            held.deadline = start + held.ttr

    def stats_job(self, job_id: int) -> dict[str, StatValue]:
        """The job's ``stats-job`` mapping, with ``id`` the global id.

        Raises:
            NotFound: no such job.
        """
        _, local = self._pool.shard_of(job_id)
        reply = self._job_request(
            job_id, StatsJob(local).encode(), f"stats-job {job_id}", reservation=False
        )
        stats = reply_mapping(reply, f"stats-job {job_id}")
        stats["id"] = job_id
        return stats

    def kick_job(self, job_id: int) -> None:
        """Kick a buried or delayed job to ready.

        Raises:
            NotFound: no such job, or it is neither buried nor delayed.
        """
        shard, local = self._pool.shard_of(job_id)
        self._check_open()
        reply = self._pool.ctl_request(shard, KickJob(local).encode())[0]
        if not isinstance(reply, Kicked):
            raise error_for_reply(reply, f"kick-job {job_id}")

    def peek(self, job_id: int) -> Job | None:
        """The job ``job_id`` in any state, or None when there is no such job."""
        shard, local = self._pool.shard_of(job_id)
        self._check_open()
        found, stats = self._pool.ctl_request(
            shard, Peek(local).encode() + StatsJob(local).encode(), 2
        )
        if not isinstance(found, Found):
            if isinstance(found, Word) and found.word == "NOT_FOUND":
                return None
            raise error_for_reply(found, f"peek {job_id}")
        tube, pri = "", DEFAULT_PRIORITY
        if isinstance(stats, Ok):
            mapping = parse_mapping(stats.body)
            tube = str(mapping.get("tube", ""))
            p = mapping.get("pri")
            pri = p if isinstance(p, int) else pri
        return Job(self, job_id, found.body, tube, pri, False)

    def _tube_shards(self, tube: str) -> list[Shard]:
        return [self._pool.shards[n] for n in self._placement.preference(tube)]

    def _peek_state(self, command: bytes, state: str) -> Job | None:
        self._check_open()
        tube = self._using

        def data(conn: Connection) -> tuple[bytes, int]:
            use, count = self._use_bytes(conn, tube)
            return use + command, count + 1

        found: list[tuple[Shard, Found]] = []
        for shard, replies, _ in self._pool.broadcast(self._tube_shards(tube), data):
            if replies is None:
                continue
            self._check_using(replies, len(replies) - 1)
            last = replies[-1]
            if isinstance(last, Found):
                found.append((shard, last))
            elif not (isinstance(last, Word) and last.word == "NOT_FOUND"):
                raise error_for_reply(last, f"peek-{state}")
        if not found:
            return None
        best: tuple[tuple[int, ...], Shard, Found, int] | None = None
        for order, (shard, reply) in enumerate(found):
            try:
                stats = reply_mapping(
                    self._pool.ctl_request(shard, StatsJob(reply.id).encode())[0], ""
                )
            except (CommandError, ShardUnavailable):
                continue
            pri = int(stats.get("pri", DEFAULT_PRIORITY))
            age = int(stats.get("age", 0))
            left = int(stats.get("time-left", 0))
            key = {"ready": (pri, -age, order), "delayed": (left, order)}.get(state, (order,))
            if best is None or key < best[0]:
                best = (key, shard, reply, pri)
        if best is None:
            return None
        _, shard, reply, pri = best
        return Job(self, ids.encode(shard.id, reply.id), reply.body, tube, pri, False)

    def peek_ready(self) -> Job | None:
        """The most urgent ready job of the used tube (across its shards), or None."""
        return self._peek_state(PeekReady().encode(), "ready")

    def peek_delayed(self) -> Job | None:
        """The delayed job of the used tube that becomes ready first, or None."""
        return self._peek_state(PeekDelayed().encode(), "delayed")

    def peek_buried(self) -> Job | None:
        """A buried job of the used tube (the owner shard's oldest first), or None."""
        return self._peek_state(PeekBuried().encode(), "buried")

    def kick(self, bound: int) -> int:
        """Kick up to ``bound`` jobs of the used tube (buried ones, else delayed, per shard).

        Shards are visited in the tube's preference order until ``bound`` jobs are kicked.
        Returns the number kicked.
        """
        self._check_open()
        Kick(bound)
        tube = self._using
        total = 0
        for shard in self._tube_shards(tube):
            if total >= bound:
                break
            remaining = bound - total

            def data(conn: Connection, remaining: int = remaining) -> tuple[bytes, int]:
                use, count = self._use_bytes(conn, tube)
                return use + Kick(remaining).encode(), count + 1

            results = self._pool.broadcast([shard], data)
            replies = results[0][1]
            if replies is None:
                continue
            self._check_using(replies, len(replies) - 1)
            reply = replies[-1]
            if not isinstance(reply, Kicked) or reply.count is None:
                raise error_for_reply(reply, "kick")
            total += reply.count
        return total

    def _answered(
        self, results: list[tuple[Shard, list[Reply] | None, str]], what: str
    ) -> list[tuple[Shard, list[Reply]]]:
        ok = [(shard, replies) for shard, replies, _ in results if replies is not None]
        if not ok:
            raise ShardUnavailable(
                f"{what}: no shard answered", tuple((s.name, why) for s, _, why in results)
            )
        return ok

    def tubes(self) -> list[str]:
        """Every tube that exists on any reachable shard (union, first-seen order)."""
        self._check_open()
        command = ListTubes().encode()
        names: list[str] = []
        seen: set[str] = set()
        results = self._pool.broadcast(self._pool.shards.values(), lambda c: (command, 1))
        for _, replies in self._answered(results, "list-tubes"):
            reply = replies[0]
            if not isinstance(reply, Ok):
                raise error_for_reply(reply, "list-tubes")
            for name in parse_list(reply.body):
                if name not in seen:
                    seen.add(name)
                    names.append(name)
        return names

    def stats(self) -> dict[str, StatValue]:
        """The cluster's ``stats``: counters summed over the reachable shards (see docs/router.md).

        Adds ``shards`` (configured) and ``shards-up`` (answered).
        """
        self._check_open()
        command = StatsCommand().encode() + ListTubes().encode()
        results = self._pool.broadcast(self._pool.shards.values(), lambda c: (command, 2))
        parts: list[dict[str, StatValue]] = []
        tubes: set[str] = set()
        for _, replies in self._answered(results, "stats"):
            parts.append(reply_mapping(replies[0], "stats"))
            if isinstance(replies[1], Ok):
                tubes.update(parse_list(replies[1].body))
        return merge_stats(parts, len(tubes), len(self._pool.shards))

    def stats_tube(self, tube: str) -> dict[str, StatValue]:
        """The tube's ``stats-tube`` summed over the shards where it exists.

        Raises:
            NotFound: the tube exists on no reachable shard.
        """
        self._check_open()
        command = StatsTube(tube).encode()
        results = self._pool.broadcast(self._pool.shards.values(), lambda c: (command, 1))
        parts = []
        for _, replies in self._answered(results, "stats-tube"):
            if isinstance(replies[0], Ok):
                parts.append(parse_mapping(replies[0].body))
            elif not (isinstance(replies[0], Word) and replies[0].word == "NOT_FOUND"):
                raise error_for_reply(replies[0], f"stats-tube {tube}")
        if not parts:
            raise NotFound(f"stats-tube {tube}: NOT_FOUND")
        return merge_stats_tube(parts)

    def pause_tube(self, tube: str, delay: int) -> None:
        """Pause ``tube`` for ``delay`` seconds on every shard where it exists.

        Raises:
            NotFound: the tube exists on no reachable shard.
        """
        self._check_open()
        command = PauseTube(tube, delay).encode()
        results = self._pool.broadcast(self._pool.shards.values(), lambda c: (command, 1))
        paused = False
        for _, replies in self._answered(results, "pause-tube"):
            if isinstance(replies[0], Word) and replies[0].word == "PAUSED":
                paused = True
            elif not (isinstance(replies[0], Word) and replies[0].word == "NOT_FOUND"):
                raise error_for_reply(replies[0], f"pause-tube {tube}")
        if not paused:
            raise NotFound(f"pause-tube {tube}: NOT_FOUND")
