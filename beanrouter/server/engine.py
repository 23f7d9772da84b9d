"""Engine: beanstalkd 1.12's in-memory job/tube core, pure (no I/O, no asyncio), injected clock.

The engine takes parsed values and returns plain values; the dispatch layer turns them into
reply bytes and bumps the ``cmd-*`` counters. Every rule here follows beanstalkd's ``prot.c`` /
``conn.c`` / ``tube.c`` / ``ms.c``; the module docstrings of ``job.py``, ``tube.py``, ``conn.py``
(a session's state) and ``timers.py`` (the per-conn timer heap) describe the containers.
Times are absolute integer nanoseconds from ``clock``; durations in the API are
whole seconds (u32), as on the wire.

Invariants (checked by tests/unit/test_engine.py):
- Global and per-tube counters equal what walking the containers would give.
- A conn is "waiting" iff it is in the ``waiting`` list of every tube it watches, and then it
  issues no commands (beanstalkd does not read commands in STATE_WAIT); only ``disconnect`` and
  ``half_close`` may be called on a waiting conn.
- When no tube is paused, no tube has both waiting conns and ready jobs (``process_queue`` runs
  after every change that could break this). The fast paths of put/reserve rely on it.
- Each conn with a timed event (TTR end, deadline-soon while waiting, reserve timeout) has one
  live entry in the timer heap at or before that event; entries may be early, never late.
- Waking a blocked reserve goes through ``Conn.on_wake`` after the engine call's state updates
  are complete (wakes are queued and flushed at the end of each public method).

Deliberate differences from the C code, all on paths that need two events at the same ns or
hit a beanstalkd timer bug:
- A TTR ends when ``now >= deadline`` (C: ``>``, and a prottick landing exactly on the deadline
  drops the conn from its timer heap, so the job would never time out).
- Delayed jobs of different tubes due at the same ns become ready in (deadline, id) order (C:
  tube-list order).
- beanstalkd's ``conn_set_soonestjob`` can cache a later job as "soonest", and a stale
  ``pending_timeout`` after DEADLINE_SOON can drop a conn from the timer heap; both delay TTR
  expiry until the conn's next command. Here TTRs always end on time.
- If a waiting conn due for DEADLINE_SOON is handed its own just-expired job in the same tick,
  C overwrites the RESERVED reply with DEADLINE_SOON; here it gets RESERVED.

Persistence: with a ``Journal`` set (``-b``), the engine reports the events beanstalkd logs (put,
bury, kick, kick-job, release with a delay, delete) as they happen; space is asked for before
anything changes, so a full disk refuses the command (``OutOfSpace``) and leaves no trace. Unlike
beanstalkd, a release or bury refused that way leaves the job reserved (C loses track of it). No
journal (the default) costs one ``is not None`` test on those paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from heapq import heapify, heappop, heappush
from operator import attrgetter
from typing import Final, Protocol, TypeAlias

from ..protocol import URGENT_THRESHOLD, StatValue
from .conn import DEADLINE_SOON, TIMED_OUT, WAIT, Conn, ReserveOutcome, WakeResult
from .job import (
    BURIED,
    DELAYED,
    INVALID,
    P_BURY,
    P_KICK,
    P_RELEASE,
    P_RESERVE,
    P_TIMEOUT,
    READY,
    RESERVED,
    Job,
)
from .procinfo import ProcInfo
from .timers import NEVER, NS, ConnTimers
from .tube import Tube, ms_remove, ms_take

__all__ = [
    "DEADLINE_SOON",
    "NEVER",
    "NS",
    "OP_COUNTER_NAMES",
    "SAFETY_MARGIN",
    "TIMED_OUT",
    "WAIT",
    "Conn",
    "Draining",
    "Engine",
    "Job",
    "Journal",
    "OutOfSpace",
    "ProcInfo",
    "ReserveOutcome",
    "SavedJob",
    "StatValue",
    "Tube",
    "WakeResult",
]

SAFETY_MARGIN: Final = NS
_ID_MASK: Final = (1 << 64) - 1
"""Ready heaps hold int keys ``(pri - base) << 64 | id`` (see tube.py); this takes the id back
out (also of a negative key: Python's ``&`` works on the two's complement)."""
_PRI_CACHE: Final = 1024
"""Distinct priorities whose int objects the engine keeps to share among jobs (``_shared_pri``)."""


def _ready_key(t: Tube, pri: int, job_id: int) -> int:
    """The key of a ready job in ``t.ready``, whose order is (pri, id): the id object itself when
    the job has the heap's base priority (no int of its own, the common case). An empty heap
    takes the priority of the job pushed first as its base."""
    if not t.ready:
        t.ready_base = pri
    base = t.ready_base
    return job_id if pri == base else ((pri - base) << 64) | job_id


"""beanstalkd's 1 s margin: DEADLINE_SOON when a reserved job's TTR ends within it."""
DEFAULT_BINLOG_MAX_SIZE: Final = 10 << 20

OP_COUNTER_NAMES: Final = (
    "cmd-put",
    "cmd-peek",
    "cmd-peek-ready",
    "cmd-peek-delayed",
    "cmd-peek-buried",
    "cmd-reserve",
    "cmd-reserve-with-timeout",
    "cmd-delete",
    "cmd-release",
    "cmd-use",
    "cmd-watch",
    "cmd-ignore",
    "cmd-bury",
    "cmd-kick",
    "cmd-touch",
    "cmd-stats",
    "cmd-stats-job",
    "cmd-stats-tube",
    "cmd-list-tubes",
    "cmd-list-tube-used",
    "cmd-list-tubes-watched",
    "cmd-pause-tube",
)
"""The ``cmd-*`` keys of ``stats``, in its order."""


SavedJob: TypeAlias = tuple[int, str, int, int, int, bytes, int, int, int, int, int, int]
"""A job read back from the binlog, for ``Engine.restore``: (id, tube, pri, delay, ttr, body,
state, created_at, deadline_at, counts, bury_seq, file); times in absolute ns, ``counts`` packed
as in ``Job.counts``."""


class Draining(Exception):
    """put was refused because the server is in drain mode (the job id is used up)."""


class OutOfSpace(Exception):
    """The journal could not reserve log space (disk full); the reply is ``OUT_OF_MEMORY``.

    Nothing changed, except that a refused put has used up its id (as in beanstalkd)."""


class Journal(Protocol):
    """What the engine tells its persistence layer (beanrouter.server.binlog.Wal implements it).

    Each method records the job as it is at the call (the engine calls it at the moment
    beanstalkd writes its record); the record must be encoded before the method returns.
    """

    def put(self, job: Job) -> bool:
        """Log a new job (READY or DELAYED) and reserve space for its later delete.
        False: no space; the engine then drops the job."""
        ...

    def reserve_update(self) -> bool:
        """Make sure the next ``update`` has room (False: no space). Called before a change."""
        ...

    def update(self, job: Job) -> None:
        """Log a state change (bury, kick, release with delay); room was reserved."""
        ...

    def delete(self, job: Job) -> None:
        """Log the deletion of ``job`` (called just before it goes); uses the space reserved
        at put, so it cannot fail for lack of space."""
        ...


def _trunc_seconds(ns: int) -> int:
    """C's int64 ``ns / 1000000000``: truncates toward zero."""
    return ns // NS if ns >= 0 else -(-ns // NS)


