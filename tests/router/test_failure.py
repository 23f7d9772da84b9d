"""The router under failure: interrupted calls, lost reservations, stopped shards, odd timeouts.

Each test breaks something on purpose (an exception injected between a send and its reply, a
shard frozen with SIGSTOP so a request times out, a shard killed) and checks the invariants of
docs/router.md: no job stays reserved on the caller's behalf without being handed out, no reply
is read as the answer to a later command, and an operation on a job whose connection was lost
says so instead of acting on it from another connection. Real beanstalkd only: the behaviour
under test is the router's (the shard protocol is the same for both backends).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from beanrouter import Router
from beanrouter.core import Outcome, Round, ids
from beanrouter.protocol import INTERNAL_ERROR
from beanrouter.router import DEFAULT_PRIORITY, ReservationLost, RouterError, ShardUnavailable
from beanrouter.router.connection import Connection
from beanrouter.router.driver import Driver

from .cluster import BEANSTALKD, Shard, start_all, stats
from .conftest import NAMES, Cluster, server_lines

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bk() -> Iterator[Cluster]:
    shards = start_all(BEANSTALKD, len(NAMES))
    try:
        yield Cluster(BEANSTALKD, dict(zip(NAMES, shards, strict=True)), server_lines(shards))
    finally:
        for shard in shards:
            shard.stop()


def _reserved(cluster: Cluster) -> int:
    return sum(int(stats(s.address)["current-jobs-reserved"]) for s in cluster.shards.values())


def _ready(cluster: Cluster) -> int:
    return sum(int(stats(s.address)["current-jobs-ready"]) for s in cluster.shards.values())


def _shard_of(cluster: Cluster, r: Router, job_id: int) -> tuple[str, Shard]:
    shard_id = ids.decode(job_id)[0]
    name = next(s.name for s in r.config.servers if s.id == shard_id)
    return name, cluster.shards[name]


def _until(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def _answers(r: Any, job_id: int) -> bool:
    """Whether the shard of ``job_id`` is taking requests (not marked down)."""
    try:
        r.stats_job(job_id)
    except ShardUnavailable:
        return False
    return True


class Interrupt(Exception):
    """Stands for KeyboardInterrupt (or any exception a signal handler raises)."""


def _interrupt_once(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make the next call of ``Connection.<method>`` raise ``Interrupt`` (before receiving)."""
    original = getattr(Connection, method)

    def boom(self: Connection, *args: object) -> object:
        monkeypatch.setattr(Connection, method, original)
        raise Interrupt

    monkeypatch.setattr(Connection, method, boom)


def test_interrupted_blocking_reserve_strands_nothing(bk: Cluster) -> None:
    # Ctrl-C (here: a signal handler's exception) while blocked in reserve(): the waits still
    # pending on the shards must be cancelled, or the next job put is reserved by a wait nobody
    # reads and stays reserved until the router happens to be used again.
    consumer, producer = bk.router(), bk.router()

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupt

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupt):
            consumer.reserve()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    jid = producer.put(b"after the interrupt")
    time.sleep(0.1)
    assert _reserved(bk) == 0
    assert producer.stats_job(jid)["state"] == "ready"
    job = consumer.reserve(timeout=1)
    assert job is not None and job.id == jid
    job.delete()
    consumer.close()
    producer.close()


