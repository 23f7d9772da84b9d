"""Memory per stored job in the bundled server's engine, measured in-process: ``sys.getsizeof``
and ``tracemalloc`` (deterministic: no timing, no RSS). The benchmark that compares with
beanstalkd's RSS is ``benchmarks/server_vs_beanstalkd.py --only memory`` (docs/benchmarks.md).
"""

from __future__ import annotations

import sys
import tracemalloc

from beanrouter.server.engine import NS, Conn, Engine
from beanrouter.server.job import Job
from beanrouter.server.procinfo import ProcInfo

N = 20_000
BODY = 100
PRI = "65536"  # greenstalk's and pystalk's default priority; beanstalkc's is 2**31


class TickingClock:
    """A clock that moves 1.5 ms per reading, so jobs get creation times of their own."""

    def __init__(self) -> None:
        self.t = 1_700_000_000 * NS

    def __call__(self) -> int:
        self.t += 1_500_000
        return self.t


def _engine() -> tuple[Engine, Conn]:
    eng = Engine(clock=TickingClock(), procinfo=ProcInfo.fixed())
    return eng, eng.connect()


def _put(eng: Engine, conn: Conn, i: int) -> int:
    # As the codec hands them over: a priority parsed from the line (a new int object each time)
    # and a body of its own.
    return eng.put(conn, int(PRI), 0, 120, b"%0*d" % (BODY, i))


def _traced() -> int:
    return tracemalloc.get_traced_memory()[0]


def test_a_job_record_is_in_the_112_byte_size_class() -> None:
    """CPython's allocator gives objects out in multiples of 16 bytes: 13 slots (136 bytes) took
    144, the 10 slots of a job take 112. No ``__dict__``."""
    eng, conn = _engine()
    job = eng.peek(_put(eng, conn, 1))
    assert job is not None
    assert not hasattr(job, "__dict__")
    assert sys.getsizeof(job) <= 112
    assert len(Job.__slots__) == 10


def test_jobs_share_their_priority_and_their_heap_key_is_their_id() -> None:
    eng, conn = _engine()
    jobs = [eng.peek(_put(eng, conn, i)) for i in range(3)]
    assert all(j is not None for j in jobs)
    a, b, c = (j for j in jobs if j is not None)
    assert a.pri == 65536 and a.pri is b.pri is c.pri  # one int object for the priority
    tube = a.tube
    for j in (a, b, c):  # the tube's base priority: the heap holds the job's own id object
        assert any(key is j.id for key in tube.ready)
    assert (a.packed, b.packed) == (0, 0)  # delay, file, bury stamp, counters: no int at all


def test_memory_per_ready_job_is_its_record_body_id_and_creation_time() -> None:
    """What a ready 100-byte job of a client's default priority costs the engine: its record, its
    body, its id and its creation time (the only ints of its own), an entry in the id table and a
    slot in its tube's heap; nothing more (a priority object, a heap key: 64 bytes more before)."""
    eng, conn = _engine()
    _put(eng, conn, 0)  # the tube, its heap and the priority cache exist
    keys = [10**9 + i for i in range(N)]  # the id table's and the heap's own cost, alone
    tracemalloc.start()
    try:
        start = _traced()
        table = dict.fromkeys(keys)
        heap: list[int] = []
        for k in keys:
            heap.append(k)
        containers = _traced() - start
        del table, heap
        start = _traced()
        ids = [_put(eng, conn, i) for i in range(1, N + 1)]
        used = _traced() - start - sys.getsizeof(ids)
    finally:
        tracemalloc.stop()
    job = eng.peek(ids[-1])
    assert job is not None
    own = sum(map(sys.getsizeof, (job, job.body, job.id, job.created_at)))
    per_job = used / N
    # 16 bytes of slack: list over-allocation and the like (a priority int and a heap key cost
    # 64 bytes more, as before).
    assert per_job <= own + containers / N + 16, (per_job, own, containers / N)
