"""``beanrouter rebalance`` killed mid-move and run again, and under producer and consumer load:
no job is lost, at most one job is live twice (the one being moved when the mover died)."""

from __future__ import annotations

import collections
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import greenstalk
import pytest

from beanrouter.router import Router
from tests.router.cluster import BACKENDS, start_all

from .conftest import NAMES, Env

N_READY = 2000


def put_many(cluster: Env, shard: str, tube: str, bodies: list[bytes], **kw: int) -> None:
    with cluster.client(shard, tube) as c:
        for body in bodies:
            c.put(body, **kw)


def live_bodies(cluster: Env, tube: str) -> collections.Counter[bytes]:
    found: collections.Counter[bytes] = collections.Counter()
    for name in cluster.shards:
        found.update(j.body for j in cluster.jobs(name, tube))
    return found


def moved_count(cluster: Env, owner: str, tube: str) -> int:
    c = cluster.counts(owner, tube)
    return c["ready"] + c["delayed"] + c["buried"]


def test_killed_mid_move_then_run_again(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    ready = [b"r%05d" % i for i in range(N_READY)]
    delayed = [b"d%03d" % i for i in range(40)]
    buried = [b"b%03d" % i for i in range(40)]
    put_many(cluster, "s1", tube, ready)
    put_many(cluster, "s1", tube, delayed, delay=300)
    with cluster.client("s1", tube) as c:
        for body in buried:
            c.bury(c.reserve_job(c.put(body, priority=1)))
    originals = set(ready) | set(delayed) | set(buried)
    config = str(cluster.config())
    kills = 0
    for threshold in (200, 900, 1700):
        proc = cluster.spawn("--config", config)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if moved_count(cluster, "s0", tube) >= threshold:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
        live = live_bodies(cluster, tube)
        assert set(live) == originals, "a job was lost"
        assert sum(live.values()) <= len(originals) + 1
    assert kills >= 1
    code, report = cluster.run_json("--config", config)
    assert code == 0, report
    live = live_bodies(cluster, tube)
    assert set(live) == originals
    assert sum(live.values()) <= len(originals) + 1
    assert cluster.jobs("s1", tube) == []
    states = collections.Counter(j.state for j in cluster.jobs("s0", tube))
    assert states["buried"] == len(buried)
    assert states["delayed"] == len(delayed)
    # the journal is left with no open move: another run has nothing to close or move
    code, report = cluster.run_json("--config", config)
    assert (code, report["moved_total"], report["recovered"]) == (0, 0, [])


def kill_when(cluster: Env, config: str, tube: str, threshold: int) -> bool:
    """Run a rebalance and SIGKILL it once the owner s0 has ``threshold`` jobs of ``tube``."""
    proc = cluster.spawn("--config", config)
    killed = False
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if moved_count(cluster, "s0", tube) >= threshold:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.003)
    proc.wait(timeout=60)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    return killed


