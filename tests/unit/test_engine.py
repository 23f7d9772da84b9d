"""Unit tests for the pure engine (beanrouter.server.engine), driven by a fake clock.

Each rule below was read from beanstalkd 1.12's prot.c / conn.c / ms.c and, where it says so,
checked against the real server.
"""

from __future__ import annotations

import pytest

from beanrouter.server.engine import (
    DEADLINE_SOON,
    NS,
    OP_COUNTER_NAMES,
    TIMED_OUT,
    WAIT,
    Conn,
    Draining,
    Engine,
    Job,
    WakeResult,
)
from beanrouter.server.job import BURIED, DELAYED, READY, RESERVED
from beanrouter.server.procinfo import ProcInfo
from beanrouter.server.tube import ms_remove, ms_take

T0 = 1_700_000_000 * NS


class FakeClock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t

    def advance(self, seconds: float = 0, ns: int = 0) -> None:
        self.t += int(seconds * NS) + ns


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def eng(clock: FakeClock) -> Engine:
    return Engine(clock=clock, procinfo=ProcInfo.fixed())


def woken(conn: Conn) -> list[WakeResult]:
    got: list[WakeResult] = []
    conn.on_wake = got.append
    return got


def put(e: Engine, c: Conn, pri: int = 0, delay: int = 0, ttr: int = 60, body: bytes = b"x") -> int:
    return e.put(c, pri, delay, ttr, body)


def reserved(e: Engine, c: Conn, timeout: int | None = 0) -> Job:
    r = e.reserve(c, timeout)
    assert isinstance(r, Job), r
    return r


def check_invariants(e: Engine) -> None:
    """Counters equal what the containers hold."""
    jobs = e.jobs()
    by_state = {s: [j for j in jobs if j.state == s] for s in (READY, RESERVED, BURIED, DELAYED)}
    assert e.ready_ct == len(by_state[READY])
    assert e.reserved_ct == len(by_state[RESERVED])
    assert e.buried_ct == len(by_state[BURIED])
    assert e.delayed_ct == len(by_state[DELAYED])
    assert e.urgent_ct == sum(1 for j in by_state[READY] if j.pri < 1024)
    for t in e.tubes():
        mine = [j for j in jobs if j.tube is t]
        assert t.ready_ct == sum(1 for j in mine if j.state == READY)
        assert t.urgent_ct == sum(1 for j in mine if j.state == READY and j.pri < 1024)
        assert t.reserved_ct == sum(1 for j in mine if j.state == RESERVED)
        assert t.buried_ct == sum(1 for j in mine if j.state == BURIED)
        assert t.delay_ct == sum(1 for j in mine if j.state == DELAYED)
        entries = [(k, e._jobs.get(k & ((1 << 64) - 1))) for k in t.ready]
        live = [(k, j) for k, j in entries if j is not None and j.state == READY]
        assert len(live) == t.ready_ct
        assert all(k == ((j.pri - t.ready_base) << 64) | j.id and j.tube is t for k, j in live)
        if t.ready:
            assert t.ready[0] == live[0][0] == min(k for k, _ in live)
        if t.pause:
            assert e.tube(t.name) is t


# -- ms.c ----------------------------------------------------------------------------------------


def test_ms_take_is_beanstalkds_order() -> None:
    items = ["a", "b", "c", "d"]
    last = 0
    out = []
    while items:
        x, last = ms_take(items, last)
        out.append(x)
    assert out == ["a", "b", "d", "c"]


def test_ms_remove_fills_the_hole_with_the_last_item() -> None:
    items = ["a", "b", "c", "d"]
    assert ms_remove(items, "b")
    assert items == ["a", "d", "c"]
    assert not ms_remove(items, "zz")
    assert ms_remove(items, "c")
    assert items == ["a", "d"]


# -- sessions ------------------------------------------------------------------------------------


def test_connect_uses_and_watches_default(eng: Engine) -> None:
    c = eng.connect()
    assert eng.list_tube_used(c) == "default"
    assert eng.list_tubes_watched(c) == ["default"]
    s = eng.stats()
    assert s["current-connections"] == 1
    assert s["total-connections"] == 1
    ts = eng.stats_tube("default")
    assert ts is not None
    assert ts["current-using"] == 1
    assert ts["current-watching"] == 1
    eng.disconnect(c)
    eng.disconnect(c)  # idempotent
    s = eng.stats()
    assert s["current-connections"] == 0
    assert s["total-connections"] == 1
    assert eng.list_tubes() == ["default"]


