"""``Router``: a set of independent beanstalkd shards used like one beanstalkd (blocking, sockets).

The public facade of the blocking shell: every decision (placement, failover, the cross-shard
reserve, held jobs, merged admin) is the routing core's (``beanrouter.core``: a ``Cluster`` and a
``Session``); ``driver.Driver`` runs its operations over blocking sockets; what ``Router`` shares
with ``AsyncRouter`` (construction, shard-free queries, the mapping of the core's replies to
return values and exceptions) is ``facade.Facade``'s.

A ``Router`` is not thread-safe: use one per thread (it is cheap). The one exception is
``close()``, which may be called from another thread or a signal handler to end a blocked
``reserve``.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import (
    RouterError,
    error_for_reply,
    invalid_argument,
    reply_mapping,
)
from ..core.rounds import FailureKind, Op
from ..protocol import (
    Kicked,
    LocalProtocolError,
    Ok,
    Reserved,
    StatValue,
    encode_put,
    parse_mapping,
)
from .config import load_config
from .driver import Driver
from .facade import (
    Facade,
    as_body,
    bury_result,
    kicked_result,
    list_result,
    peek_job_fields,
    put_result,
    release_result,
    reserve_result,
    stats_job_result,
    watching_result,
    word_result,
)
from .job import DEFAULT_PRIORITY, DEFAULT_TTR, Job
from .timers import TIMERS

__all__ = ["DEFAULT_PRIORITY", "DEFAULT_TTR", "Job", "Router"]

T = TypeVar("T")

TIMER_RETRY = 0.1
"""Seconds before the timer thread tries again to run maintenance a call was holding off."""


class Router(Facade):
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

    def _open(self) -> None:
        self._calls = threading.RLock()
        """Held by every call, and by the timer thread's maintenance (see ``timers``)."""
        self._timer_due: float | None = None
        # A job a reserve got alone comes without its stats-job: ``Job`` reads its tube and
        # priority when asked (``Job._learn``), the core its TTR when needed (``reserve.hold``).
        self._session.lazy_hold = True
        self._driver = Driver(self._session, self._connect_timeout, self._timeout, self._clock)

    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> Router:
        """A router for the cluster described by the YAML file at ``path``.

        Raises:
            ConfigError: the file is missing or invalid (with line and field).
        """
        return cls(load_config(path), **overrides)

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection: each shard puts the jobs this router held back to ready.

        May be called from another thread or a signal handler to end a ``reserve`` blocked in
        this router: that ``reserve`` raises ``RouterError`` and closes the connections itself
        as it returns.
        """
        self._closed = True
        self._driver.close()

    def _run(self, op: Op[T]) -> T:
        if self._closed:
            op.close()
            raise RouterError("the router is closed")
        with self._calls:
            try:
                due = self._session.next_timer()
                if due is not None and due <= self._clock():
                    self._driver.run(self._session.maintain())
                return self._driver.run(op)
            except LocalProtocolError as exc:  # the codec refused an argument
                raise invalid_argument(exc, getattr(op, "__name__", None)) from exc
            finally:
                self._arm_timer()

    def _arm_timer(self) -> None:
        due = self._session.next_timer()
        if due is not None and due != self._timer_due and not self._closed:
            self._timer_due = due
            TIMERS.at(due - self._clock(), self._on_timer)

    def _on_timer(self) -> None:
        """On the timer thread: run ``maintain``; while a call runs, try again shortly (the call
        may be past its own re-arming, and the timer thread never blocks on one router)."""
        if self._closed:
            return
        if not self._calls.acquire(blocking=False):
            TIMERS.at(TIMER_RETRY, self._on_timer)
            return
        try:
            self._timer_due = None
            due = self._session.next_timer()
            if due is not None and due <= self._clock():
                with contextlib.suppress(RouterError):
                    self._driver.run(self._session.maintain())
        finally:
            self._arm_timer()
            self._calls.release()

    def use(self, tube: str) -> str:
        """Use ``tube`` for puts (and peeks and kicks). Returns the tube name."""
        self._run(self._session.use(tube))
        return tube

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
        body = as_body(body)
        s = self._session
        refused = None
        if not self._closed and s.next_timer() is None:
            # The common case without an operation (see Session.put_fast).
            with self._calls:
                link = s.put_fast()
                if link is not None:
                    try:
                        data = encode_put(priority, delay, ttr, body)
                    except LocalProtocolError as exc:
                        raise invalid_argument(exc, "put") from exc
                    link.owed = 1  # until the reply is read: never reused after an interruption
                    result = self._driver.one(link, data)
                    if isinstance(result, list):
                        link.owed = 0
                        reply = s.put_fast_done(link, result[0])
                        if reply is not None:
                            return put_result(reply, s.using)
                        refused = s.refused_by
                    elif result is None:
                        link.owed = 0  # nothing was sent
                    else:
                        s.settle(link, result)
                        if result.kind is FailureKind.LOST:
                            raise s.put_uncertain(link.shard, result)
        reply = self._run(s.put(priority, delay, ttr, body, refused))
        return put_result(reply, s.using)

    def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list; returns the number of watched tubes."""
        return watching_result(self._run(self._session.watch(tube)), f"watch {tube}")

    def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list; returns the number of watched tubes.

        Raises:
            NotIgnored: ``tube`` is the only watched tube.
        """
        return watching_result(self._run(self._session.ignore(tube)), f"ignore {tube}")

    def _job(self, job_id: int, body: bytes) -> Job:
        tube, priority = self._held(job_id)
        watching = self._session.watching
        if tube is None and len(watching) == 1:  # (handed out without its stats-job)
            tube = watching[0]  # the only tube it can come from
        return Job(self, job_id, body, tube, priority, True)

    def reserve(self, timeout: float | None = None) -> Job | None:
        """Reserve the most urgent ready job of the watched tubes across all shards.

        Waits for one when none is ready (forever when ``timeout`` is None) without polling;
        no job is reserved that is not handed out (see docs/router.md).

        Returns:
            The job, or None when ``timeout`` passed.

        Raises:
            DeadlineSoon: no job is ready and a job this router holds is less than a second
                from its TTR deadline (also ends a wait at deadline - 1 s).
            ShardUnavailable: no shard that holds a watched tube can be reached.
        """
        with self._calls:  # the timer's maintenance cannot forget the job before it is wrapped
            reply = self._run(self._session.reserve(timeout))
            job_id = reserve_result(reply)
            if job_id is None:
                return None
            assert isinstance(reply, Reserved)
            return self._job(job_id, reply.body)

    def reserve_job(self, job_id: int) -> Job:
        """Reserve the job ``job_id`` whatever its state or tube (beanstalkd's ``reserve-job``).

        Raises:
            NotFound: no such job, or it is reserved already.
        """
        with self._calls:
            reply = self._run(self._session.reserve_job(job_id))
            if not isinstance(reply, Reserved):
                raise error_for_reply(reply, f"reserve-job {job_id}")
            return self._job(reply.id, reply.body)

    def delete(self, job_id: int) -> None:
        """Delete a job (reserved by this router, or ready, delayed or buried).

        Raises:
            NotFound: no such job, or it is reserved by someone else.
            ReservationLost: this router held the job, and the connection holding it was closed
                (the job is ready again on its shard); it is not deleted.
        """
        word_result(self._run(self._session.delete(job_id)), "DELETED", f"delete {job_id}")

    def release(self, job_id: int, priority: int | None = None, delay: int = 0) -> None:
        """Release a job this router holds (``priority`` defaults to its priority).

        Raises:
            NotFound: the job is not reserved by this router (``ReservationLost`` when the
                connection that held it was closed).
            Buried: the shard buried it instead (out of memory).
        """
        release_result(self._run(self._session.release(job_id, priority, delay)), job_id)

    def bury(self, job_id: int, priority: int | None = None) -> None:
        """Bury a job this router holds (``priority`` defaults to its priority).

        Raises:
            NotFound: the job is not reserved by this router (``ReservationLost`` when the
                connection that held it was closed).
        """
        bury_result(self._run(self._session.bury(job_id, priority)), job_id)

    def touch(self, job_id: int) -> None:
        """Restart the TTR of a job this router holds.

        Raises:
            NotFound: the job is not reserved by this router (``ReservationLost`` when the
                connection that held it was closed).
        """
        word_result(self._run(self._session.touch(job_id)), "TOUCHED", f"touch {job_id}")

    def stats_job(self, job_id: int) -> dict[str, StatValue]:
        """The job's ``stats-job`` mapping, with ``id`` the global id.

        Raises:
            NotFound: no such job.
        """
        return stats_job_result(self._run(self._session.stats_job(job_id)), job_id)

    def kick_job(self, job_id: int) -> None:
        """Kick a buried or delayed job to ready.

        Raises:
            NotFound: no such job, or it is neither buried nor delayed.
        """
        reply = self._run(self._session.kick_job(job_id))
        if not isinstance(reply, Kicked):
            raise error_for_reply(reply, f"kick-job {job_id}")

    def peek(self, job_id: int) -> Job | None:
        """The job ``job_id`` in any state, or None when there is no such job."""
        reply, stats = self._run(self._session.peek_with_stats(job_id))
        found = peek_job_fields(reply, stats, "", f"peek {job_id}")
        return None if found is None else Job(self, *found, False)

    def _peek_state(self, state: str) -> Job | None:
        reply, stats = self._run(self._session.peek_state(state))
        tube = self._session.using
        found = peek_job_fields(reply, stats, tube, f"peek-{state}")
        if found is None:
            return None
        job_id, body, tube, pri = found
        if stats is None:
            reply = self._run(self._session.stats_job(job_id))
            if isinstance(reply, Ok):
                p = parse_mapping(reply.body).get("pri")
                pri = p if isinstance(p, int) else pri
        return Job(self, job_id, body, tube, pri, False)

    def peek_ready(self) -> Job | None:
        """The most urgent ready job of the used tube (across its shards), or None."""
        return self._peek_state("ready")

    def peek_delayed(self) -> Job | None:
        """The delayed job of the used tube that becomes ready first, or None."""
        return self._peek_state("delayed")

    def peek_buried(self) -> Job | None:
        """A buried job of the used tube (the owner shard's oldest first), or None."""
        return self._peek_state("buried")

    def kick(self, bound: int) -> int:
        """Kick up to ``bound`` jobs of the used tube (buried ones, else delayed, per shard).

        Shards are visited in the tube's preference order until ``bound`` jobs are kicked.
        Returns the number kicked.
        """
        return kicked_result(self._run(self._session.kick(bound)), "kick")

    def tubes(self) -> list[str]:
        """Every tube that exists on any reachable shard (union, first-seen order)."""
        return list_result(self._run(self._session.list_tubes()), "list-tubes")

    def stats(self) -> dict[str, StatValue]:
        """The cluster's ``stats``: counters summed over the reachable shards (see docs/router.md).

        Adds ``shards`` (configured) and ``shards-up`` (answered).
        """
        return reply_mapping(self._run(self._session.stats()), "stats")

    def stats_tube(self, tube: str) -> dict[str, StatValue]:
        """The tube's ``stats-tube`` summed over the shards where it exists.

        Raises:
            NotFound: the tube exists on no reachable shard.
        """
        return reply_mapping(self._run(self._session.stats_tube(tube)), f"stats-tube {tube}")

    def pause_tube(self, tube: str, delay: int) -> None:
        """Pause ``tube`` for ``delay`` seconds on every shard where it exists.

        Raises:
            NotFound: the tube exists on no reachable shard.
        """
        word_result(
            self._run(self._session.pause_tube(tube, delay)), "PAUSED", f"pause-tube {tube}"
        )