_deadline_of = attrgetter("deadline_at")
_bury_seq_of = attrgetter("bury_seq")


def _heap_fix(h: list[int], i: int) -> None:
    """Restore the heap property around index ``i`` (after h[i] was replaced)."""
    item = h[i]
    start = i
    while i > 0:
        p = (i - 1) >> 1
        parent = h[p]
        if item < parent:
            h[i] = parent
            i = p
        else:
            break
    if i == start:
        n = len(h)
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            r = c + 1
            if r < n and h[r] < h[c]:
                c = r
            child = h[c]
            if child < item:
                h[i] = child
                i = c
            else:
                break
    h[i] = item


class Engine:
    """beanstalkd's job/tube engine.

    Args:
        clock: wall clock in integer ns (beanstalkd uses the wall clock; the binlog keeps
            absolute delay deadlines).
        max_job_size: the ``-z`` limit, reported as max-job-size (the dispatch layer enforces it).
        procinfo: process facts for ``stats``; defaults to the running process.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int] = time.time_ns,
        max_job_size: int = 65535,
        procinfo: ProcInfo | None = None,
    ) -> None:
        self.clock = clock
        self.max_job_size = max_job_size
        self.procinfo = procinfo if procinfo is not None else ProcInfo.current()
        self.draining = False
        self.op_counts: dict[str, int] = dict.fromkeys(OP_COUNTER_NAMES, 0)
        self.binlog_stats: dict[str, int] = {
            "binlog-oldest-index": 0,
            "binlog-current-index": 0,
            "binlog-records-migrated": 0,
            "binlog-records-written": 0,
            "binlog-max-size": DEFAULT_BINLOG_MAX_SIZE,
        }
        """Values shown by ``stats``; a journal may update them in place."""
        self.journal: Journal | None = None
        """Persistence (``-b``); None: nothing is logged."""
        self.epoch = clock()
        self.started_at = self.epoch
        self._pris: dict[int, int] = {}
        """Priority -> the one int object jobs of that priority share (``_shared_pri``)."""
        self.next_id = 1

        self._jobs: dict[int, Job] = {}
        self._tubes: list[Tube] = []  # beanstalkd's global tube ms, in its order
        self._tube_by_name: dict[str, Tube] = {}
        self._paused: dict[Tube, None] = {}  # tubes with pause != 0
        self._waited: dict[Tube, None] = {}  # tubes with waiting conns
        self._delay_heap: list[tuple[int, int, Job]] = []  # all tubes' delay entries
        self._timers = ConnTimers()
        self._bury_seq = 0
        self._wakes: list[tuple[Conn, WakeResult]] = []
        self._direct: Conn | None = None
        self._direct_result: WakeResult | None = None

        self.ready_ct = 0
        self.urgent_ct = 0
        self.reserved_ct = 0
        self.delayed_ct = 0
        self.buried_ct = 0
        self.waiting_ct = 0
        self.timeout_ct = 0
        self.total_jobs = 0
        self.cur_conns = 0
        self.total_conns = 0
        self.producers = 0
        self.workers = 0

        self.default = self._tube_find_or_make("default")
        self.default.refs += 1  # beanstalkd's default_tube holds a reference forever

    # -- sessions -------------------------------------------------------------------------------

    def connect(self) -> Conn:
        """A new client session: uses and watches ``default``."""
        d = self.default
        c = Conn(d)
        d.refs += 2
        d.watching_ct += 1
        d.using_ct += 1
        self.cur_conns += 1
        self.total_conns += 1
        return c

    def disconnect(self, conn: Conn) -> None:
        """beanstalkd's ``connclose``: the conn's reserved jobs go straight back to ready (no
        counters), it stops waiting, and its tube references go (tubes vanish when unreferenced).
        Idempotent."""
        c = conn
        if c.closed:
            return
        c.closed = True
        if c.producer:
            self.producers -= 1
        if c.worker:
            self.workers -= 1
        self.cur_conns -= 1
        if c.waiting:
            self._unwait(c)
        if c.reserved:
            now = self.clock()
            for j in list(c.reserved.values()):
                self._unreserve(c, j)
                self._enqueue(j, 0, now)
        # ms_clear: removes index 0 until empty (the last item moves to the front each time),
        # which fixes the order in which unreferenced tubes leave the tube list.
        w = c.watch
        while w:
            t = w[0]
            last = w.pop()
            if w:
                w[0] = last
            t.watching_ct -= 1
            self._tube_dref(t)
        u = c.use
        u.using_ct -= 1
        self._tube_dref(u)
        self._timers.drop(c)
        self._flush()

    def half_close(self, conn: Conn) -> None:
        """The peer shut its write side (epoll RDHUP). A waiting reserve answers TIMED_OUT now;
        later reserves that would block answer TIMED_OUT at once (after the timed events due
        now, as beanstalkd's next loop iteration would)."""
        c = conn
        c.half_closed = True
        if c.waiting:
            self._unwait(c)
            c.wait_deadline = NEVER
            self._wake(c, TIMED_OUT)
            self._flush()

    # -- ids and put ----------------------------------------------------------------------------

    def new_id(self, conn: Conn | None = None) -> int:
        """Take the next job id (beanstalkd takes it when the put line parses). With ``conn``,
        also marks it a producer, as beanstalkd does at that moment."""
        job_id = self.next_id
        self.next_id = job_id + 1
        if conn is not None and not conn.producer:
            conn.producer = True
            self.producers += 1
        return job_id

    def _shared_pri(self, pri: int) -> int:
        """``pri`` as the int object every job of that priority holds: a parsed priority is a
        new object each time (CPython shares only -5..256), 32 bytes per job otherwise. Up to
        ``_PRI_CACHE`` distinct priorities are kept; beyond, each job keeps its own."""
        shared = self._pris.get(pri)
        if shared is not None:
            return shared
        if len(self._pris) < _PRI_CACHE:
            self._pris[pri] = pri
        return pri

    def burn_id(self, conn: Conn | None = None) -> None:
        """Use up an id (a put that ends in EXPECTED_CRLF)."""
        self.new_id(conn)

    def mark_producer(self, conn: Conn) -> None:
        """Count ``conn`` in current-producers (beanstalkd: any put line that parses)."""
        if not conn.producer:
            conn.producer = True
            self.producers += 1

    def put(
        self,
        conn: Conn,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        job_id: int | None = None,
    ) -> int:
        """Insert a job into ``conn``'s used tube; returns its id.

        Args:
            pri: priority (u32). delay: seconds before it is ready (u32). ttr: seconds (0 -> 1).
            body: the data without its CRLF.
            job_id: an id taken earlier with ``new_id`` (at the put line); else one is taken now.

        Raises:
            Draining: drain mode; the id is used up all the same.
            OutOfSpace: the journal has no room; the id is used up all the same.
        """
        now = self.clock()
        if job_id is None:
            job_id = self.next_id
            self.next_id = job_id + 1
        shared = self._pris.get(pri)  # _shared_pri, inline on this hot path
        pri = self._shared_pri(pri) if shared is None else shared
        c = conn
        if not c.producer:
            c.producer = True
            self.producers += 1
        if self.draining:
            raise Draining
        t = c.use
        j = Job(job_id, pri, delay, ttr if ttr > 0 else 1, body, t, now - self.epoch)
        journal = self.journal
        if journal is not None:
            # Logged as beanstalkd logs it: ready or delayed, before a waiter may take it.
            if delay:
                j.state = DELAYED
                j.deadline_at = now + delay * NS
            else:
                j.state = READY
            if not journal.put(j):
                raise OutOfSpace
        self._jobs[job_id] = j
        t.refs += 1
        self.total_jobs += 1
        t.total_jobs += 1
        if delay or self._paused or t.waiting:
            self._enqueue(j, delay, now)
            self._flush()
        else:  # the hot path of _enqueue
            j.state = READY
            h = t.ready
            if not h:
                t.ready_base = pri
            base = t.ready_base
            heappush(h, job_id if pri == base else ((pri - base) << 64) | job_id)
            t.ready_ct += 1
            self.ready_ct += 1
            if pri < URGENT_THRESHOLD:
                t.urgent_ct += 1
                self.urgent_ct += 1
        return job_id

    # -- reserving ------------------------------------------------------------------------------

    def reserve(self, conn: Conn, timeout: int | None) -> Job | ReserveOutcome:
        """reserve (``timeout`` None or negative) or reserve-with-timeout (seconds).

        Returns the reserved Job, DEADLINE_SOON, TIMED_OUT, or WAIT: then the conn waits and its
        answer comes through ``conn.on_wake`` from a later engine call (put, release, kick,
        tick, disconnect of another conn...). A timeout of 0 never waits.
        """
        c = conn
        if c.waiting:
            raise RuntimeError("reserve on a conn that is already waiting")
        now = self.clock()
        if not c.worker:
            c.worker = True
            self.workers += 1
        if (
            c.reserved
            and self._soonest(c).deadline_at - SAFETY_MARGIN <= now
            and not self._conn_ready(c)
        ):
            return DEADLINE_SOON
        if timeout is not None and timeout < 0:
            timeout = None
        if not self._paused:
            # Fast path. No tube is paused, so no tube has both waiters and ready jobs: the best
            # ready job among the watched tubes goes to this conn, exactly as wait_for_job +
            # process_queue would do (ms_take on a one-element waiting set leaves cursor 1).
            watch = c.watch
            if len(watch) == 1:
                t = watch[0]
                if t.ready_ct:
                    j = self._pop_ready(t)
                    t.waiting_last = 1
                    self._reserve_to(c, j, now)
                    return j
            else:
                best = -1
                for t in watch:
                    if t.ready_ct:
                        top = t.ready[0]
                        if t.ready_base:
                            top += t.ready_base << 64
                        if best < 0 or top < best:
                            best = top
                if best >= 0:
                    t = self._jobs[best & _ID_MASK].tube
                    j = self._pop_ready(t)
                    t.waiting_last = 1
                    self._reserve_to(c, j, now)
                    return j
            self._wait(c, timeout, now)
            if not c.half_closed and self._tickat(c) > now:
                return WAIT
        else:
            self._wait(c, timeout, now)
        self._direct = c
        try:
            if self._paused:
                self._process_queue(now)
            if c.waiting and (c.half_closed or self._tickat(c) <= now):
                # beanstalkd answers these from its next loop iteration: prottick first (due
                # delayed jobs, unpauses, TTRs, this conn's own timeout), then RDHUP.
                self._tick(now)
                if c.waiting and c.half_closed:
                    self._unwait(c)
                    c.wait_deadline = NEVER
                    self._direct_result = TIMED_OUT
            result = self._direct_result
        finally:
            self._direct = None
            self._direct_result = None
        self._flush()
        return WAIT if result is None else result

    def reserve_job(self, conn: Conn, job_id: int) -> Job | None:
        """reserve-job: reserve a ready, delayed or buried job by id, whatever its tube, watch
        list or pause. None (NOT_FOUND) if unknown or reserved by anyone."""
        j = self._jobs.get(job_id)
        if j is None or j.state == RESERVED:
            return None
        now = self.clock()
        t = j.tube
        st = j.state
        if st == READY:
            self._remove_ready(t, j)
        elif st == BURIED:
            self._unbury(j)
            self._compact_buried(t)
        else:
            t.delay_ct -= 1
            self.delayed_ct -= 1
            self._compact_delay(t)
        if not conn.worker:
            conn.worker = True
            self.workers += 1
        self._reserve_to(conn, j, now)
        return j

    # -- job commands ---------------------------------------------------------------------------

    def delete(self, conn: Conn, job_id: int) -> bool:
        """delete: any ready, delayed or buried job; a reserved one only by its reserver."""
        j = self._jobs.get(job_id)
        if j is None:
            return False
        t = j.tube
        st = j.state
        if st == RESERVED and j.reserver is not conn:
            return False
        if self.journal is not None:
            self.journal.delete(j)
        if st == RESERVED:
            self._unreserve(conn, j)
            j.state = INVALID
        elif st == READY:
            t.ready_ct -= 1
            self.ready_ct -= 1
            if j.pri < URGENT_THRESHOLD:
                t.urgent_ct -= 1
                self.urgent_ct -= 1
            j.state = INVALID  # stays in the heap as a dead entry, without its body
            j.body = b""
            t.ready_dead += 1
            if t.ready[0] & _ID_MASK == job_id:
                self._clean_ready_top(t)
            elif t.ready_dead > 64 and t.ready_dead > t.ready_ct:
                h = t.ready
                jobs = self._jobs
                h[:] = [k for k in h if (x := jobs.get(k & _ID_MASK)) and x.state == READY]
                heapify(h)
                t.ready_dead = 0
        elif st == BURIED:
            self._unbury(j)
            j.state = INVALID
            self._compact_buried(t)
        else:
            t.delay_ct -= 1
            self.delayed_ct -= 1
            j.state = INVALID
            self._compact_delay(t)
        t.delete_ct += 1
        del self._jobs[job_id]
        self._tube_dref(t)
        return True

    def release(self, conn: Conn, job_id: int, pri: int, delay: int) -> bool:
        """release: own reserved job back to ready (delay 0) or delayed, with a new pri.

        Raises:
            OutOfSpace: a delayed release could not be logged; the job stays reserved.
        """
        j = self._jobs.get(job_id)
        if j is None or j.state != RESERVED or j.reserver is not conn:
            return False
        journal = self.journal if delay else None
        if journal is not None and not journal.reserve_update():
            raise OutOfSpace
        now = self.clock()
        self._unreserve(conn, j)
        j.pri = self._shared_pri(pri)
        j.delay = delay
        j.packed += P_RELEASE
        self._enqueue(j, delay, now)
        if journal is not None:
            journal.update(j)
        self._flush()
        return True

    def bury(self, conn: Conn, job_id: int, pri: int) -> bool:
        """bury: own reserved job to the end of its tube's buried FIFO, with a new pri.

        Raises:
            OutOfSpace: the bury could not be logged; the job stays reserved.
        """
        j = self._jobs.get(job_id)
        if j is None or j.state != RESERVED or j.reserver is not conn:
            return False
        journal = self.journal
        if journal is not None and not journal.reserve_update():
            raise OutOfSpace
        self._unreserve(conn, j)
        j.pri = self._shared_pri(pri)
        self._bury(j)
        if journal is not None:
            journal.update(j)
        return True

    def touch(self, conn: Conn, job_id: int) -> bool:
        """touch: own reserved job's deadline becomes now + ttr."""
        j = self._jobs.get(job_id)
        if j is None or j.state != RESERVED or j.reserver is not conn:
            return False
        d = self.clock() + j.ttr * NS
        j.deadline_at = d
        if conn.soonest is j:
            conn.soonest = None
        if d < conn.timer_at:  # only if the clock went back
            self._timers.arm(conn, d)
        return True

    def kick(self, conn: Conn, bound: int) -> int:
        """kick: up to ``bound`` jobs of the used tube: buried ones (FIFO) if there are any,
        else delayed ones (earliest deadline first). Returns how many (with a journal, kicking
        stops early when a kick cannot be logged, as in beanstalkd)."""
        t = conn.use
        n = 0
        journal = self.journal
        if t.buried_ct:
            now = self.clock()
            while n < bound:
                j = self._buried_head(t)
                if j is None or (journal is not None and not journal.reserve_update()):
                    break
                self._kick_buried(j, now)
                n += 1
        elif t.delay_ct:
            now = self.clock()
            while n < bound:
                j = self._delay_top(t)
                if j is None or (journal is not None and not journal.reserve_update()):
                    break
                self._kick_delayed(j, now)
                n += 1
        self._flush()
        return n

    def kick_job(self, conn: Conn, job_id: int) -> bool:
        """kick-job: a buried or delayed job (any tube) to ready.

        Raises:
            OutOfSpace: the kick could not be logged (beanstalkd answers NOT_FOUND then).
        """
        j = self._jobs.get(job_id)
        if j is None:
            return False
        st = j.state
        if st not in (BURIED, DELAYED):
            return False
        if self.journal is not None and not self.journal.reserve_update():
            raise OutOfSpace
        if st == BURIED:
            self._kick_buried(j, self.clock())
            self._compact_buried(j.tube)
        else:
            self._kick_delayed(j, self.clock())
            self._compact_delay(j.tube)
        self._flush()
        return True

    # -- peeks ----------------------------------------------------------------------------------

    def peek(self, job_id: int) -> Job | None:
        """peek: any job by id, whatever its state or tube."""
        return self._jobs.get(job_id)

    def peek_ready(self, conn: Conn) -> Job | None:
        """peek-ready: the used tube's lowest (pri, id) ready job (even if paused)."""
        t = conn.use
        return self._jobs[t.ready[0] & _ID_MASK] if t.ready_ct else None

    def peek_delayed(self, conn: Conn) -> Job | None:
        """peek-delayed: the used tube's delayed job with the earliest (deadline, id)."""
        return self._delay_top(conn.use)

    def peek_buried(self, conn: Conn) -> Job | None:
        """peek-buried: the head of the used tube's buried FIFO."""
        return self._buried_head(conn.use)

    def created_at(self, job: Job) -> int:
        """The job's creation time in absolute ns."""
        return self.epoch + job.created_at

    # -- tubes ----------------------------------------------------------------------------------

    def use(self, conn: Conn, tube: str) -> None:
        """use: the new tube is made (appended to the tube list) before the old one is dropped."""
        t = self._tube_find_or_make(tube)
        t.refs += 1
        old = conn.use
        old.using_ct -= 1
        conn.use = t
        self._tube_dref(old)
        t.using_ct += 1

    def watch(self, conn: Conn, tube: str) -> int:
        """watch: returns the number of watched tubes (watching twice changes nothing)."""
        t = self._tube_find_or_make(tube)
        w = conn.watch
        if not any(x is t for x in w):
            w.append(t)
            t.refs += 1
            t.watching_ct += 1
        return len(w)

    def ignore(self, conn: Conn, tube: str) -> int | None:
        """ignore: returns the watched count, or None (NOT_IGNORED) for the only watched tube.
        An unwatched name leaves the count unchanged."""
        w = conn.watch
        for t in w:
            if t.name == tube:
                if len(w) < 2:
                    return None
                ms_remove(w, t)
                t.watching_ct -= 1
                self._tube_dref(t)
                break
        return len(w)

    def list_tubes(self) -> list[str]:
        """list-tubes, in beanstalkd's order (creation order; a removed tube's slot is filled by
        the last one)."""
        return [t.name for t in self._tubes]

    def list_tubes_watched(self, conn: Conn) -> list[str]:
        """list-tubes-watched, in the same ms order."""
        return [t.name for t in conn.watch]

    def list_tube_used(self, conn: Conn) -> str:
        """list-tube-used."""
        return conn.use.name

    def pause_tube(self, tube: str, delay: int) -> bool:
        """pause-tube for ``delay`` seconds; 0 pauses for 1 ns (beanstalkd 1.12), which lifts the
        pause at the next tick. False (NOT_FOUND) for an unknown tube."""
        t = self._tube_by_name.get(tube)
        if t is None:
            return False
        d = delay * NS if delay else 1
        t.unpause_at = self.clock() + d
        t.pause = d
        t.pause_ct += 1
        self._paused[t] = None
        return True

    def tube(self, name: str) -> Tube | None:
        """The live tube called ``name``, if any."""
        return self._tube_by_name.get(name)

    # -- time -----------------------------------------------------------------------------------

    def next_wakeup(self) -> int | None:
        """Absolute ns of the next timed event (a delayed job due, an unpause, a TTR end, a
        deadline-soon or reserve timeout of a waiting conn), or None if there is none."""
        best = NEVER
        dh = self._delay_heap
        while dh:
            d, _, j = dh[0]
            if j.state == DELAYED and j.deadline_at == d:
                best = d
                break
            heappop(dh)
        for t in self._paused:
            if t.unpause_at < best:
                best = t.unpause_at
        timers = self._timers
        while (entry := timers.first()) is not None:
            at, _, c = entry
            exact = self._tickat(c)
            if exact > at:  # an early entry: move it to the real time
                timers.pop_first()
                if exact != NEVER:
                    timers.arm(c, exact)
                continue
            if at < best:
                best = at
            break
        return None if best == NEVER else best

    def tick(self) -> None:
        """Process everything due at ``clock()`` (beanstalkd's ``prottick``): delayed jobs become
        ready, expired pauses lift, TTRs end, waiting conns get DEADLINE_SOON or TIMED_OUT."""
        self._tick(self.clock())
        self._flush()

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, StatValue]:
        """The 51 ``stats`` fields in beanstalkd's order (``version`` unquoted: the formatter
        quotes it; ``draining`` a bool)."""
        now = self.clock()
        pi = self.procinfo
        utime, stime = pi.rusage()
        s: dict[str, StatValue] = {
            "current-jobs-urgent": self.urgent_ct,
            "current-jobs-ready": self.ready_ct,
            "current-jobs-reserved": self.reserved_ct,
            "current-jobs-delayed": self.delayed_ct,
            "current-jobs-buried": self.buried_ct,
        }
        s.update(self.op_counts)
        s["job-timeouts"] = self.timeout_ct
        s["total-jobs"] = self.total_jobs
        s["max-job-size"] = self.max_job_size
        s["current-tubes"] = len(self._tubes)
        s["current-connections"] = self.cur_conns
        s["current-producers"] = self.producers
        s["current-workers"] = self.workers
        s["current-waiting"] = self.waiting_ct
        s["total-connections"] = self.total_conns
        s["pid"] = pi.pid
        s["version"] = pi.version
        s["rusage-utime"] = utime
        s["rusage-stime"] = stime
        s["uptime"] = (now - self.started_at) // NS
        s.update(self.binlog_stats)
        s["draining"] = self.draining
        s["id"] = pi.instance_id
        s["hostname"] = pi.hostname
        s["os"] = pi.os
        s["platform"] = pi.platform
        return s

    def stats_job(self, job_id: int) -> dict[str, int | str] | None:
        """The 14 ``stats-job`` fields, or None (NOT_FOUND)."""
        j = self._jobs.get(job_id)
        if j is None:
            return None
        now = self.clock()
        st = j.state
        time_left = _trunc_seconds(j.deadline_at - now) if st in (RESERVED, DELAYED) else 0
        return {
            "id": j.id,
            "tube": j.tube.name,
            "state": j.state_name,
            "pri": j.pri,
            "age": _trunc_seconds(now - self.epoch - j.created_at),
            "delay": j.delay,
            "ttr": j.ttr,
            "time-left": time_left,
            "file": j.file,
            "reserves": j.reserves,
            "timeouts": j.timeouts,
            "releases": j.releases,
            "buries": j.buries,
            "kicks": j.kicks,
        }

    def stats_tube(self, tube: str) -> dict[str, int | str] | None:
        """The 14 ``stats-tube`` fields, or None (NOT_FOUND)."""
        t = self._tube_by_name.get(tube)
        if t is None:
            return None
        left = _trunc_seconds(t.unpause_at - self.clock()) if t.pause > 0 else 0
        return {
            "name": t.name,
            "current-jobs-urgent": t.urgent_ct,
            "current-jobs-ready": t.ready_ct,
            "current-jobs-reserved": t.reserved_ct,
            "current-jobs-delayed": t.delay_ct,
            "current-jobs-buried": t.buried_ct,
            "total-jobs": t.total_jobs,
            "current-using": t.using_ct,
            "current-watching": t.watching_ct,
            "current-waiting": len(t.waiting),
            "cmd-delete": t.delete_ct,
            "cmd-pause-tube": t.pause_ct,
            "pause": t.pause // NS,
            "pause-time-left": left,
        }

    # -- internals: tubes -----------------------------------------------------------------------

    def _tube_find_or_make(self, name: str) -> Tube:
        t = self._tube_by_name.get(name)
        if t is None:
            t = Tube(name)
            self._tubes.append(t)
            self._tube_by_name[name] = t
        return t

    def _tube_dref(self, t: Tube) -> None:
        t.refs -= 1
        if t.refs < 1:
            ms_remove(self._tubes, t)
            del self._tube_by_name[t.name]
            self._paused.pop(t, None)
            self._waited.pop(t, None)

    def _conn_ready(self, c: Conn) -> bool:
        # conn_ready: any watched tube with a ready job, paused or not (beanstalkd's quirk).
        return any(t.ready_ct for t in c.watch)

    # -- internals: ready heaps -----------------------------------------------------------------

    def _pop_ready(self, t: Tube) -> Job:
        """Pop the (live) top of ``t``'s ready heap, with its counters."""
        j = self._jobs[heappop(t.ready) & _ID_MASK]
        t.ready_ct -= 1
        self.ready_ct -= 1
        if j.pri < URGENT_THRESHOLD:
            t.urgent_ct -= 1
            self.urgent_ct -= 1
        if t.ready_dead:
            self._clean_ready_top(t)
        return j

    def _remove_ready(self, t: Tube, j: Job) -> None:
        """Take a ready job out of the middle of the heap, eagerly: the job lives on and its pri
        may change, so it must not linger in the heap."""
        h = t.ready
        i = h.index(_ready_key(t, j.pri, j.id))  # O(n), reserve-job only
        last = h.pop()
        if i < len(h):
            h[i] = last
            _heap_fix(h, i)
        t.ready_ct -= 1
        self.ready_ct -= 1
        if j.pri < URGENT_THRESHOLD:
            t.urgent_ct -= 1
            self.urgent_ct -= 1
        if t.ready_dead:
            self._clean_ready_top(t)

    def _clean_ready_top(self, t: Tube) -> None:
        h = t.ready
        jobs = self._jobs
        while h:  # only deleted jobs leave dead entries (gone, or INVALID while deleting)
            j = jobs.get(h[0] & _ID_MASK)
            if j is not None and j.state == READY:
                break
            heappop(h)
            t.ready_dead -= 1

    # -- internals: delayed and buried ----------------------------------------------------------

    def _delay_top(self, t: Tube) -> Job | None:
        h = t.delay
        while h:
            d, _, j = h[0]
            if j.state == DELAYED and j.deadline_at == d:
                return j
            heappop(h)
        return None

    def _compact_delay(self, t: Tube) -> None:
        h = t.delay
        if len(h) > 2 * t.delay_ct + 64:
            h[:] = [e for e in h if e[2].state == DELAYED and e[2].deadline_at == e[0]]
            heapify(h)
        h = self._delay_heap
        if len(h) > 2 * self.delayed_ct + 64:
            h[:] = [e for e in h if e[2].state == DELAYED and e[2].deadline_at == e[0]]
            heapify(h)

    def _buried_head(self, t: Tube) -> Job | None:
        q = t.buried
        while q:
            seq, j = q[0]
            if j.state == BURIED and j.bury_seq == seq:
                return j
            q.popleft()
        return None

    def _compact_buried(self, t: Tube) -> None:
        q = t.buried
        if len(q) > 2 * t.buried_ct + 64:
            live = [e for e in q if e[1].state == BURIED and e[1].bury_seq == e[0]]
            q.clear()
            q.extend(live)

    def _bury(self, j: Job) -> None:
        t = j.tube
        seq = self._bury_seq = self._bury_seq + 1
        j.bury_seq = seq
        t.buried.append((seq, j))
        t.buried_ct += 1
        self.buried_ct += 1
        j.state = BURIED
        j.reserver = None
        j.packed += P_BURY

    def _unbury(self, j: Job) -> None:
        """Counters only; the FIFO entry goes stale when the caller changes ``j.state``."""
        t = j.tube
        t.buried_ct -= 1
        self.buried_ct -= 1

    def _kick_buried(self, j: Job, now: int) -> None:
        self._unbury(j)
        j.packed += P_KICK
        if self.journal is not None:
            self._log_kick(j)
        self._enqueue(j, 0, now)

    def _kick_delayed(self, j: Job, now: int) -> None:
        t = j.tube
        t.delay_ct -= 1
        self.delayed_ct -= 1
        j.packed += P_KICK
        if self.journal is not None:
            self._log_kick(j)
        self._enqueue(j, 0, now)

    def _log_kick(self, j: Job) -> None:
        """Log a kicked job as ready, before a waiter may take it (beanstalkd logs it then)."""
        assert self.journal is not None
        j.state = READY
        self.journal.update(j)

    # -- internals: enqueue and the waiting queue -----------------------------------------------

    def _enqueue(self, j: Job, delay: int, now: int) -> None:
        """beanstalkd's ``enqueue_job`` followed by its ``process_queue``."""
        j.reserver = None
        t = j.tube
        if delay:
            d = now + delay * NS
            j.deadline_at = d
            j.state = DELAYED
            e = (d, j.id, j)
            heappush(t.delay, e)
            heappush(self._delay_heap, e)
            t.delay_ct += 1
            self.delayed_ct += 1
            if self._paused:
                self._process_queue(now)
            return
        j.state = READY
        if not self._paused:
            w = t.waiting
            if w:  # the tube had waiters, hence no ready job: this one goes to ms_take's pick
                c, t.waiting_last = ms_take(w, t.waiting_last)
                self._unwait(c, t)
                self._reserve_to(c, j, now)
                self._wake(c, j)
                return
            heappush(t.ready, _ready_key(t, j.pri, j.id))
            t.ready_ct += 1
            self.ready_ct += 1
            if j.pri < URGENT_THRESHOLD:
                t.urgent_ct += 1
                self.urgent_ct += 1
            return
        heappush(t.ready, _ready_key(t, j.pri, j.id))
        t.ready_ct += 1
        self.ready_ct += 1
        if j.pri < URGENT_THRESHOLD:
            t.urgent_ct += 1
            self.urgent_ct += 1
        self._process_queue(now)

    def _process_queue(self, now: int) -> None:
        """beanstalkd's ``process_queue``: lift expired pauses, then while some unpaused tube has
        both waiters and ready jobs, give the best such job (lowest pri, id over those tubes) to
        the waiter ``ms_take`` picks in its tube."""
        paused = self._paused
        if paused:
            for t in [t for t in paused if t.unpause_at <= now]:
                t.pause = 0
                del paused[t]
        waited = self._waited
        while waited:
            best = -1
            for t in waited:
                if t.ready_ct and not t.pause:
                    top = t.ready[0]
                    if t.ready_base:
                        top += t.ready_base << 64
                    if best < 0 or top < best:
                        best = top
            if best < 0:
                return
            t = self._jobs[best & _ID_MASK].tube
            j = self._pop_ready(t)
            c, t.waiting_last = ms_take(t.waiting, t.waiting_last)
            self._unwait(c, t)
            self._reserve_to(c, j, now)
            self._wake(c, j)

    def _wait(self, c: Conn, timeout: int | None, now: int) -> None:
        c.waiting = True
        self.waiting_ct += 1
        waited = self._waited
        for t in c.watch:
            t.waiting.append(c)
            waited[t] = None
        c.wait_deadline = NEVER if timeout is None else now + timeout * NS
        self._rearm(c)

    def _unwait(self, c: Conn, taken_from: Tube | None = None) -> None:
        """beanstalkd's ``remove_waiting_conn``; ``taken_from``: the tube whose ms_take already
        removed ``c``."""
        c.waiting = False
        self.waiting_ct -= 1
        for t in c.watch:
            w = t.waiting
            if t is not taken_from:
                ms_remove(w, c)
            if not w:
                self._waited.pop(t, None)

    def _wake(self, c: Conn, result: WakeResult) -> None:
        if c is self._direct:
            self._direct_result = result
        else:
            self._wakes.append((c, result))

    def _flush(self) -> None:
        wakes = self._wakes
        if wakes:
            self._wakes = []
            for c, result in wakes:
                c.on_wake(result)

    # -- internals: reservations and timers -----------------------------------------------------

    def _reserve_to(self, c: Conn, j: Job, now: int) -> None:
        """beanstalkd's ``conn_reserve_job`` (plus the global reserved count). ``c`` is not
        waiting."""
        t = j.tube
        t.reserved_ct += 1
        self.reserved_ct += 1
        j.packed += P_RESERVE
        d = now + j.ttr * NS
        j.deadline_at = d
        j.state = RESERVED
        j.reserver = c
        r = c.reserved
        r[j.id] = j
        c.wait_deadline = NEVER
        s = c.soonest
        if s is None:
            if len(r) == 1:
                c.soonest = j
        elif d < s.deadline_at:
            c.soonest = j
        if d < c.timer_at:
            self._timers.arm(c, d)

    def _unreserve(self, c: Conn, j: Job) -> None:
        del c.reserved[j.id]
        self.reserved_ct -= 1
        j.tube.reserved_ct -= 1
        j.reserver = None
        if c.soonest is j:
            c.soonest = None

    def _soonest(self, c: Conn) -> Job:
        """The reserved job with the earliest deadline (first reserved on ties); c.reserved must
        not be empty."""
        s = c.soonest
        if s is None:
            s = c.soonest = min(c.reserved.values(), key=_deadline_of)
        return s

    def _tickat(self, c: Conn) -> int:
        """beanstalkd's ``conntickat``: when ``c`` next needs attention (NEVER if never)."""
        at = NEVER
        if c.reserved:
            at = self._soonest(c).deadline_at
            if c.waiting:
                at -= SAFETY_MARGIN
        if c.waiting and c.wait_deadline < at:
            at = c.wait_deadline
        return at

    def _rearm(self, c: Conn) -> None:
        at = self._tickat(c)
        if at < c.timer_at:
            self._timers.arm(c, at)

    def _tick(self, now: int) -> None:
        # 1. Delayed jobs that are due, earliest first.
        dh = self._delay_heap
        while dh and dh[0][0] <= now:
            d, _, j = heappop(dh)
            if j.state != DELAYED or j.deadline_at != d:
                continue
            t = j.tube
            t.delay_ct -= 1
            self.delayed_ct -= 1
            self._enqueue(j, 0, now)
            self._delay_top(t)  # drop the job's now stale entry from its tube's heap
        # 2. Expired pauses (process_queue lifts them all and serves their waiters).
        if self._paused and any(t.unpause_at <= now for t in self._paused):
            self._process_queue(now)
        # 3. Conns whose time has come, in time order.
        timers = self._timers
        while (entry := timers.first()) is not None and entry[0] <= now:
            at, _, c = entry
            timers.pop_first()
            exact = self._tickat(c)
            if exact > at:
                if exact != NEVER:
                    timers.arm(c, exact)
                continue
            self._conn_timeout(c, now)

    def _conn_timeout(self, c: Conn, now: int) -> None:
        """beanstalkd's ``conn_timeout``."""
        deadline_soon = (
            c.waiting and bool(c.reserved) and self._soonest(c).deadline_at - SAFETY_MARGIN <= now
        )
        while c.reserved:
            j = self._soonest(c)
            if j.deadline_at > now:
                break
            self.timeout_ct += 1
            j.packed += P_TIMEOUT
            self._unreserve(c, j)
            self._enqueue(j, 0, now)
        if c.waiting:
            if deadline_soon:
                self._unwait(c)
                self._wake(c, DEADLINE_SOON)
            elif c.wait_deadline <= now:
                self._unwait(c)
                c.wait_deadline = NEVER
                self._wake(c, TIMED_OUT)
        self._rearm(c)

    # -- restoring from a binlog -----------------------------------------------------------------

    def restore(self, tubes: Iterable[str], jobs: Iterable[SavedJob]) -> None:
        """Load jobs read back from the binlog (beanstalkd's replay); nothing is logged.

        Call before any connection exists. Reserved jobs come back ready; buried ones keep their
        FIFO order (by ``bury_seq``; later buries get higher stamps) and, as in beanstalkd (its
        replay buries them anew), their ``buries`` counter goes up by one; delayed ones keep their
        absolute deadline (ready if it has passed). ``next_id`` becomes at least the highest
        id + 1. Counters total-jobs and the cmd-* ones are not restored (nor are they in C).

        Args:
            tubes: tube names in list-tubes order; each must be the tube of some job.
            jobs: ``SavedJob`` tuples, each id not yet known.
        """
        now = self.clock()
        epoch = self.epoch
        for name in tubes:
            self._tube_find_or_make(name)
        buried: list[Job] = []
        changed: dict[Tube, None] = {}
        all_jobs = self._jobs
        delay_heap = self._delay_heap
        for job_id, tube, pri, delay, ttr, body, state, created, deadline, counts, bseq, f in jobs:
            t = self._tube_find_or_make(tube)
            pri = self._shared_pri(pri)
            j = Job(job_id, pri, delay, ttr, body, t, created - epoch)
            j.counts = counts
            j.file = f
            all_jobs[job_id] = j
            t.refs += 1
            if job_id >= self.next_id:
                self.next_id = job_id + 1
            changed[t] = None
            if state == BURIED:
                j.bury_seq = bseq
                buried.append(j)
            elif state == DELAYED and deadline > now:
                j.state = DELAYED
                j.deadline_at = deadline
                e = (deadline, job_id, j)
                t.delay.append(e)
                delay_heap.append(e)
                t.delay_ct += 1
                self.delayed_ct += 1
            else:
                j.state = READY
                t.ready.append(_ready_key(t, pri, job_id))
                t.ready_ct += 1
                self.ready_ct += 1
                if pri < URGENT_THRESHOLD:
                    t.urgent_ct += 1
                    self.urgent_ct += 1
        for t in changed:
            heapify(t.ready)
            heapify(t.delay)
        heapify(delay_heap)
        buried.sort(key=_bury_seq_of)
        for j in buried:
            t = j.tube
            j.state = BURIED
            j.packed += P_BURY
            t.buried.append((j.bury_seq, j))
            t.buried_ct += 1
            self.buried_ct += 1
            if j.bury_seq > self._bury_seq:
                self._bury_seq = j.bury_seq

    # -- introspection for tests ----------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """All live jobs (for tests and tools; O(n))."""
        return list(self._jobs.values())

    def tubes(self) -> list[Tube]:
        """All live tubes in list-tubes order."""
        return list(self._tubes)