def test_killed_while_moving_buried_and_delayed(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    delayed = [b"d%04d" % i for i in range(400)]
    buried = [b"b%04d" % i for i in range(400)]
    put_many(cluster, "s1", tube, delayed, delay=600, priority=3)
    with cluster.client("s1", tube) as c:
        for body in buried:
            c.bury(c.reserve_job(c.put(body, priority=1)), priority=2)
    originals = set(delayed) | set(buried)
    config = str(cluster.config())
    kills = 0
    for threshold in (50, 250, 450, 650):
        kills += kill_when(cluster, config, tube, threshold)
        live = live_bodies(cluster, tube)
        assert set(live) == originals, "a job was lost"
        assert sum(live.values()) <= len(originals) + 1
        # nothing buried or delayed became ready anywhere
        for name in cluster.shards:
            assert cluster.counts(name, tube)["ready"] == 0
    assert kills >= 1
    code, report = cluster.run_json("--config", config)
    assert code == 0, report
    jobs = cluster.jobs("s0", tube)
    assert sorted(j.body for j in jobs) == sorted(originals)
    for job in jobs:
        expected = ("delayed", 3) if job.body.startswith(b"d") else ("buried", 2)
        assert (job.state, job.pri) == expected, job
    assert all(j.time_left > 500 for j in jobs if j.state == "delayed")


def test_under_producer_and_consumer_load(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    put_many(cluster, "s1", tube, [b"pre-%d" % i for i in range(500)])
    acked: set[bytes] = {b"pre-%d" % i for i in range(500)}
    consumed: collections.Counter[bytes] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce(shard: str, prefix: bytes) -> None:
        try:
            with cluster.client(shard, tube) as c:
                for i in range(300):
                    body = prefix + b"%d" % i
                    c.put(body)
                    with lock:
                        acked.add(body)
                    time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    def consume(shard: str) -> None:
        try:
            with cluster.client(shard, tube) as c:
                while True:
                    try:
                        job = c.reserve(timeout=1)
                    except greenstalk.TimedOutError:
                        if stop.is_set():
                            return
                        continue
                    with lock:
                        consumed[job.body] += 1
                    c.delete(job)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=produce, args=("s1", b"old-")),  # a producer not yet reloaded
        threading.Thread(target=produce, args=("s0", b"new-")),
        *(threading.Thread(target=consume, args=(s,)) for s in ("s0", "s0", "s1")),
    ]
    for t in threads:
        t.start()
    config = str(cluster.config())
    codes = [cluster.run("--config", config)[0]]
    for t in threads[:2]:
        t.join(timeout=60)
    codes.append(cluster.run("--config", config)[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if acked <= set(consumed):
                break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert all(code in (0, 1) for code in codes), codes
    assert acked <= set(consumed), f"{len(acked - set(consumed))} acknowledged jobs never consumed"
    twice = [b for b, n in consumed.items() if n > 1]
    assert len(twice) <= 1, twice


def test_router_consumers_on_the_new_configuration(cluster: Env) -> None:
    """Library consumers on the new configuration (owner s0 and its successor) do not look at
    the old owner: the jobs left there reach them once a rebalance moves them, each once."""
    new_place = cluster.placement()
    tube = next(
        f"r{i}" for i in range(5000)
        if new_place.owner(f"r{i}") == "s0" and "s1" not in new_place.preference(f"r{i}")
    )  # fmt: skip
    config = cluster.config()
    acked = {b"stranded-%d" % i for i in range(300)}
    put_many(cluster, "s1", tube, sorted(acked))
    consumed: collections.Counter[bytes] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with Router.from_config(config) as r:
                r.watch(tube)
                r.ignore("default")
                while True:
                    job = r.reserve(timeout=0.5)
                    if job is None:
                        if stop.is_set():
                            return
                        continue
                    with lock:
                        consumed[job.body] += 1
                    job.delete()
        except BaseException as exc:
            errors.append(exc)

    def produce() -> None:
        try:
            with Router.from_config(config) as r:
                r.use(tube)
                for i in range(200):
                    body = b"new-%d" % i
                    r.put(body)
                    with lock:
                        acked.add(body)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(2)]
    threads.append(threading.Thread(target=produce))
    for t in threads:
        t.start()
    code, report = cluster.run_json("--config", str(config))
    assert code in (0, 1), report
    threads[-1].join(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if acked <= set(consumed):
                break
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert acked <= set(consumed)
    assert all(n == 1 for n in consumed.values())
    assert cluster.counts("s1", tube) == {"ready": 0, "delayed": 0, "buried": 0, "reserved": 0}


@pytest.fixture(params=BACKENDS)
def persistent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """Three shards with binlogs (a shard killed comes back with what it acknowledged)."""
    dirs = []
    for name in NAMES:
        (tmp_path / name).mkdir()
        dirs.append(str(tmp_path / name))
    shards = start_all(request.param, len(NAMES), dirs)
    try:
        yield Env(request.param, dict(zip(NAMES, shards, strict=True)), tmp_path)
    finally:
        for shard in shards:
            shard.stop()


@pytest.mark.parametrize("victim", ["s0", "s1"])
def test_a_shard_killed_while_jobs_move_to_it_or_from_it(persistent: Env, victim: str) -> None:
    # Jobs of a tube owned by s0 sit on s1. The mover is running when the owner (s0: jobs move
    # to it) or the source (s1: jobs move from it) is SIGKILLed; the shard restarts from its
    # binlog and the mover is run again until it exits 0: nothing lost, at most one job live
    # twice (the move the kill cut), and the next run closes that too.
    cluster = persistent
    tube = cluster.tube_on("s0")
    originals = [b"k%05d" % i for i in range(1000)]
    put_many(cluster, "s1", tube, originals)
    config = str(cluster.config())
    proc = cluster.spawn("--config", config)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if moved_count(cluster, "s0", tube) >= 300:
            break
        time.sleep(0.003)
    cluster.shards[victim].kill()
    assert proc.wait(timeout=120) in (1, 3)  # a shard failed mid-run: says so, does not hang
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    cluster.shards[victim].restart()
    live = _every_body(cluster, tube)
    assert set(live) == set(originals), "a job was lost"
    assert sum(live.values()) <= len(originals) + 1
    for _ in range(5):
        code, report = cluster.run_json("--config", config)
        if code == 0:
            break
    assert code == 0, report
    live = _every_body(cluster, tube)
    assert set(live) == set(originals) and sum(live.values()) == len(originals)
    assert cluster.counts("s1", tube) == {"ready": 0, "delayed": 0, "buried": 0, "reserved": 0}


def _every_body(cluster: Env, tube: str, upto: int = 4000) -> collections.Counter[bytes]:
    """The bodies of ``tube``'s jobs on every shard, by job id up to ``upto`` (a shard restarted
    from its binlog counts ``total-jobs`` again from what it restored, below its ids)."""
    found: collections.Counter[bytes] = collections.Counter()
    for name in cluster.shards:
        with cluster.client(name) as c:
            for job_id in range(1, upto + 1):
                try:
                    if c.stats_job(job_id)["tube"] == tube:
                        found[c.peek(job_id).body] += 1
                except greenstalk.NotFoundError:
                    continue
    return found