def test_producer_and_worker_counts(eng: Engine) -> None:
    a, b, c = eng.connect(), eng.connect(), eng.connect()
    put(eng, a)
    put(eng, a)
    assert eng.reserve(b, 0) is not None
    eng.new_id(c)  # a put line that parses marks the producer even if the body never comes
    s = eng.stats()
    assert (s["current-producers"], s["current-workers"]) == (2, 1)
    eng.disconnect(a)
    eng.disconnect(b)
    s = eng.stats()
    assert (s["current-producers"], s["current-workers"]) == (1, 0)


# -- put -----------------------------------------------------------------------------------------


def test_put_ids_ttr_and_counters(eng: Engine) -> None:
    c = eng.connect()
    assert put(eng, c, pri=1023) == 1
    assert put(eng, c, pri=1024, ttr=0) == 2
    j = eng.peek(2)
    assert j is not None and j.ttr == 1
    s = eng.stats()
    assert s["current-jobs-urgent"] == 1
    assert s["current-jobs-ready"] == 2
    assert s["total-jobs"] == 2
    ts = eng.stats_tube("default")
    assert ts is not None and ts["total-jobs"] == 2 and ts["current-jobs-urgent"] == 1


def test_ids_taken_at_the_put_line_and_burned(eng: Engine) -> None:
    a, b = eng.connect(), eng.connect()
    early = eng.new_id(a)  # a's put line parsed, body still coming
    assert put(eng, b) == 2
    assert eng.put(a, 0, 0, 60, b"late", job_id=early) == 1
    eng.burn_id()  # EXPECTED_CRLF
    assert put(eng, a) == 4


def test_draining_refuses_puts_and_burns_the_id(eng: Engine) -> None:
    c = eng.connect()
    eng.draining = True
    with pytest.raises(Draining):
        put(eng, c)
    assert eng.stats()["draining"] is True
    assert eng.stats()["total-jobs"] == 0
    eng.draining = False
    assert put(eng, c) == 2


def test_delayed_put_becomes_ready_at_the_exact_ns(eng: Engine, clock: FakeClock) -> None:
    c = eng.connect()
    jid = put(eng, c, delay=5)
    j = eng.peek(jid)
    assert j is not None and j.state == DELAYED
    assert eng.next_wakeup() == T0 + 5 * NS
    clock.advance(ns=5 * NS - 1)
    eng.tick()
    assert j.state == DELAYED
    clock.advance(ns=1)
    eng.tick()
    assert j.state == READY
    assert eng.next_wakeup() is None
    check_invariants(eng)


