"""Randomized check of the engine against a reference model: a plain, O(n)-everywhere
transcription of beanstalkd 1.12's prot.c/conn.c/ms.c logic (lists scanned in full, no heaps, no
caches, no fast paths). Both are driven by the same random commands and clock; after every step
all replies, wake-ups, stats, stats-tube, stats-job, list orders and next_wakeup must agree.

Where the engine deliberately differs from the C code (documented in engine.py), the model
follows the engine: delayed jobs due at the same ns leave in (deadline, id) order, a job's TTR
ends at its deadline (not 1 ns after), and a conn timer fires in (time, scheduling) order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from beanrouter.server.engine import (
    DEADLINE_SOON,
    NS,
    SAFETY_MARGIN,
    TIMED_OUT,
    WAIT,
    Conn,
    Engine,
    Job,
    WakeResult,
)
from beanrouter.server.procinfo import ProcInfo
from beanrouter.server.tube import ms_remove, ms_take

INF = float("inf")
Outcome = str  # "DEADLINE_SOON", "TIMED_OUT", "WAIT" or "job <id>"


@dataclass(eq=False)
class MTube:
    name: str
    refs: int = 0
    ready: list[MJob] = field(default_factory=list)
    delay: list[MJob] = field(default_factory=list)
    buried: list[MJob] = field(default_factory=list)
    waiting: list[MConn] = field(default_factory=list)
    last: int = 0
    total_jobs: int = 0
    using: int = 0
    watching: int = 0
    deletes: int = 0
    pauses: int = 0
    pause: int = 0
    unpause_at: int = 0


@dataclass(eq=False)
class MJob:
    id: int
    pri: int
    delay: int
    ttr: int
    body: bytes
    tube: MTube
    created: int
    state: str = "ready"
    deadline: int = 0
    reserves: int = 0
    timeouts: int = 0
    releases: int = 0
    buries: int = 0
    kicks: int = 0
    reserver: MConn | None = None


@dataclass(eq=False)
class MConn:
    use: MTube
    watch: list[MTube]
    reserved: list[MJob] = field(default_factory=list)
    waiting: bool = False
    pending: int | None = None  # absolute ns
    producer: bool = False
    worker: bool = False
    half_closed: bool = False
    woken: list[Outcome] = field(default_factory=list)
    seq: int = 0


def key(j: MJob) -> tuple[int, int]:
    return (j.pri, j.id)


def trunc(ns: int) -> int:
    return ns // NS if ns >= 0 else -(-ns // NS)


class Model:
    def __init__(self, now: int) -> None:
        self.tubes: list[MTube] = []
        self.jobs: dict[int, MJob] = {}
        self.next_id = 1
        self.timeouts = 0
        self.total_jobs = 0
        self.cur_conns = self.tot_conns = 0
        self.started = now
        self.conn_seq = 0
        self.default = self.find_or_make("default")
        self.default.refs += 1
        self.direct: MConn | None = None
        self.direct_result: Outcome | None = None

    # tubes
    def find(self, name: str) -> MTube | None:
        for t in self.tubes:
            if t.name == name:
                return t
        return None

    def find_or_make(self, name: str) -> MTube:
        t = self.find(name)
        if t is None:
            t = MTube(name)
            self.tubes.append(t)
        return t

    def dref(self, t: MTube) -> None:
        t.refs -= 1
        if t.refs < 1:
            ms_remove(self.tubes, t)

    # conns
    def connect(self) -> MConn:
        d = self.default
        self.conn_seq += 1
        c = MConn(use=d, watch=[d], seq=self.conn_seq)
        d.refs += 2
        d.watching += 1
        d.using += 1
        self.cur_conns += 1
        self.tot_conns += 1
        return c

    def wake(self, c: MConn, r: Outcome) -> None:
        if c is self.direct:
            self.direct_result = r
        else:
            c.woken.append(r)

    def remove_waiting(self, c: MConn) -> None:
        if not c.waiting:
            return
        c.waiting = False
        for t in c.watch:
            ms_remove(t.waiting, c)

    def soonest(self, c: MConn) -> MJob | None:
        best = None
        for j in c.reserved:
            if best is None or j.deadline < best.deadline:
                best = j
        return best

    def deadline_soon(self, c: MConn, now: int) -> bool:
        j = self.soonest(c)
        return j is not None and now >= j.deadline - SAFETY_MARGIN

    def tickat(self, c: MConn) -> float:
        t: float = INF
        j = self.soonest(c)
        if j is not None:
            t = j.deadline - (SAFETY_MARGIN if c.waiting else 0)
        if c.waiting and c.pending is not None:
            t = min(t, c.pending)
        return t

    def reserve_to(self, c: MConn, j: MJob, now: int) -> None:
        j.reserves += 1
        j.deadline = now + j.ttr * NS
        j.state = "reserved"
        c.reserved.append(j)
        j.reserver = c
        c.pending = None

    def process_queue(self, now: int) -> None:
        while True:
            best: MJob | None = None
            for t in self.tubes:
                if t.pause:
                    if t.unpause_at > now:
                        continue
                    t.pause = 0
                if t.waiting and t.ready:
                    cand = min(t.ready, key=key)
                    if best is None or key(cand) < key(best):
                        best = cand
            if best is None:
                return
            t = best.tube
            t.ready.remove(best)
            c, t.last = ms_take(t.waiting, t.last)
            self.remove_waiting(c)
            self.reserve_to(c, best, now)
            self.wake(c, f"job {best.id}")

    def enqueue(self, j: MJob, delay: int, now: int) -> None:
        j.reserver = None
        if delay:
            j.deadline = now + delay * NS
            j.state = "delayed"
            j.tube.delay.append(j)
        else:
            j.state = "ready"
            j.tube.ready.append(j)
        self.process_queue(now)

    def unreserve(self, c: MConn, j: MJob) -> None:
        c.reserved.remove(j)
        j.reserver = None

    def tick(self, now: int, conns: list[MConn]) -> None:
        while True:
            due = [j for t in self.tubes for j in t.delay if j.deadline <= now]
            if not due:
                break
            j = min(due, key=lambda x: (x.deadline, x.id))
            j.tube.delay.remove(j)
            self.enqueue(j, 0, now)
        for t in list(self.tubes):
            if t.pause and t.unpause_at <= now:
                t.pause = 0
                self.process_queue(now)
        while True:
            due_c = [(self.tickat(c), c.seq, c) for c in conns if self.tickat(c) <= now]
            if not due_c:
                break
            self.conn_timeout(min(due_c, key=lambda x: (x[0], x[1]))[2], now)

    def conn_timeout(self, c: MConn, now: int) -> None:
        should = c.waiting and self.deadline_soon(c, now)
        while True:
            j = self.soonest(c)
            if j is None or j.deadline > now:
                break
            self.timeouts += 1
            j.timeouts += 1
            self.unreserve(c, j)
            self.enqueue(j, 0, now)
        if c.waiting:
            if should:
                self.remove_waiting(c)
                self.wake(c, "DEADLINE_SOON")
            elif c.pending is not None and c.pending <= now:
                c.pending = None
                self.remove_waiting(c)
                self.wake(c, "TIMED_OUT")

    # commands
    def put(self, c: MConn, pri: int, delay: int, ttr: int, now: int) -> int:
        jid = self.next_id
        self.next_id += 1
        c.producer = True
        j = MJob(jid, pri, delay, max(ttr, 1), b"b%d" % jid, c.use, now)
        self.jobs[jid] = j
        c.use.refs += 1
        self.enqueue(j, delay, now)
        self.total_jobs += 1
        c.use.total_jobs += 1
        return jid

    def reserve(self, c: MConn, timeout: int | None, now: int, conns: list[MConn]) -> Outcome:
        c.worker = True
        if self.deadline_soon(c, now) and not any(t.ready for t in c.watch):
            return "DEADLINE_SOON"
        c.waiting = True
        for t in c.watch:
            t.waiting.append(c)
        c.pending = None if timeout is None else now + timeout * NS
        self.direct, self.direct_result = c, None
        self.process_queue(now)
        if c.waiting and (c.half_closed or self.tickat(c) <= now):
            self.tick(now, conns)
            if c.waiting and c.half_closed:
                self.remove_waiting(c)
                c.pending = None
                self.direct_result = "TIMED_OUT"
        r = self.direct_result
        self.direct = None
        return "WAIT" if r is None else r

    def reserve_job(self, c: MConn, jid: int, now: int) -> bool:
        j = self.jobs.get(jid)
        if j is None or j.state == "reserved":
            return False
        {"ready": j.tube.ready, "buried": j.tube.buried, "delayed": j.tube.delay}[j.state].remove(j)
        c.worker = True
        self.reserve_to(c, j, now)
        return True

    def owned(self, c: MConn, jid: int) -> MJob | None:
        j = self.jobs.get(jid)
        if j is None or j.state != "reserved" or j.reserver is not c:
            return None
        return j

    def delete(self, c: MConn, jid: int) -> bool:
        j = self.jobs.get(jid)
        if j is None:
            return False
        if j.state == "reserved":
            if j.reserver is not c:
                return False
            self.unreserve(c, j)
        else:
            {"ready": j.tube.ready, "buried": j.tube.buried, "delayed": j.tube.delay}[
                j.state
            ].remove(j)
        j.tube.deletes += 1
        del self.jobs[jid]
        self.dref(j.tube)
        return True

    def release(self, c: MConn, jid: int, pri: int, delay: int, now: int) -> bool:
        j = self.owned(c, jid)
        if j is None:
            return False
        self.unreserve(c, j)
        j.pri, j.delay = pri, delay
        j.releases += 1
        self.enqueue(j, delay, now)
        return True

    def bury(self, c: MConn, jid: int, pri: int) -> bool:
        j = self.owned(c, jid)
        if j is None:
            return False
        self.unreserve(c, j)
        j.pri = pri
        j.tube.buried.append(j)
        j.state = "buried"
        j.buries += 1
        return True

    def touch(self, c: MConn, jid: int, now: int) -> bool:
        j = self.owned(c, jid)
        if j is None:
            return False
        j.deadline = now + j.ttr * NS
        return True

    def kick_one(self, j: MJob, now: int) -> None:
        (j.tube.buried if j.state == "buried" else j.tube.delay).remove(j)
        j.kicks += 1
        self.enqueue(j, 0, now)

    def kick(self, c: MConn, bound: int, now: int) -> int:
        t = c.use
        n = 0
        if t.buried:
            while n < bound and t.buried:
                self.kick_one(t.buried[0], now)
                n += 1
        else:
            while n < bound and t.delay:
                self.kick_one(min(t.delay, key=lambda x: (x.deadline, x.id)), now)
                n += 1
        return n

    def kick_job(self, jid: int, now: int) -> bool:
        j = self.jobs.get(jid)
        if j is None or j.state not in ("buried", "delayed"):
            return False
        self.kick_one(j, now)
        return True

    def use(self, c: MConn, name: str) -> None:
        t = self.find_or_make(name)
        t.refs += 1
        c.use.using -= 1
        old, c.use = c.use, t
        self.dref(old)
        t.using += 1

    def watch(self, c: MConn, name: str) -> int:
        t = self.find_or_make(name)
        if t not in c.watch:
            c.watch.append(t)
            t.refs += 1
            t.watching += 1
        return len(c.watch)

    def ignore(self, c: MConn, name: str) -> int | None:
        for t in c.watch:
            if t.name == name:
                if len(c.watch) < 2:
                    return None
                ms_remove(c.watch, t)
                t.watching -= 1
                self.dref(t)
                break
        return len(c.watch)

    def pause_tube(self, name: str, delay: int, now: int) -> bool:
        t = self.find(name)
        if t is None:
            return False
        d = delay * NS or 1
        t.unpause_at, t.pause = now + d, d
        t.pauses += 1
        return True

    def disconnect(self, c: MConn, now: int) -> None:
        self.cur_conns -= 1
        self.remove_waiting(c)
        while c.reserved:
            j = c.reserved.pop(0)
            self.enqueue(j, 0, now)
        while c.watch:
            t = c.watch[0]
            last = c.watch.pop()
            if c.watch:
                c.watch[0] = last
            t.watching -= 1
            self.dref(t)
        c.use.using -= 1
        self.dref(c.use)

    def half_close(self, c: MConn) -> None:
        c.half_closed = True
        if c.waiting:
            self.remove_waiting(c)
            c.pending = None
            c.woken.append("TIMED_OUT")

    # observations
    def stats(self, conns: list[MConn], now: int) -> dict[str, int]:
        jobs = list(self.jobs.values())
        return {
            "current-jobs-urgent": sum(1 for j in jobs if j.state == "ready" and j.pri < 1024),
            "current-jobs-ready": sum(1 for j in jobs if j.state == "ready"),
            "current-jobs-reserved": sum(1 for j in jobs if j.state == "reserved"),
            "current-jobs-delayed": sum(1 for j in jobs if j.state == "delayed"),
            "current-jobs-buried": sum(1 for j in jobs if j.state == "buried"),
            "job-timeouts": self.timeouts,
            "total-jobs": self.total_jobs,
            "current-tubes": len(self.tubes),
            "current-connections": self.cur_conns,
            "current-producers": sum(1 for c in conns if c.producer),
            "current-workers": sum(1 for c in conns if c.worker),
            "current-waiting": sum(1 for c in conns if c.waiting),
            "total-connections": self.tot_conns,
            "uptime": (now - self.started) // NS,
        }

    def stats_tube(self, t: MTube, now: int) -> dict[str, int | str]:
        mine = [j for j in self.jobs.values() if j.tube is t]
        return {
            "name": t.name,
            "current-jobs-urgent": sum(1 for j in t.ready if j.pri < 1024),
            "current-jobs-ready": len(t.ready),
            "current-jobs-reserved": sum(1 for j in mine if j.state == "reserved"),
            "current-jobs-delayed": len(t.delay),
            "current-jobs-buried": len(t.buried),
            "total-jobs": t.total_jobs,
            "current-using": t.using,
            "current-watching": t.watching,
            "current-waiting": len(t.waiting),
            "cmd-delete": t.deletes,
            "cmd-pause-tube": t.pauses,
            "pause": t.pause // NS,
            "pause-time-left": trunc(t.unpause_at - now) if t.pause else 0,
        }

    def stats_job(self, j: MJob, now: int) -> dict[str, int | str]:
        left = trunc(j.deadline - now) if j.state in ("reserved", "delayed") else 0
        return {
            "id": j.id,
            "tube": j.tube.name,
            "state": j.state,
            "pri": j.pri,
            "age": trunc(now - j.created),
            "delay": j.delay,
            "ttr": j.ttr,
            "time-left": left,
            "file": 0,
            "reserves": j.reserves,
            "timeouts": j.timeouts,
            "releases": j.releases,
            "buries": j.buries,
            "kicks": j.kicks,
        }

    def next_wakeup(self, conns: list[MConn]) -> int | None:
        times: list[float] = [j.deadline for t in self.tubes for j in t.delay]
        times += [t.unpause_at for t in self.tubes if t.pause]
        times += [self.tickat(c) for c in conns]
        best = min(times, default=INF)
        return None if best == INF else int(best)


def outcome(r: WakeResult | None) -> Outcome:
    if isinstance(r, Job):
        return f"job {r.id}"
    if r is DEADLINE_SOON:
        return "DEADLINE_SOON"
    if r is TIMED_OUT:
        return "TIMED_OUT"
    assert r is WAIT
    return "WAIT"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000 * NS

    def __call__(self) -> int:
        return self.t


TUBES = ("default", "a", "b")


def run(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    eng = Engine(clock=clock, procinfo=ProcInfo.fixed())
    model = Model(clock.t)
    pairs: list[tuple[Conn, MConn, list[Outcome]]] = []

    def new_conn() -> None:
        ec = eng.connect()
        got: list[Outcome] = []
        ec.on_wake = lambda r: got.append(outcome(r))
        pairs.append((ec, model.connect(), got))

    for _ in range(3):
        new_conn()
    history: list[str] = []

    def fail(msg: str) -> None:
        pytest.fail(f"seed {seed}: {msg}\n" + "\n".join(history[-30:]))

    def jid() -> int:
        return rng.randint(0, model.next_id)

    for step in range(steps):
        roll = rng.random()
        if roll < 0.25:
            clock.t += rng.choice([1, NS // 2, NS, rng.randint(1, NS), rng.randint(NS, 3 * NS)])
        if rng.random() < 0.6:
            history.append("tick")
            eng.tick()
            model.tick(clock.t, [m for _, m, _ in pairs])
        now = clock.t
        mconns = [m for _, m, _ in pairs]
        roll = rng.random()
        if roll < 0.03 and len(pairs) > 1:
            k = rng.randrange(len(pairs))
            ec, mc, _ = pairs.pop(k)
            history.append(f"[{k}] disconnect")
            eng.disconnect(ec)
            model.disconnect(mc, now)
            mconns = [m for _, m, _ in pairs]
        elif roll < 0.06 and len(pairs) < 5:
            new_conn()
            history.append("connect")
        elif roll < 0.08:
            k = rng.randrange(len(pairs))
            history.append(f"[{k}] half-close")
            eng.half_close(pairs[k][0])
            model.half_close(pairs[k][1])
        else:
            idle = [i for i, (_, m, _) in enumerate(pairs) if not m.waiting]
            if not idle:
                continue
            k = rng.choice(idle)
            ec, mc, _ = pairs[k]
            op = rng.choices(
                ["put", "reserve", "reserve-job", "delete", "release", "bury", "touch", "kick",
                 "kick-job", "use", "watch", "ignore", "pause"],
                weights=[14, 10, 2, 5, 5, 3, 3, 3, 2, 3, 3, 2, 1],
            )[0]  # fmt: skip
            e_r: object
            m_r: object
            if op == "put":
                pri = rng.choice([0, 5, 1023, 1024, 5000])
                delay = rng.choice([0, 0, 0, 1, 2])
                ttr = rng.choice([0, 1, 2, 3])
                e_r = eng.put(ec, pri, delay, ttr, b"b%d" % eng.next_id)
                m_r = model.put(mc, pri, delay, ttr, now)
                history.append(f"[{k}] put {pri} {delay} {ttr}")
            elif op == "reserve":
                timeout = rng.choice([None, None, 0, 1, 2])
                e_r = outcome(eng.reserve(ec, timeout))
                m_r = model.reserve(mc, timeout, now, mconns)
                history.append(f"[{k}] reserve {timeout}")
            elif op == "reserve-job":
                i = jid()
                e_j = eng.reserve_job(ec, i)
                e_r = None if e_j is None else e_j.id
                m_r = i if model.reserve_job(mc, i, now) else None
                history.append(f"[{k}] reserve-job {i}")
            elif op == "delete":
                i = jid()
                e_r, m_r = eng.delete(ec, i), model.delete(mc, i)
                history.append(f"[{k}] delete {i}")
            elif op == "release":
                i, pri, delay = jid(), rng.choice([0, 2000]), rng.choice([0, 0, 1, 2])
                e_r = eng.release(ec, i, pri, delay)
                m_r = model.release(mc, i, pri, delay, now)
                history.append(f"[{k}] release {i} {pri} {delay}")
            elif op == "bury":
                i, pri = jid(), rng.choice([0, 2000])
                e_r, m_r = eng.bury(ec, i, pri), model.bury(mc, i, pri)
                history.append(f"[{k}] bury {i} {pri}")
            elif op == "touch":
                i = jid()
                e_r, m_r = eng.touch(ec, i), model.touch(mc, i, now)
                history.append(f"[{k}] touch {i}")
            elif op == "kick":
                bound = rng.choice([0, 1, 2, 10])
                e_r, m_r = eng.kick(ec, bound), model.kick(mc, bound, now)
                history.append(f"[{k}] kick {bound}")
            elif op == "kick-job":
                i = jid()
                e_r, m_r = eng.kick_job(ec, i), model.kick_job(i, now)
                history.append(f"[{k}] kick-job {i}")
            elif op == "use":
                name = rng.choice(TUBES)
                eng.use(ec, name)
                model.use(mc, name)
                e_r = m_r = None
                history.append(f"[{k}] use {name}")
            elif op == "watch":
                name = rng.choice(TUBES)
                e_r, m_r = eng.watch(ec, name), model.watch(mc, name)
                history.append(f"[{k}] watch {name}")
            elif op == "ignore":
                name = rng.choice(TUBES)
                e_r, m_r = eng.ignore(ec, name), model.ignore(mc, name)
                history.append(f"[{k}] ignore {name}")
            else:
                name, delay = rng.choice(TUBES), rng.choice([0, 1, 2])
                e_r = eng.pause_tube(name, delay)
                m_r = model.pause_tube(name, delay, now)
                history.append(f"pause-tube {name} {delay}")
            if e_r != m_r:
                fail(f"step {step}: engine {e_r!r} != model {m_r!r}")
        compare(eng, model, pairs, fail, clock.t)


def compare(eng: Engine, model: Model, pairs: list[tuple[Conn, MConn, list[Outcome]]],
            fail: object, now: int) -> None:  # fmt: skip
    def bad(msg: str) -> None:
        fail(msg)  # type: ignore[operator]

    mconns = [m for _, m, _ in pairs]
    for i, (ec, mc, got) in enumerate(pairs):
        if got != mc.woken:
            bad(f"wakes of conn {i}: engine {got} != model {mc.woken}")
        got.clear()
        mc.woken.clear()
        if eng.list_tubes_watched(ec) != [t.name for t in mc.watch]:
            bad(f"watch list of conn {i}")
        if ec.waiting != mc.waiting:
            bad(f"waiting of conn {i}")
    es = eng.stats()
    ms = model.stats(mconns, now)
    diff = {k: (es[k], v) for k, v in ms.items() if es[k] != v}
    if diff:
        bad(f"stats (engine, model): {diff}")
    if eng.list_tubes() != [t.name for t in model.tubes]:
        bad(f"list-tubes {eng.list_tubes()} != {[t.name for t in model.tubes]}")
    for t in model.tubes:
        if eng.stats_tube(t.name) != model.stats_tube(t, now):
            bad(f"stats-tube {t.name}: {eng.stats_tube(t.name)} != {model.stats_tube(t, now)}")
    for jid in range(model.next_id + 1):
        mj = model.jobs.get(jid)
        ej = eng.stats_job(jid)
        if (ej is None) != (mj is None) or (mj is not None and ej != model.stats_job(mj, now)):
            bad(f"stats-job {jid}: {ej} != {mj and model.stats_job(mj, now)}")
    for ec, mc, _ in pairs:
        for peek, mlist in (
            (eng.peek_ready(ec), sorted(mc.use.ready, key=key)),
            (eng.peek_delayed(ec), sorted(mc.use.delay, key=lambda x: (x.deadline, x.id))),
            (eng.peek_buried(ec), mc.use.buried),
        ):
            if (peek.id if peek else None) != (mlist[0].id if mlist else None):
                bad("peek")
    if eng.next_wakeup() != model.next_wakeup(mconns):
        bad(f"next_wakeup {eng.next_wakeup()} != {model.next_wakeup(mconns)}")


@pytest.mark.parametrize("seed", range(40))
def test_engine_matches_model(seed: int) -> None:
    run(seed, 400)
