"""Cross-shard reserve: the watch list, the sweep, the blocking wait and DEADLINE_SOON.

``Reserver.reserve`` first sends ``reserve-with-timeout 0`` to every shard that holds a watched
tube at once (the *sweep*): the most urgent job found wins and the others are released at once
with their own priority. If none is ready it sends a blocking reserve to every such shard at once
and waits on all the sockets (the *wait*): the first job wins, and every wait still pending is
cancelled by closing its connection, so the shard puts whatever it reserved in that race straight
back to ready (original priority, no counter changed). See docs/router.md.

Invariants: waits run only on consumer connections that hold no job (so closing one strands
nothing); every job reserved on the caller's behalf is either handed out (and recorded in
``Pool.held`` with its deadline) or given back before ``reserve`` returns, also when an exception
(``KeyboardInterrupt``, a signal handler's exception) escapes in the middle: a connection is
marked ``reserving`` from the moment a reserve is sent on it until its outcome is settled, and
``reserve`` closes every connection left owing a reply or unsettled (``Pool.abandon``); an idle
consumer costs each shard one reserve command per call (no polling). beanstalkd's DEADLINE_SOON
is per connection, so it is reproduced here from the held jobs' deadlines.
"""

from __future__ import annotations

import contextlib
import math
import selectors
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..protocol import Buried as BuriedReply
from ..protocol import (
    Ignore,
    Ok,
    Release,
    Reserved,
    ReserveJob,
    ReserveWithTimeout,
    StatsJob,
    StatValue,
    Watch,
    Watching,
    Word,
    parse_mapping,
)
from . import ids
from .connection import ConnectFailed, Connection, ConnectionFailure, ReplyLost, SendFailed
from .errors import (
    DeadlineSoon,
    JobIdError,
    NotFound,
    NotIgnored,
    ShardUnavailable,
    error_for_reply,
)
from .job import DEFAULT_PRIORITY, Job
from .pool import Held, Pool, Request, Shard
from .ring import Placement

__all__ = ["IDLE_SKIP_SWEEP", "SAFETY_MARGIN", "Reserver"]

SAFETY_MARGIN = 1.0
"""beanstalkd's DEADLINE_SOON margin: a held job less than this from its deadline."""
TIMEOUT_GRACE = 0.1
"""How long past the caller's deadline we wait for a shard's own TIMED_OUT (to keep the
connection) before cancelling the wait by closing it."""
IDLE_SKIP_SWEEP = 0.05
"""A reserve within this many seconds after one that saw every shard empty goes straight to the
blocking wait (the sweep would cost each shard a second command per timeout)."""
REARM_MIN = 0.05
"""A wait is not re-armed on a shard that answered TIMED_OUT when less than this remains."""
_RESERVE_FOREVER = b"reserve\r\n"
_MAX_SELECT = 3600.0
"""Longest single ``select`` (the wait loop goes round again without sending anything)."""
_MAX_WAIT = 2**31 - 1
"""Longest ``reserve-with-timeout`` (beanstalkd reads it as a C int; 68 years)."""

MakeJob = Callable[[int, bytes, str, int, bool], Job]
"""Builds a ``Job`` (id, body, tube, priority, reserved) owned by the router."""


@dataclass(slots=True)
class _Waiter:
    shard: Shard
    conn: Connection
    pending: int
    expires: float | None


