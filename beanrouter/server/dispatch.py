"""Dispatch: run one parsed command against the engine and produce the reply bytes.

This is the only place that maps protocol events to engine calls and engine results to replies.
It bumps the ``cmd-*`` counters exactly when beanstalkd does (after a command parses; see
``Rejected.counted`` and ``PutStarted`` for the cases where bad input still counts) and takes job
ids when beanstalkd does (at the put line). Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .. import protocol as p
from .conn import DEADLINE_SOON, TIMED_OUT, WAIT, Conn
from .engine import Draining, Engine, OutOfSpace
from .job import Job

__all__ = ["QUIT", "WAITING", "Session", "reply_for_wake"]


class _Control:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


WAITING: Final = _Control("WAITING")
"""The command is a reserve that blocks: its reply comes later through ``Conn.on_wake``."""
QUIT: Final = _Control("QUIT")
"""The client asked to close the connection."""

_DELETED = p.DELETED.encode()
_NOT_FOUND = p.NOT_FOUND.encode()
_RELEASED = p.RELEASED.encode()
_BURIED = p.BURIED.encode()
_TOUCHED = p.TOUCHED.encode()
_KICKED = p.KICKED.encode()
_PAUSED = p.PAUSED.encode()
_NOT_IGNORED = p.NOT_IGNORED.encode()
_DEADLINE_SOON = p.DEADLINE_SOON.encode()
_TIMED_OUT = p.TIMED_OUT.encode()
_DRAINING = p.DRAINING.encode()
_OUT_OF_MEMORY = p.OUT_OF_MEMORY.encode()


def _job_reply(word: bytes, job: Job) -> bytes:
    return p.encode_job(word, job.id, job.body)


def reply_for_wake(result: object) -> bytes:
    """The bytes that answer a blocked reserve woken with ``result`` (a Job or an outcome)."""
    if result is DEADLINE_SOON:
        return _DEADLINE_SOON
    if result is TIMED_OUT:
        return _TIMED_OUT
    assert isinstance(result, Job)
    return _job_reply(b"RESERVED", result)


class Session:
    """One client connection's view of the engine: events in, reply bytes out."""

    __slots__ = ("conn", "engine", "pending_put_id", "put_started")

    def __init__(self, engine: Engine, conn: Conn) -> None:
        self.engine = engine
        self.conn = conn
        self.put_started = False
        self.pending_put_id: int | None = None

    def handle(self, event: p.Command | p.Rejected | p.PutStarted) -> bytes | _Control:
        """Run one event; returns reply bytes, ``WAITING`` or ``QUIT``."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            stat = event.stat  # type: ignore[union-attr]
            if stat is not None and not self.put_started:
                self.engine.op_counts[stat] += 1
            return handler(self, event)  # type: ignore[arg-type]
        if isinstance(event, p.PutStarted):
            self.engine.op_counts["cmd-put"] += 1
            self.put_started = True
            if event.allocates_id:
                self.pending_put_id = self.engine.new_id(self.conn)
            return b""
        assert isinstance(event, p.Rejected)
        if event.counted is not None and not self.put_started:
            self.engine.op_counts[event.counted] += 1
        if event.burns_id and not self.put_started:
            self.engine.new_id(self.conn)
        self.put_started = False
        self.pending_put_id = None
        return event.reply.encode()

    # -- jobs -----------------------------------------------------------------------------------

    def _put(self, cmd: p.Put) -> bytes:
        engine = self.engine
        job_id = self.pending_put_id
        self.put_started = False
        self.pending_put_id = None
        if job_id is None:
            job_id = engine.new_id(self.conn)
        try:
            engine.put(self.conn, cmd.priority, cmd.delay, cmd.ttr, cmd.body, job_id=job_id)
        except Draining:
            return _DRAINING
        except OutOfSpace:
            return _OUT_OF_MEMORY
        return p.encode_inserted(job_id)

    def _reserve(self, cmd: p.Command) -> bytes | _Control:
        return self._reserve_outcome(self.engine.reserve(self.conn, None))

    def _reserve_with_timeout(self, cmd: p.ReserveWithTimeout) -> bytes | _Control:
        timeout = cmd.timeout
        return self._reserve_outcome(
            self.engine.reserve(self.conn, None if timeout < 0 else timeout)
        )

    def _reserve_outcome(self, outcome: object) -> bytes | _Control:
        if outcome is WAIT:
            return WAITING
        return reply_for_wake(outcome)

    def _reserve_job(self, cmd: p.ReserveJob) -> bytes:
        job = self.engine.reserve_job(self.conn, cmd.id)
        return _NOT_FOUND if job is None else _job_reply(b"RESERVED", job)

    def _delete(self, cmd: p.Delete) -> bytes:
        return _DELETED if self.engine.delete(self.conn, cmd.id) else _NOT_FOUND

    def _release(self, cmd: p.Release) -> bytes:
        try:
            ok = self.engine.release(self.conn, cmd.id, cmd.priority, cmd.delay)
        except OutOfSpace:
            return _OUT_OF_MEMORY
        return _RELEASED if ok else _NOT_FOUND

    def _bury(self, cmd: p.Bury) -> bytes:
        try:
            ok = self.engine.bury(self.conn, cmd.id, cmd.priority)
        except OutOfSpace:
            return _OUT_OF_MEMORY
        return _BURIED if ok else _NOT_FOUND

    def _touch(self, cmd: p.Touch) -> bytes:
        return _TOUCHED if self.engine.touch(self.conn, cmd.id) else _NOT_FOUND

    def _kick(self, cmd: p.Kick) -> bytes:
        return p.encode_kicked(self.engine.kick(self.conn, cmd.bound))

    def _kick_job(self, cmd: p.KickJob) -> bytes:
        try:
            ok = self.engine.kick_job(self.conn, cmd.id)
        except OutOfSpace:
            return _OUT_OF_MEMORY
        return _KICKED if ok else _NOT_FOUND

    def _peek_result(self, job: Job | None) -> bytes:
        return _NOT_FOUND if job is None else _job_reply(b"FOUND", job)

    def _peek(self, cmd: p.Peek) -> bytes:
        return self._peek_result(self.engine.peek(cmd.id))

    def _peek_ready(self, cmd: p.Command) -> bytes:
        return self._peek_result(self.engine.peek_ready(self.conn))

    def _peek_delayed(self, cmd: p.Command) -> bytes:
        return self._peek_result(self.engine.peek_delayed(self.conn))

    def _peek_buried(self, cmd: p.Command) -> bytes:
        return self._peek_result(self.engine.peek_buried(self.conn))

    # -- tubes ----------------------------------------------------------------------------------

    def _use(self, cmd: p.Use) -> bytes:
        self.engine.use(self.conn, cmd.tube)
        return p.encode_using(cmd.tube)

    def _watch(self, cmd: p.Watch) -> bytes:
        return p.encode_watching(self.engine.watch(self.conn, cmd.tube))

    def _ignore(self, cmd: p.Ignore) -> bytes:
        count = self.engine.ignore(self.conn, cmd.tube)
        return _NOT_IGNORED if count is None else p.encode_watching(count)

    def _pause_tube(self, cmd: p.PauseTube) -> bytes:
        return _PAUSED if self.engine.pause_tube(cmd.tube, cmd.delay) else _NOT_FOUND

    def _list_tube_used(self, cmd: p.Command) -> bytes:
        return p.encode_using(self.engine.list_tube_used(self.conn))

    # -- stats ----------------------------------------------------------------------------------

    def _stats(self, cmd: p.Command) -> bytes:
        return p.encode_ok(p.format_mapping(self.engine.stats()))

    def _stats_job(self, cmd: p.StatsJob) -> bytes:
        stats = self.engine.stats_job(cmd.id)
        return _NOT_FOUND if stats is None else p.encode_ok(p.format_mapping(stats))

    def _stats_tube(self, cmd: p.StatsTube) -> bytes:
        stats = self.engine.stats_tube(cmd.tube)
        return _NOT_FOUND if stats is None else p.encode_ok(p.format_mapping(stats))

    def _list_tubes(self, cmd: p.Command) -> bytes:
        return p.encode_ok(p.format_list(self.engine.list_tubes()))

    def _list_tubes_watched(self, cmd: p.Command) -> bytes:
        return p.encode_ok(p.format_list(self.engine.list_tubes_watched(self.conn)))

    def _quit(self, cmd: p.Command) -> _Control:
        return QUIT


# One table for every session (a per-session dict of bound methods cost each connection 25
# method objects): event type -> the Session method that answers it.
_HANDLERS: dict[type, Callable[[Session, p.Command], bytes | _Control]] = {
    p.Put: Session._put,  # type: ignore[dict-item]
    p.Reserve: Session._reserve,
    p.ReserveWithTimeout: Session._reserve_with_timeout,  # type: ignore[dict-item]
    p.ReserveJob: Session._reserve_job,  # type: ignore[dict-item]
    p.Delete: Session._delete,  # type: ignore[dict-item]
    p.Release: Session._release,  # type: ignore[dict-item]
    p.Bury: Session._bury,  # type: ignore[dict-item]
    p.Touch: Session._touch,  # type: ignore[dict-item]
    p.Use: Session._use,  # type: ignore[dict-item]
    p.Watch: Session._watch,  # type: ignore[dict-item]
    p.Ignore: Session._ignore,  # type: ignore[dict-item]
    p.Peek: Session._peek,  # type: ignore[dict-item]
    p.PeekReady: Session._peek_ready,
    p.PeekDelayed: Session._peek_delayed,
    p.PeekBuried: Session._peek_buried,
    p.Kick: Session._kick,  # type: ignore[dict-item]
    p.KickJob: Session._kick_job,  # type: ignore[dict-item]
    p.StatsJob: Session._stats_job,  # type: ignore[dict-item]
    p.StatsTube: Session._stats_tube,  # type: ignore[dict-item]
    p.Stats: Session._stats,
    p.ListTubes: Session._list_tubes,
    p.ListTubeUsed: Session._list_tube_used,
    p.ListTubesWatched: Session._list_tubes_watched,
    p.PauseTube: Session._pause_tube,  # type: ignore[dict-item]
    p.Quit: Session._quit,
}