@pytest.mark.parametrize("method", ["pump", "read_next"])
def test_interrupted_sweep_leaves_no_stale_reply(
    bk: Cluster, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # An exception between a request and its reply (in the sweep's reads, or in the stats-job
    # of the job it found) left the reply in the socket: the next command on that connection
    # read it as its own answer (delete got stats-job's OK, reserve returned None with jobs
    # ready) and the job found stayed reserved, handed to nobody.
    with bk.router() as r:
        for body in (b"a", b"b", b"c"):
            r.put(body)
        a = r.reserve(timeout=0)
        assert a is not None and a.body == b"a"
        _interrupt_once(monkeypatch, method)
        with pytest.raises(Interrupt):
            r.reserve(timeout=0)
        # The connection that was mid-request also held `a`: it was closed, so `a` is ready
        # again and only the handed-out jobs may be reserved: none.
        assert _until(lambda: _reserved(bk) == 0)
        with pytest.raises(ReservationLost):
            a.delete()
        got = []
        while (job := r.reserve(timeout=0)) is not None:
            got.append(job.body)
            job.delete()
        assert sorted(got) == [b"a", b"b", b"c"]
        assert _reserved(bk) == 0 and _ready(bk) == 0


def test_interrupted_put_does_not_shift_ids(bk: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # A put interrupted after sending left its INSERTED owed on the control connection; when it
    # had not arrived yet, the next put was sent on the same connection and returned the earlier
    # job's id (and every later reply on that connection answered the command before it).
    with bk.router() as r:
        r.put(b"warm-up")  # the control connection exists and uses "default"
        owner = bk.shards[r.shard_for("default")]
        assert owner.proc is not None
        owner.proc.send_signal(signal.SIGSTOP)  # its reply cannot arrive before the next put
        try:
            _interrupt_once(monkeypatch, "read_next")
            with pytest.raises(Interrupt):
                r.put(b"first")
            threading.Timer(0.3, owner.proc.send_signal, (signal.SIGCONT,)).start()
            second = r.put(b"second")
        finally:
            owner.proc.send_signal(signal.SIGCONT)
        peeked = r.peek(second)
        assert peeked is not None and peeked.body == b"second"
        assert r.stats_job(second)["id"] == second


def test_lost_reservation_is_reported_not_acted_on_elsewhere(bk: Cluster) -> None:
    # The connection holding two jobs times out (its shard is frozen) in a later request and is
    # closed: the shard puts both jobs back to ready. delete/release of them used to go to the
    # control connection, where delete silently deleted the ready job and release said only
    # NOT_FOUND. Each must say that the reservation was lost, and leave the job alone.
    with bk.router(timeout=0.5) as r:
        first, second = r.put(b"1"), r.put(b"2")
        j1, j2 = r.reserve(timeout=0), r.reserve(timeout=0)
        assert j1 is not None and j2 is not None and {j1.id, j2.id} == {first, second}
        name, shard = _shard_of(bk, r, first)
        assert shard.proc is not None
        shard.proc.send_signal(signal.SIGSTOP)
        try:
            assert r.reserve(timeout=0) is None  # the sweep on the holding connection times out
        finally:
            shard.proc.send_signal(signal.SIGCONT)
        assert _until(lambda: _reserved(bk) == 0)
        with pytest.raises(ReservationLost) as info:
            j1.delete()
        assert info.value.shard == name and "back to ready" in str(info.value)
        with pytest.raises(ReservationLost):
            j2.release()
        # (The frozen shard failed twice in a row when the reserve read the held jobs' TTR
        # first, on the holding connection, then looked on a new one: it is marked down until
        # its retry; the job is there all along.)
        assert _until(lambda: _answers(r, first))
        assert r.stats_job(first)["state"] == "ready"  # not deleted behind the caller's back
        again = r.reserve(timeout=0)
        assert again is not None and again.id in (first, second)
        again.delete()  # a reservation made again works as usual


def test_unusable_stats_job_reply_does_not_strand_the_job(
    bk: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep's stats-job (to rank the jobs found) answered with something other than OK:
    # the job was skipped without being given back, reserved on behalf of nobody.
    original = Driver._execute

    def execute(self: Driver, rnd: Round) -> Outcome:
        outcome = original(self, rnd)
        if rnd.sends and rnd.sends[0].data.startswith(b"stats-job"):
            return {
                link: [INTERNAL_ERROR] * len(got) if isinstance(got, list) else got
                for link, got in outcome.items()
            }
        return outcome

    with bk.router() as r:
        r.put(b"x")
        monkeypatch.setattr(Driver, "_execute", execute)
        got = r.reserve(timeout=0)
        monkeypatch.setattr(Driver, "_execute", original)
        if got is None:  # its stats-job was read (the async shell): given back, not stranded
            assert _until(lambda: _reserved(bk) == 0)
            got = r.reserve(timeout=0)
        else:  # the blocking Router hands a job it got alone out without it (reserve.hold)
            assert r.stats_job(got.id)["state"] == "reserved"
        assert got is not None and got.body == b"x"
        got.delete()
        assert _reserved(bk) == 0


@pytest.mark.parametrize("timeout", [float("inf"), 2.0**40])
def test_unbounded_reserve_timeouts(bk: Cluster, timeout: float) -> None:
    # reserve(timeout=inf) raised OverflowError and timeouts beyond a C int raised the codec's
    # LocalProtocolError, after the sweep, in the middle of arming the waits.
    with bk.router() as consumer, bk.router() as producer:
        threading.Timer(0.2, producer.put, (b"late",)).start()
        job = consumer.reserve(timeout=timeout)
        assert job is not None and job.body == b"late"
        job.delete()
        assert _reserved(bk) == 0


def test_default_priority_is_1024(bk: Cluster) -> None:
    # The API is put(body, priority=1024, delay=0, ttr=120).
    assert DEFAULT_PRIORITY == 1024
    with bk.router() as r:
        jid = r.put("défaut")
        assert r.stats_job(jid)["pri"] == 1024
        assert r.stats_job(jid)["ttr"] == 120
        job = r.reserve(timeout=0)
        assert job is not None and job.body == "défaut".encode() and job.priority == 1024
        job.release()
        assert r.stats_job(jid)["pri"] == 1024


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_leak_and_close_with_a_shard_down(bk: Cluster) -> None:
    # Many reserves (fractional timeouts cancel their waits by closing connections), releases,
    # a shard killed mid-way (failover, failed probes, lost reservations): close() leaves no
    # descriptor open, and releases what it held on the shards still up.
    tubes = [bk.tube_on(n, "fd") for n in NAMES]
    before = _fds()
    r = bk.router(timeout=1.0)
    for tube in tubes:
        r.watch(tube)
    killed = False
    held = []
    for i in range(60):
        r.use(tubes[i % 3])
        r.put(b"%d" % i)
        for timeout in (0.05 if i % 4 else 0, 0.02):
            job = r.reserve(timeout=timeout)
            if job is None:
                continue
            with contextlib.suppress(ReservationLost, ShardUnavailable):
                if i % 5 == 0:
                    job.release()
                elif i % 7 == 0:
                    held.append(job)  # kept reserved until close()
                else:
                    job.delete()
        if i == 30:
            bk.shards["s1"].kill()
            killed = True
    assert killed
    # Every connection kept is in a known state: no reply owed, no reserve left unsettled (but
    # for the waits a reserve left armed for the next one: Session.linger).
    for link in r._session.all_links():
        if link not in r._session.lingering:
            assert link.owed == 0 and not link.reserving, link
    assert _fds() > before
    r.close()
    assert _fds() == before
    live = [s for n, s in bk.shards.items() if n != "s1"]
    assert _until(lambda: sum(int(stats(s.address)["current-jobs-reserved"]) for s in live) == 0)


def test_ids_are_the_same_in_another_process(bk: Cluster) -> None:
    # Derived shard ids (no id=): a job put by another process is deleted here by its id.
    lines = [f"{s.address} {n}" for n, s in bk.shards.items()]
    tube = bk.tube_on("s2", "x")
    code = (
        "import sys\n"
        "from beanrouter import Router\n"
        "with Router(sys.argv[1:-1]) as r:\n"
        "    r.use(sys.argv[-1])\n"
        "    print(r.put(b'from afar'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *lines, tube],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    jid = int(out.stdout)
    with Router(lines) as r:
        assert ids.decode(jid)[0] == next(s.id for s in r.config.servers if s.name == "s2")
        job = r.peek(jid)
        assert job is not None and job.body == b"from afar" and job.tube == tube
        r.delete(jid)
        assert r.peek(jid) is None


def test_close_from_another_thread_ends_a_blocked_reserve(bk: Cluster) -> None:
    # Closing the sockets under a reserve blocked in another thread dropped them from its epoll
    # set silently: the reserve never returned, whatever happened later.
    before = _fds()
    r = bk.router()
    out: list[object] = []

    def consume() -> None:
        try:
            out.append(r.reserve())
        except RouterError as exc:
            out.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.2)
    r.close()
    thread.join(timeout=3)
    assert not thread.is_alive(), "reserve() still blocked after close()"
    assert isinstance(out[0], RouterError) and "closed" in str(out[0])
    assert _fds() == before
    with bk.router() as producer:
        jid = producer.put(b"after close")
        assert producer.stats_job(jid)["state"] == "ready"
    with pytest.raises(RouterError):
        r.reserve(timeout=0)


def test_close_from_a_signal_handler_ends_a_blocked_reserve(bk: Cluster) -> None:
    # The usual shutdown: a SIGTERM handler closes the router while the main thread is blocked
    # in reserve(). (SIGUSR1 here; SIGALRM fires 3 s later only if the reserve is still stuck.)
    r = bk.router()

    def close(signum: int, frame: FrameType | None) -> None:
        r.close()

    def stuck(signum: int, frame: FrameType | None) -> None:
        raise Interrupt("reserve() still blocked after close()")

    previous = signal.signal(signal.SIGUSR1, close), signal.signal(signal.SIGALRM, stuck)
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(RouterError, match="closed"):
            r.reserve()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGUSR1, previous[0])
        signal.signal(signal.SIGALRM, previous[1])
    with bk.router() as producer:
        jid = producer.put(b"after close")
        time.sleep(0.05)
        assert producer.stats_job(jid)["state"] == "ready"


def test_unclosed_routers_leak_no_descriptors(bk: Cluster) -> None:
    # A router dropped without close() (after a wait, which creates its wake-up socket pair)
    # frees every descriptor when collected.
    gc.collect()  # (what earlier tests left to the collector is not counted)
    before = _fds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        for _ in range(20):
            r = bk.router()
            assert r.reserve(timeout=0.01) is None
        del r
        gc.collect()
    assert _fds() == before


def test_close_before_the_wait_starts(bk: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    # close() (from a signal handler, say) while reserve() is still sweeping, before the wait
    # has anything to wake: the wait must not start.
    from beanrouter.core import reserve as core_reserve

    r = bk.router()
    for name in ("s0", "s1"):  # tubes of two owners: the reserve looks before it waits
        r.watch(bk.tube_on(name, "c"))
    assert r.reserve(timeout=0) is None  # links exist: nothing left to open
    sweep = core_reserve._sweep

    def closing_sweep(*args: Any) -> Any:
        r.close()
        return (yield from sweep(*args))

    monkeypatch.setattr(core_reserve, "_sweep", closing_sweep)
    t = time.monotonic()
    with pytest.raises(RouterError, match="closed"):
        r.reserve(timeout=3)
    assert time.monotonic() - t < 1.0