class Reserver:
    """The watch list and the reserve machinery of one router.

    Args:
        pool: the router's connections.
        placement: where tubes live.
        clock: monotonic clock.
        make_job: builds the ``Job`` objects handed out.
    """

    def __init__(
        self,
        pool: Pool,
        placement: Placement,
        clock: Callable[[], float],
        make_job: MakeJob,
    ) -> None:
        self._pool = pool
        self._placement = placement
        self._clock = clock
        self._make_job = make_job
        self._watching: list[str] = ["default"]
        self._watch_map: dict[str, list[str]] | None = None
        self._idle_at: float | None = None
        self._idle_shards: frozenset[str] = frozenset()
        self._rr = 0

    def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list; returns the number of watched tubes."""
        Watch(tube)
        if tube not in self._watching:
            self._watching.append(tube)
            self._watch_changed()
        return len(self._watching)

    def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list; returns the number of watched tubes.

        Raises:
            NotIgnored: ``tube`` is the only watched tube.
        """
        Ignore(tube)
        if tube not in self._watching:
            return len(self._watching)
        if len(self._watching) == 1:
            raise NotIgnored(f"ignore {tube}: NOT_IGNORED (it is the only watched tube)")
        # beanstalkd's watch set is an array whose last entry fills the hole of a removed one.
        i = self._watching.index(tube)
        last = self._watching.pop()
        if i < len(self._watching):
            self._watching[i] = last
        self._watch_changed()
        return len(self._watching)

    def watching(self) -> list[str]:
        """The watched tubes, in the order beanstalkd lists them."""
        return list(self._watching)

    def _watch_changed(self) -> None:
        self._watch_map = None
        self._idle_at = None
        # Bring every open consumer connection in line now, so tubes() lists what one
        # beanstalkd would (a watched tube exists; an ignored one may vanish).
        wmap = self.shard_watch()
        for shard in self._pool.shards.values():
            if shard.name in wmap and not shard.consumers and shard.health.available():
                with contextlib.suppress(ConnectFailed):
                    shard.consumers.append(self._pool.open(shard))
        requests: list[Request] = []
        for shard in self._pool.shards.values():
            desired = wmap.get(shard.name, ["default"])
            for conn in list(shard.consumers):
                if not conn.reusable():
                    self._pool.discard(shard, conn)
                    continue
                data, count = self._watch_delta(conn, desired)
                if count:
                    requests.append((shard, conn, data, count))
        for (shard, conn, _, _), result in zip(requests, self._pool.gather(requests), strict=True):
            if isinstance(result, ConnectionFailure):
                self._pool.fail(shard, conn, result)
            elif not all(isinstance(r, Watching) for r in result):
                self._pool.discard(shard, conn)

    def shard_watch(self) -> dict[str, list[str]]:
        """The tubes each relevant shard's consumer connections watch (config order)."""
        if self._watch_map is None:
            wmap: dict[str, list[str]] = {}
            for tube in self._watching:
                for name in self._placement.preference(tube):
                    wmap.setdefault(name, []).append(tube)
            self._watch_map = {n: wmap[n] for n in self._pool.shards if n in wmap}
        return self._watch_map

    @staticmethod
    def _watch_delta(conn: Connection, desired: list[str]) -> tuple[bytes, int]:
        """Commands that make ``conn`` watch exactly ``desired`` (``conn.watched`` updated)."""
        parts = [Watch(t).encode() for t in desired if t not in conn.watched]
        parts += [Ignore(t).encode() for t in conn.watched if t not in desired]
        if parts:
            conn.watched = list(desired)
        return b"".join(parts), len(parts)

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
        self._pool.begin()
        try:
            job = self._reserve(timeout)
        except BaseException:
            self._pool.abandon()
            raise
        finally:
            self._pool.end()
        self._pool.check_open("reserve")  # closed meanwhile: end() gave the job back
        return job

    def _reserve(self, timeout: float | None) -> Job | None:
        start = self._clock()
        if timeout is not None and not timeout < math.inf:
            timeout = None if timeout == math.inf else 0.0  # inf waits forever; NaN does not
        deadline = None if timeout is None else start + max(0.0, timeout)
        self._expire_held(start)
        wmap = self.shard_watch()
        relevant = [self._pool.shards[n] for n in wmap]
        ready = [s for s in relevant if s.health.available(start)]
        if not ready:
            raise ShardUnavailable(
                "no shard of the watched tubes is up",
                tuple((s.name, "down: " + s.health.last_error) for s in relevant),
            )
        soon = self._soon_at()
        skip_sweep = (
            timeout != 0
            and self._idle_at is not None
            and start - self._idle_at < IDLE_SKIP_SWEEP
            and self._idle_shards == frozenset(s.name for s in ready)
            and (soon is None or soon > start)
        )
        self._idle_at = None
        if not skip_sweep:
            job = self._sweep(ready, wmap)
            if job is not None:
                return job
            now = self._clock()
            if soon is not None and soon <= now:
                raise DeadlineSoon("reserve: DEADLINE_SOON (a held job is near its deadline)")
            if deadline is not None and now >= deadline:
                return None
        return self._wait(relevant, wmap, deadline)

    def reserve_job(self, job_id: int) -> Job:
        """Reserve the job ``job_id`` whatever its state or tube (beanstalkd's ``reserve-job``).

        Raises:
            NotFound: no such job, or it is reserved already.
        """
        shard, local = self._pool.shard_of(job_id)
        try:
            return self._reserve_job(shard, job_id, local)
        except BaseException:
            self._pool.abandon()
            raise

    def _reserve_job(self, shard: Shard, job_id: int, local: int) -> Job:
        try:
            conn = self._pool.consumer(shard, idle_only=False)
            conn.reserving = True
            reply = conn.request(ReserveJob(local).encode())[0]
        except ConnectFailed as exc:
            raise ShardUnavailable(
                f"shard {shard.name} unreachable", ((shard.name, str(exc)),)
            ) from exc
        except (SendFailed, ReplyLost) as exc:
            self._pool.fail(shard, conn, exc)
            raise ShardUnavailable(f"shard {shard.name} failed", ((shard.name, str(exc)),)) from exc
        if not isinstance(reply, Reserved):
            conn.reserving = False
            raise error_for_reply(reply, f"reserve-job {job_id}")
        job = self._choose([(shard, conn, reply)])
        if job is None:
            raise NotFound(f"reserve-job {job_id}: the job vanished")
        return job

    def _soon_at(self) -> float | None:
        """When DEADLINE_SOON starts for the most urgent held job (None: no held job)."""
        if not self._pool.held:
            return None
        return min(h.deadline for h in self._pool.held.values()) - SAFETY_MARGIN

    def _expire_held(self, now: float) -> None:
        """Forget held jobs whose TTR ran out (the shard has put them back to ready)."""
        for job_id, held in list(self._pool.held.items()):
            if held.deadline <= now:
                self._pool.unhold(job_id)

    def _sweep(self, shards: Sequence[Shard], wmap: Mapping[str, list[str]]) -> Job | None:
        """``reserve-with-timeout 0`` on every shard at once; the most urgent job wins."""
        requests: list[Request] = []
        zero = ReserveWithTimeout(0).encode()
        for shard in shards:
            try:
                conn = self._pool.consumer(shard, idle_only=False)
            except ConnectFailed:
                continue
            data, count = self._watch_delta(conn, wmap[shard.name])
            conn.reserving = True
            requests.append((shard, conn, data + zero, count + 1))
        found: list[tuple[Shard, Connection, Reserved]] = []
        for (shard, conn, _, count), result in zip(
            requests, self._pool.gather(requests), strict=True
        ):
            if isinstance(result, ConnectionFailure):
                self._pool.fail(shard, conn, result)
                continue
            shard.health.success()
            if not all(isinstance(r, Watching) for r in result[: count - 1]):
                self._pool.discard(shard, conn)
                continue
            last = result[-1]
            if isinstance(last, Reserved):
                found.append((shard, conn, last))
            elif isinstance(last, Word) and last.word in ("TIMED_OUT", "DEADLINE_SOON"):
                conn.reserving = False
            else:
                self._pool.discard(shard, conn)
        if not found:
            return None
        return self._choose(found)

    def _choose(self, found: Sequence[tuple[Shard, Connection, Reserved]]) -> Job | None:
        """Keep the most urgent of jobs just reserved; release the others at their priority."""
        requests: list[Request] = [
            (shard, conn, StatsJob(r.id).encode(), 1) for shard, conn, r in found
        ]
        now = self._clock()
        candidates: list[tuple[int, int, int, int, dict[str, StatValue]]] = []
        n = len(found)
        for i, result in enumerate(self._pool.gather(requests)):
            shard, conn, _ = found[i]
            if isinstance(result, ConnectionFailure):
                self._pool.fail(shard, conn, result)
                continue
            reply = result[0]
            if not isinstance(reply, Ok):
                if isinstance(reply, Word) and reply.word == "NOT_FOUND":
                    conn.reserving = False  # gone: nothing to give back
                else:
                    # An answer we cannot use: the job is reserved on this connection and
                    # would be stranded there. Closing the connection gives it back.
                    self._pool.discard(shard, conn)
                continue
            stats = parse_mapping(reply.body)
            pri = stats.get("pri", DEFAULT_PRIORITY)
            age = stats.get("age", 0)
            order = (i - self._rr) % n
            candidates.append(
                (int(pri) if isinstance(pri, int) else DEFAULT_PRIORITY,
                 -(int(age) if isinstance(age, int) else 0), order, i, stats)
            )  # fmt: skip
        if not candidates:
            return None
        candidates.sort(key=lambda c: c[:3])
        self._rr += 1
        best = candidates[0]
        losers = [
            (found[c[3]][0], found[c[3]][1], Release(found[c[3]][2].id, c[0], 0).encode(), 1)
            for c in candidates[1:]
        ]
        for (shard, conn, _, _), result in zip(losers, self._pool.gather(losers), strict=True):
            if isinstance(result, ConnectionFailure):
                self._pool.fail(shard, conn, result)  # closing put the job back to ready anyway
            elif (isinstance(result[0], Word) and result[0].word == "RELEASED") or isinstance(
                result[0], BuriedReply
            ):
                conn.reserving = False
            else:
                self._pool.discard(shard, conn)
        shard, conn, reply = found[best[3]]
        stats = best[4]
        ttr_value = stats.get("ttr", 1)
        ttr = int(ttr_value) if isinstance(ttr_value, int) else 1
        tube = stats.get("tube", "")
        try:
            job_id = ids.encode(shard.id, reply.id)
        except JobIdError:
            # Unroutable: give the job back to ready (closing the connection if that fails).
            try:
                conn.request(Release(reply.id, best[0], 0).encode())
            except ConnectionFailure:
                self._pool.discard(shard, conn)
            else:
                conn.reserving = False
            raise
        self._pool.held[job_id] = Held(
            conn=conn,
            shard=shard,
            deadline=now + ttr,
            priority=best[0],
            ttr=ttr,
            tube=str(tube),
        )
        conn.held += 1
        conn.reserving = False
        self._pool.lost.pop(job_id, None)
        for other in {id(f[0]): f[0] for f in found}.values():
            self._pool.trim(other)  # connections that gave their job back may now be surplus
        return self._make_job(job_id, reply.body, str(tube), best[0], True)

    def _wait(
        self,
        relevant: Sequence[Shard],
        wmap: Mapping[str, list[str]],
        deadline: float | None,
    ) -> Job | None:
        """Block on every relevant shard at once; the first job wins, the other waits are
        cancelled by closing their connections."""
        waiters: dict[int, _Waiter] = {}
        idle_seen: set[str] = set()
        sel = selectors.DefaultSelector()
        try:
            # Readable when close() is called from another thread or a signal handler (a
            # close() that came before the socket existed is seen by check_open below).
            sel.register(self._pool.wake_fd(), selectors.EVENT_READ, None)
            pending_probe = list(relevant)
            while True:
                self._pool.check_open("reserve")
                now = self._clock()
                # (Re)arm a wait on every relevant shard that may be tried now.
                still: list[Shard] = []
                active = {w.shard.name for w in waiters.values()}
                # A shard whose own TIMED_OUT came a hair before our deadline (its clock runs
                # slightly ahead) is not asked again for the last moments: that wait would have
                # to be cancelled by closing its connection.
                short = deadline is not None and deadline - now < REARM_MIN
                for shard in pending_probe:
                    if shard.name in active or (short and shard.name in idle_seen):
                        continue
                    if not shard.health.available(now):
                        still.append(shard)
                        continue
                    waiter = self._arm(shard, wmap[shard.name], deadline, now)
                    if waiter is None:
                        still.append(shard)
                        continue
                    waiters[waiter.conn.fileno()] = waiter
                    sel.register(waiter.conn.sock, selectors.EVENT_READ, waiter)
                    active.add(shard.name)
                pending_probe = still
                if not waiters and not (short and idle_seen):
                    raise ShardUnavailable(
                        "no shard of the watched tubes is up",
                        tuple((s.name, "down: " + s.health.last_error) for s in relevant),
                    )
                soon = self._soon_at()
                wake = [t for t in (deadline, soon) if t is not None]
                probes = [p for s in pending_probe if (p := s.health.next_probe()) is not None]
                wake += probes
                if not probes and pending_probe:
                    wake.append(now + 0.01)
                # Capped: epoll refuses timeouts past ~24 days; waking up early sends nothing.
                timeout = None if not wake else min(max(0.0, min(wake) - now), _MAX_SELECT)
                events = self._select(sel, timeout)
                winners: list[tuple[Shard, Connection, Reserved]] = []
                self._collect(sel, events, waiters, winners, pending_probe, idle_seen)
                if winners:
                    # Jobs that became ready on several shards at once: take what has already
                    # arrived, so the most urgent of them wins.
                    self._collect(
                        sel, self._select(sel, 0), waiters, winners, pending_probe, idle_seen
                    )
                    self._cancel(sel, waiters)
                    job = self._choose(winners)
                    if job is not None:
                        return job
                    pending_probe = list(relevant)
                    continue
                now = self._clock()
                if soon is not None and now >= soon:
                    self._cancel(sel, waiters)
                    raise DeadlineSoon("reserve: DEADLINE_SOON (a held job is near its deadline)")
                if deadline is not None and now >= deadline:
                    return self._time_out(sel, waiters, pending_probe, idle_seen, relevant)
        finally:
            sel.close()

    def _arm(
        self, shard: Shard, watch: list[str], deadline: float | None, now: float
    ) -> _Waiter | None:
        """Start a blocking reserve on an idle consumer connection of ``shard``."""
        try:
            conn = self._pool.consumer(shard, idle_only=True)
        except ConnectFailed:
            return None
        data, count = self._watch_delta(conn, watch)
        if deadline is None:
            command, expires = _RESERVE_FOREVER, None
        else:
            seconds = min(max(1, math.ceil(deadline - now)), _MAX_WAIT)
            command, expires = ReserveWithTimeout(seconds).encode(), now + seconds
        conn.reserving = True
        try:
            conn.send(data + command, count + 1)
        except SendFailed as exc:
            self._pool.fail(shard, conn, exc)
            return None
        return _Waiter(shard, conn, count + 1, expires)

    def _select(
        self, sel: selectors.BaseSelector, timeout: float | None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """``sel.select`` without the wake-up descriptor's event.

        Raises:
            RouterError: ``close()`` was called meanwhile (the waits are closed by ``end()``).
        """
        events = sel.select(timeout)
        self._pool.check_open("reserve")
        return [(key, mask) for key, mask in events if key.data is not None]

    def _collect(
        self,
        sel: selectors.BaseSelector,
        events: list[tuple[selectors.SelectorKey, int]],
        waiters: dict[int, _Waiter],
        winners: list[tuple[Shard, Connection, Reserved]],
        pending_probe: list[Shard],
        idle_seen: set[str],
    ) -> None:
        """Read the replies of the waiters that are readable."""
        for key, _ in events:
            waiter: _Waiter = key.data
            fd = key.fd
            conn = waiter.conn
            done = False
            try:
                conn.pump()
                while waiter.pending:
                    reply = conn.next_reply()
                    if reply is None:
                        break
                    waiter.pending -= 1
                    if waiter.pending:
                        if not isinstance(reply, Watching):
                            raise ReplyLost(f"watch: unexpected reply {reply!r}")
                        continue
                    done = True
                    waiter.shard.health.success()
                    if isinstance(reply, Reserved):
                        winners.append((waiter.shard, conn, reply))
                    elif isinstance(reply, Word) and reply.word in ("TIMED_OUT", "DEADLINE_SOON"):
                        conn.reserving = False
                        idle_seen.add(waiter.shard.name)
                        pending_probe.append(waiter.shard)  # re-armed if time is left
                    else:
                        raise ReplyLost(f"reserve: unexpected reply {reply!r}")
            except ReplyLost as exc:
                sel.unregister(key.fileobj)
                del waiters[fd]
                self._pool.fail(waiter.shard, conn, exc)
                pending_probe.append(waiter.shard)
                continue
            if done:
                sel.unregister(key.fileobj)
                del waiters[fd]

    def _cancel(self, sel: selectors.BaseSelector, waiters: dict[int, _Waiter]) -> None:
        """Cancel waits still pending by closing their connections."""
        for fd, waiter in list(waiters.items()):
            sel.unregister(waiter.conn.sock)
            del waiters[fd]
            self._pool.discard(waiter.shard, waiter.conn)

    def _time_out(
        self,
        sel: selectors.BaseSelector,
        waiters: dict[int, _Waiter],
        pending_probe: list[Shard],
        idle_seen: set[str],
        relevant: Sequence[Shard],
    ) -> Job | None:
        """The caller's deadline passed: let shards whose own timeout is about to fire answer
        (so their connections are kept), cancel the rest. A job that arrives meanwhile wins."""
        winners: list[tuple[Shard, Connection, Reserved]] = []
        limit = self._clock() + TIMEOUT_GRACE
        while waiters:
            expiring = [w for w in waiters.values() if w.expires is not None and w.expires <= limit]
            if not expiring:
                break
            latest = max(w.expires for w in expiring if w.expires is not None)
            remaining = min(limit, latest + TIMEOUT_GRACE / 2) - self._clock()
            if remaining <= 0:
                break
            events = self._select(sel, remaining)
            self._collect(sel, events, waiters, winners, pending_probe, idle_seen)
            if winners:
                break
        cancelled = bool(waiters)
        self._cancel(sel, waiters)
        if winners:
            return self._choose(winners)
        if not cancelled and idle_seen == {s.name for s in relevant}:
            self._idle_at = self._clock()
            self._idle_shards = frozenset(idle_seen)
        return None