def test_delayed_jobs_wake_a_waiter(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    jid = put(eng, p, delay=2)
    assert eng.reserve(w, None) is WAIT
    clock.advance(2)
    eng.tick()
    assert [x.id for x in got if isinstance(x, Job)] == [jid]
    assert eng.stats()["current-waiting"] == 0


# -- reserve -------------------------------------------------------------------------------------


def test_reserve_picks_lowest_pri_then_id_across_watched_tubes(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    put(eng, p, pri=5)  # 1 default
    eng.use(p, "a")
    put(eng, p, pri=3)  # 2 a
    put(eng, p, pri=3)  # 3 a
    eng.use(p, "b")
    put(eng, p, pri=1)  # 4 b (not watched)
    eng.watch(w, "a")
    assert [reserved(eng, w).id for _ in range(3)] == [2, 3, 1]
    assert eng.reserve(w, 0) is TIMED_OUT
    eng.watch(w, "b")
    assert reserved(eng, w).id == 4
    check_invariants(eng)


def test_reserve_skips_paused_tubes(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    put(eng, p, pri=0)
    assert eng.pause_tube("default", 10)
    assert eng.reserve(w, 0) is TIMED_OUT
    assert eng.reserve(w, None) is WAIT
    clock.advance(10)
    assert eng.next_wakeup() == clock.t
    eng.tick()
    assert len(got) == 1 and isinstance(got[0], Job)
    check_invariants(eng)


def test_waiters_are_served_in_ms_take_order(eng: Engine) -> None:
    # Checked against beanstalkd 1.12: 4 waiters are served 0, 1, 3, 2 ...
    p = eng.connect()
    order: list[int] = []

    def waiter(i: int) -> Conn:
        c = eng.connect()
        c.on_wake = lambda r: order.append(i)
        assert eng.reserve(c, None) is WAIT
        return c

    for i in range(4):
        waiter(i)
    for _ in range(4):
        put(eng, p)
    assert order == [0, 1, 3, 2]
    # ... and then (cursor carried over): 3 waiters, 1 job, 3 more waiters, 5 jobs.
    order.clear()
    for i in range(3):
        waiter(i)
    put(eng, p)
    for i in range(3, 6):
        waiter(i)
    for _ in range(5):
        put(eng, p)
    assert order == [1, 3, 4, 2, 0, 5]


def test_a_job_goes_to_a_waiter_of_its_own_tube(eng: Engine) -> None:
    p, wa, wb = eng.connect(), eng.connect(), eng.connect()
    ga, gb = woken(wa), woken(wb)
    eng.watch(wa, "a")
    eng.ignore(wa, "default")
    assert eng.reserve(wa, None) is WAIT
    assert eng.reserve(wb, None) is WAIT
    assert eng.stats()["current-waiting"] == 2
    put(eng, p)
    assert ga == [] and len(gb) == 1
    eng.use(p, "a")
    put(eng, p)
    assert len(ga) == 1
    assert eng.stats()["current-waiting"] == 0


def test_reserve_with_timeout(eng: Engine, clock: FakeClock) -> None:
    w = eng.connect()
    got = woken(w)
    assert eng.reserve(w, 0) is TIMED_OUT
    assert eng.reserve(w, 3) is WAIT
    st = eng.stats_tube("default")
    assert st is not None and st["current-waiting"] == 1
    assert eng.next_wakeup() == T0 + 3 * NS
    clock.advance(ns=3 * NS - 1)
    eng.tick()
    assert got == []
    clock.advance(ns=1)
    eng.tick()
    assert got == [TIMED_OUT]
    assert eng.stats()["current-waiting"] == 0
    assert eng.next_wakeup() is None


def test_negative_timeout_blocks_forever(eng: Engine, clock: FakeClock) -> None:
    w = eng.connect()
    assert eng.reserve(w, -1) is WAIT
    assert eng.next_wakeup() is None
    with pytest.raises(RuntimeError):
        eng.reserve(w, None)


def test_timeout_zero_sees_what_the_next_tick_brings(eng: Engine, clock: FakeClock) -> None:
    # beanstalkd answers reserve-with-timeout 0 from its next prottick, after due delayed jobs.
    p, w = eng.connect(), eng.connect()
    jid = put(eng, p, delay=1)
    clock.advance(1)
    assert reserved(eng, w, 0).id == jid


# -- DEADLINE_SOON and TTR -----------------------------------------------------------------------


def test_deadline_soon_at_once_when_nothing_is_ready(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    put(eng, p, ttr=2)
    j = reserved(eng, w)
    assert eng.reserve(w, None) is WAIT  # 2 s left: not yet within the margin
    eng.disconnect(w)
    w = eng.connect()
    j = reserved(eng, w)
    clock.advance(1)  # exactly 1 s left: within the margin
    assert eng.reserve(w, None) is DEADLINE_SOON
    assert eng.reserve(w, 5) is DEADLINE_SOON
    assert j.state == RESERVED
    put(eng, p)  # a ready job wins over DEADLINE_SOON
    assert reserved(eng, w).id == 2


def test_deadline_soon_counts_ready_jobs_of_paused_tubes(eng: Engine, clock: FakeClock) -> None:
    # conn_ready looks at ready.len of every watched tube, paused or not, so reserve waits; the
    # next tick then answers DEADLINE_SOON (checked against beanstalkd 1.12: at once).
    p, w = eng.connect(), eng.connect()
    eng.use(p, "p")
    put(eng, p)
    eng.pause_tube("p", 100)
    eng.use(p, "default")
    put(eng, p, ttr=1)
    reserved(eng, w)
    eng.watch(w, "p")
    assert eng.reserve(w, None) is DEADLINE_SOON
    assert eng.stats()["current-waiting"] == 0


def test_waiting_conn_gets_deadline_soon_one_second_before(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    put(eng, p, ttr=5)
    j = reserved(eng, w)
    assert eng.reserve(w, None) is WAIT
    assert eng.next_wakeup() == T0 + 4 * NS
    clock.advance(ns=4 * NS - 1)
    eng.tick()
    assert got == []
    clock.advance(ns=1)
    eng.tick()
    assert got == [DEADLINE_SOON]
    assert j.state == RESERVED
    assert eng.next_wakeup() == T0 + 5 * NS
    clock.advance(1)
    eng.tick()
    assert j.state == READY and j.timeouts == 1


def test_waiting_with_timeout_takes_the_earlier_of_both(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    put(eng, p, ttr=100)
    reserved(eng, w)
    assert eng.reserve(w, 2) is WAIT
    assert eng.next_wakeup() == T0 + 2 * NS
    clock.advance(2)
    eng.tick()
    assert got == [TIMED_OUT]
    assert eng.next_wakeup() == T0 + 100 * NS


def test_ttr_expiry_requeues_and_counts(eng: Engine, clock: FakeClock) -> None:
    p, w, w2 = eng.connect(), eng.connect(), eng.connect()
    got = woken(w2)
    jid = put(eng, p, ttr=3)
    j = reserved(eng, w)
    assert eng.reserve(w2, None) is WAIT
    assert eng.next_wakeup() == T0 + 3 * NS
    clock.advance(3)
    eng.tick()
    assert got == [j]  # back to ready, and straight to the waiter
    assert j.reserver is w2
    assert (j.reserves, j.timeouts) == (2, 1)
    assert eng.stats()["job-timeouts"] == 1
    sj = eng.stats_job(jid)
    assert sj is not None and sj["timeouts"] == 1 and sj["reserves"] == 2
    assert not eng.delete(w, jid)  # no longer w's
    assert eng.delete(w2, jid)
    check_invariants(eng)


def test_ttr_expiry_of_several_jobs_in_deadline_order(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    put(eng, p, ttr=10)
    put(eng, p, ttr=5)
    a = reserved(eng, w)
    b = reserved(eng, w)
    assert eng.next_wakeup() == T0 + 5 * NS
    clock.advance(5)
    eng.tick()
    assert (a.state, b.state) == (RESERVED, READY)
    assert eng.next_wakeup() == T0 + 10 * NS
    clock.advance(5)
    eng.tick()
    assert a.state == READY
    assert eng.stats()["job-timeouts"] == 2
    assert eng.next_wakeup() is None


def test_touch(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    jid = put(eng, p, ttr=10)
    j = reserved(eng, w)
    clock.advance(8)
    assert not eng.touch(p, jid)
    assert eng.touch(w, jid)
    assert j.deadline_at == clock.t + 10 * NS
    clock.advance(ns=1)
    sj = eng.stats_job(jid)
    assert sj is not None and sj["time-left"] == 9  # 9.999999999 s truncates
    clock.advance(2)
    eng.tick()
    assert j.state == RESERVED
    assert eng.next_wakeup() == T0 + 18 * NS
    assert not eng.touch(w, 99)


# -- release, bury, kick, delete -----------------------------------------------------------------


def test_release(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    jid = put(eng, p, pri=10)
    j = reserved(eng, w)
    assert not eng.release(p, jid, 1, 0)
    assert eng.release(w, jid, 1, 0)
    assert (j.state, j.pri, j.releases) == (READY, 1, 1)
    assert eng.stats()["current-jobs-urgent"] == 1
    reserved(eng, w)
    assert eng.release(w, jid, 2000, 7)
    assert (j.state, j.delay) == (DELAYED, 7)
    sj = eng.stats_job(jid)
    assert sj is not None and sj["delay"] == 7 and sj["time-left"] == 7 and sj["state"] == "delayed"
    clock.advance(7)
    eng.tick()
    assert j.state == READY
    assert eng.stats()["current-jobs-urgent"] == 0
    check_invariants(eng)


def test_bury_fifo_and_kick(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    ids = [put(eng, p, pri=i) for i in range(3)]
    for _ in ids:
        reserved(eng, w)
    assert not eng.bury(p, ids[0], 0)
    for jid in (ids[2], ids[0], ids[1]):
        assert eng.bury(w, jid, 50)
    buried = eng.peek_buried(p)
    assert buried is not None and buried.id == ids[2]
    assert eng.stats()["current-jobs-buried"] == 3
    assert eng.kick(p, 2) == 2
    kicked = [eng.peek(i) for i in ids]
    assert [j.state if j else None for j in kicked] == [READY, BURIED, READY]
    assert eng.kick(p, 10) == 1
    j0 = eng.peek(ids[0])
    assert j0 is not None and (j0.buries, j0.kicks, j0.pri) == (1, 1, 50)
    assert eng.kick(p, 10) == 0
    check_invariants(eng)


def test_kick_takes_buried_first_then_delayed_by_deadline(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    d1 = put(eng, p, delay=20)
    d2 = put(eng, p, delay=10)
    b = put(eng, p)
    reserved(eng, w)
    eng.bury(w, b, 0)
    assert eng.kick(p, 5) == 1  # buried only, though delayed jobs exist
    j = eng.peek(b)
    assert j is not None and j.state == READY
    top = eng.peek_delayed(p)
    assert top is not None and top.id == d2
    assert eng.kick(p, 1) == 1
    assert [x.state for x in (eng.peek(d1), eng.peek(d2)) if x] == [DELAYED, READY]
    assert eng.kick(p, 0) == 0
    assert eng.kick(p, 4294967295) == 1
    assert eng.peek_delayed(p) is None
    check_invariants(eng)


def test_kick_only_the_used_tube(eng: Engine) -> None:
    p = eng.connect()
    put(eng, p, delay=5)
    eng.use(p, "other")
    assert eng.kick(p, 10) == 0


def test_kick_job(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    d = put(eng, p, delay=5)
    r = put(eng, p)
    b = put(eng, p)
    eng.use(p, "elsewhere")  # kick-job ignores the used tube
    assert not eng.kick_job(p, r)  # ready
    reserved(eng, w)
    assert not eng.kick_job(p, r)  # reserved
    reserved(eng, w)
    eng.bury(w, b, 0)
    assert eng.kick_job(p, b)
    assert eng.kick_job(p, d)
    assert not eng.kick_job(p, 999)
    j = eng.peek(d)
    assert j is not None and j.state == READY and j.kicks == 1
    check_invariants(eng)


def test_kicked_job_goes_to_a_waiter(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    jid = put(eng, p, delay=100)
    assert eng.reserve(w, None) is WAIT
    assert eng.kick(p, 1) == 1
    assert [x.id for x in got if isinstance(x, Job)] == [jid]


def test_delete_rules(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    r = put(eng, p)
    d = put(eng, p, delay=5)
    res = put(eng, p)
    b = put(eng, p)
    reserved(eng, w)  # r
    assert eng.release(w, r, 0, 0)
    reserved(eng, w)  # r again
    reserved(eng, w)  # res
    reserved(eng, w)  # b
    eng.bury(w, b, 0)
    assert eng.release(w, r, 0, 0)
    assert not eng.delete(p, res)  # reserved by someone else
    assert eng.delete(w, res)
    for jid in (r, d, b):
        assert eng.delete(p, jid)
        assert eng.peek(jid) is None
    assert not eng.delete(p, r)
    ts = eng.stats_tube("default")
    assert ts is not None and ts["cmd-delete"] == 4
    assert eng.stats()["current-jobs-ready"] == 0
    check_invariants(eng)


def test_deleting_many_ready_jobs_keeps_order(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    ids = [put(eng, p, pri=(i * 7919) % 100) for i in range(500)]
    for jid in ids[::3]:
        assert eng.delete(p, jid)
    check_invariants(eng)
    order = []
    while True:
        r = eng.reserve(w, 0)
        if not isinstance(r, Job):
            break
        order.append((r.pri, r.id))
    expect = sorted((j.pri, j.id) for j in (eng.peek(i) for i in ids) if j is not None)
    assert order == expect


def test_reserve_job(eng: Engine) -> None:
    p, w, x = eng.connect(), eng.connect(), eng.connect()
    ids = [put(eng, p, pri=i % 5) for i in range(20)]
    d = put(eng, p, delay=9)
    eng.use(p, "paused")
    pj = put(eng, p)
    eng.pause_tube("paused", 100)
    mid = ids[7]
    j = eng.reserve_job(w, mid)
    assert j is not None and j.state == RESERVED and j.reserves == 1
    assert eng.reserve_job(x, mid) is None  # reserved by anyone: NOT_FOUND
    assert eng.reserve_job(w, mid) is None
    assert eng.reserve_job(w, d) is not None
    assert eng.reserve_job(w, pj) is not None  # paused and unwatched tube: fine
    assert eng.reserve_job(w, 12345) is None
    assert eng.stats()["current-workers"] == 1
    check_invariants(eng)
    # the ready heap is still in order after the removal from its middle
    rest = []
    while True:
        r = eng.reserve(x, 0)
        if not isinstance(r, Job):
            break
        rest.append((r.pri, r.id))
    assert rest == sorted(rest) and len(rest) == 19
    # a job reserved with reserve-job and released with another pri keeps the heap sound
    assert eng.release(w, mid, 100, 0)
    check_invariants(eng)


def test_reserve_job_of_a_buried_job(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    ids = [put(eng, p) for _ in range(3)]
    for _ in ids:
        reserved(eng, w)
    for jid in ids:
        eng.bury(w, jid, 0)
    assert eng.reserve_job(p, ids[0]) is not None
    head = eng.peek_buried(p)
    assert head is not None and head.id == ids[1]
    assert eng.bury(p, ids[0], 0)  # goes to the back
    assert eng.kick(p, 3) == 3
    check_invariants(eng)


# -- peeks ---------------------------------------------------------------------------------------


def test_peeks(eng: Engine) -> None:
    p, w = eng.connect(), eng.connect()
    assert eng.peek_ready(p) is None and eng.peek_delayed(p) is None
    assert eng.peek_buried(p) is None and eng.peek(0) is None
    a = put(eng, p, pri=5)
    b = put(eng, p, pri=5)
    c = put(eng, p, pri=1, delay=30)
    d = put(eng, p, pri=9, delay=20)
    pr = eng.peek_ready(p)
    assert pr is not None and pr.id == a
    pd = eng.peek_delayed(p)
    assert pd is not None and pd.id == d
    eng.pause_tube("default", 5)
    pr = eng.peek_ready(p)
    assert pr is not None and pr.id == a  # peek-ready ignores pause
    assert eng.reserve_job(w, a) is not None
    pr = eng.peek_ready(p)
    assert pr is not None and pr.id == b
    pc = eng.peek(c)
    assert pc is not None and pc.body == b"x"
    eng.use(w, "other")
    assert eng.peek_ready(w) is None


# -- tubes ---------------------------------------------------------------------------------------


def test_watch_and_ignore(eng: Engine) -> None:
    c = eng.connect()
    assert eng.watch(c, "a") == 2
    assert eng.watch(c, "a") == 2
    assert eng.watch(c, "b") == 3
    assert eng.ignore(c, "nope") == 3
    assert eng.ignore(c, "default") == 2
    assert eng.list_tubes_watched(c) == ["b", "a"]  # the last one filled the hole
    assert eng.ignore(c, "a") == 1
    assert eng.ignore(c, "b") is None
    ts = eng.stats_tube("b")
    assert ts is not None and ts["current-watching"] == 1


def test_tube_lifetime_and_list_order(eng: Engine) -> None:
    # Checked against beanstalkd 1.12.
    c = eng.connect()
    for name in ("t1", "t2", "t3", "t4"):
        eng.watch(c, name)
    assert eng.list_tubes() == ["default", "t1", "t2", "t3", "t4"]
    eng.ignore(c, "t2")
    assert eng.list_tubes() == ["default", "t1", "t4", "t3"]
    assert eng.stats_tube("t2") is None
    assert eng.stats()["current-tubes"] == 4
    eng.disconnect(c)
    assert eng.list_tubes() == ["default"]  # default always stays


def test_use_makes_the_new_tube_before_dropping_the_old(eng: Engine) -> None:
    c, keep = eng.connect(), eng.connect()
    eng.use(c, "a")
    eng.watch(keep, "x")
    assert eng.list_tubes() == ["default", "a", "x"]
    eng.use(c, "b")  # appended first, then "a" goes and "b" moves into its slot
    assert eng.list_tubes() == ["default", "b", "x"]
    eng.use(c, "b")
    assert eng.list_tubes() == ["default", "b", "x"]
    ts = eng.stats_tube("b")
    assert ts is not None and ts["current-using"] == 1


def test_jobs_keep_their_tube_alive(eng: Engine) -> None:
    c = eng.connect()
    eng.use(c, "jobs")
    jid = put(eng, c)
    eng.use(c, "default")
    assert "jobs" in eng.list_tubes()
    eng.delete(c, jid)
    assert "jobs" not in eng.list_tubes()


def test_disconnect_drops_watched_tubes_in_ms_clear_order(eng: Engine) -> None:
    c, other = eng.connect(), eng.connect()
    for name in ("a", "b", "c"):
        eng.watch(c, name)
    eng.watch(other, "z")
    assert eng.list_tubes() == ["default", "a", "b", "c", "z"]
    # ms_clear removes index 0 repeatedly: default, then c (moved to the front), b, a.
    eng.disconnect(c)
    assert eng.list_tubes() == ["default", "z"]
    c2 = eng.connect()
    for name in ("a", "b"):
        eng.watch(c2, name)
    eng.watch(other, "y")
    eng.disconnect(c2)  # frees b then a: [default z a b y] -> [default z a y] -> [default z y]
    assert eng.list_tubes() == ["default", "z", "y"]


def test_pause_tube(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    assert not eng.pause_tube("nope", 5)
    put(eng, p)
    assert eng.pause_tube("default", 10)
    ts = eng.stats_tube("default")
    assert ts is not None
    assert (ts["pause"], ts["pause-time-left"], ts["cmd-pause-tube"]) == (10, 10, 1)
    assert eng.reserve(w, None) is WAIT
    clock.advance(3.5)
    ts = eng.stats_tube("default")
    assert ts is not None and ts["pause-time-left"] == 6
    assert eng.next_wakeup() == T0 + 10 * NS
    clock.advance(8)  # past the end, but no tick yet: the pause still shows, time left < 0
    ts = eng.stats_tube("default")
    assert ts is not None and (ts["pause"], ts["pause-time-left"]) == (10, -1)
    eng.tick()
    assert len(got) == 1
    ts = eng.stats_tube("default")
    assert ts is not None and (ts["pause"], ts["pause-time-left"]) == (0, 0)


def test_pause_zero_lifts_at_the_next_tick(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    eng.pause_tube("default", 100)
    put(eng, p)
    assert eng.reserve(w, None) is WAIT
    assert eng.pause_tube("default", 0)  # 1 ns in 1.12
    assert got == []
    assert eng.next_wakeup() == clock.t + 1
    clock.advance(ns=1)
    eng.tick()
    assert len(got) == 1


def test_a_reserve_lifts_expired_pauses(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    put(eng, p)
    eng.pause_tube("default", 1)
    clock.advance(1)
    assert reserved(eng, w).id == 1  # process_queue unpaused it before any tick


# -- stats ---------------------------------------------------------------------------------------


def test_stats_keys_in_order(eng: Engine, clock: FakeClock) -> None:
    s = eng.stats()
    assert len(s) == 51
    keys = list(s)
    assert keys[:5] == [
        "current-jobs-urgent",
        "current-jobs-ready",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
    ]
    assert tuple(keys[5:27]) == OP_COUNTER_NAMES
    assert keys[27:] == [
        "job-timeouts",
        "total-jobs",
        "max-job-size",
        "current-tubes",
        "current-connections",
        "current-producers",
        "current-workers",
        "current-waiting",
        "total-connections",
        "pid",
        "version",
        "rusage-utime",
        "rusage-stime",
        "uptime",
        "binlog-oldest-index",
        "binlog-current-index",
        "binlog-records-migrated",
        "binlog-records-written",
        "binlog-max-size",
        "draining",
        "id",
        "hostname",
        "os",
        "platform",
    ]
    assert s["binlog-max-size"] == 10485760
    assert s["max-job-size"] == 65535
    assert s["id"] == "0123456789abcdef"
    eng.op_counts["cmd-put"] += 1
    eng.binlog_stats["binlog-records-written"] = 7
    clock.advance(61.9)
    s = eng.stats()
    assert (s["cmd-put"], s["binlog-records-written"], s["uptime"]) == (1, 7, 61)


def test_stats_job_fields(eng: Engine, clock: FakeClock) -> None:
    c = eng.connect()
    jid = put(eng, c, pri=7, delay=3, ttr=20, body=b"hello")
    clock.advance(1.5)
    sj = eng.stats_job(jid)
    assert sj == {
        "id": jid,
        "tube": "default",
        "state": "delayed",
        "pri": 7,
        "age": 1,
        "delay": 3,
        "ttr": 20,
        "time-left": 1,
        "file": 0,
        "reserves": 0,
        "timeouts": 0,
        "releases": 0,
        "buries": 0,
        "kicks": 0,
    }
    clock.advance(2)
    eng.tick()
    sj = eng.stats_job(jid)
    assert sj is not None and sj["state"] == "ready" and sj["time-left"] == 0 and sj["age"] == 3
    assert eng.stats_job(999) is None
    j = eng.peek(jid)
    assert j is not None and eng.created_at(j) == T0


def test_stats_tube_fields(eng: Engine) -> None:
    c, w = eng.connect(), eng.connect()
    put(eng, c, pri=1)
    put(eng, c, pri=2000)
    put(eng, c, delay=5)
    reserved(eng, w)
    assert eng.reserve(w, None) is not WAIT
    eng.disconnect(w)
    w = eng.connect()
    assert list(eng.stats_tube("default") or {}) == [
        "name",
        "current-jobs-urgent",
        "current-jobs-ready",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
        "total-jobs",
        "current-using",
        "current-watching",
        "current-waiting",
        "cmd-delete",
        "cmd-pause-tube",
        "pause",
        "pause-time-left",
    ]
    ts = eng.stats_tube("default")
    assert ts is not None
    assert ts["current-jobs-urgent"] == 1
    assert (ts["current-jobs-ready"], ts["current-jobs-delayed"]) == (2, 1)
    assert (ts["total-jobs"], ts["current-using"], ts["current-watching"]) == (3, 2, 2)
    assert eng.stats_tube("none") is None


# -- disconnect and half-close -------------------------------------------------------------------


def test_disconnect_puts_reserved_jobs_back_without_counters(eng: Engine) -> None:
    p, w, w2 = eng.connect(), eng.connect(), eng.connect()
    a = put(eng, p, pri=10)
    b = put(eng, p, pri=1)
    ja = eng.reserve_job(w, a)
    jb = eng.reserve_job(w, b)
    assert ja is not None and jb is not None
    got = woken(w2)
    assert eng.reserve(w2, None) is WAIT
    eng.disconnect(w)
    # returned in reservation order, each through process_queue: the waiter gets a, not b
    assert got == [ja]
    assert jb.state == READY
    assert (ja.reserves, ja.timeouts, ja.releases) == (2, 0, 0)
    assert (jb.reserves, jb.timeouts, jb.releases) == (1, 0, 0)
    assert eng.stats()["job-timeouts"] == 0
    check_invariants(eng)


def test_disconnect_of_a_waiting_conn(eng: Engine) -> None:
    w = eng.connect()
    eng.watch(w, "a")
    assert eng.reserve(w, 10) is WAIT
    eng.disconnect(w)
    assert eng.stats()["current-waiting"] == 0
    assert eng.next_wakeup() is None
    assert eng.list_tubes() == ["default"]


def test_half_close(eng: Engine, clock: FakeClock) -> None:
    # Checked against beanstalkd 1.12: a waiting reserve answers TIMED_OUT when the peer
    # shuts its write side, and later reserves answer a job if there is one, else TIMED_OUT.
    p, w = eng.connect(), eng.connect()
    got = woken(w)
    assert eng.reserve(w, None) is WAIT
    eng.half_close(w)
    assert got == [TIMED_OUT]
    assert eng.stats()["current-waiting"] == 0
    assert eng.reserve(w, None) is TIMED_OUT
    assert eng.reserve(w, 10) is TIMED_OUT
    put(eng, p)
    assert isinstance(eng.reserve(w, None), Job)
    jid = put(eng, p, delay=1)
    clock.advance(1)
    r = eng.reserve(w, None)  # the tick beanstalkd runs first makes the delayed job ready
    assert isinstance(r, Job) and r.id == jid
    eng.half_close(p)  # not waiting: nothing happens
    assert eng.stats()["current-waiting"] == 0


# -- next_wakeup ---------------------------------------------------------------------------------


def test_next_wakeup_is_the_earliest_event(eng: Engine, clock: FakeClock) -> None:
    p, w, w2 = eng.connect(), eng.connect(), eng.connect()
    assert eng.next_wakeup() is None
    put(eng, p, delay=50)
    assert eng.next_wakeup() == T0 + 50 * NS
    eng.use(p, "pz")
    put(eng, p)
    eng.pause_tube("pz", 40)
    assert eng.next_wakeup() == T0 + 40 * NS
    eng.use(p, "default")
    put(eng, p, ttr=30)
    reserved(eng, w)
    assert eng.next_wakeup() == T0 + 30 * NS
    assert eng.reserve(w2, 20) is WAIT
    assert eng.next_wakeup() == T0 + 20 * NS
    eng.disconnect(w2)
    assert eng.next_wakeup() == T0 + 30 * NS
    assert eng.delete(w, 3)
    assert eng.next_wakeup() == T0 + 40 * NS  # the early TTR entry moves away


def test_timers_survive_many_reserve_delete_cycles(eng: Engine, clock: FakeClock) -> None:
    p, w = eng.connect(), eng.connect()
    for i in range(1000):
        put(eng, p, ttr=1 + i % 7)
        j = reserved(eng, w)
        clock.advance(ns=1000)
        assert eng.delete(w, j.id)
    assert len(eng._timers) < 200
    assert eng.next_wakeup() is None


# -- randomized check against a direct transcription of beanstalkd ------------------------------
# (see test_engine_model.py)
