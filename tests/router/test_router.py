"""The router against three real shards (real beanstalkd and the bundled server alike)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

import pytest

from beanrouter import Job, Router
from beanrouter.core import ids
from beanrouter.router import (
    DeadlineSoon,
    JobIdError,
    NotFound,
    NotIgnored,
    PutUncertain,
    ShardUnavailable,
)

from .cluster import stats
from .conftest import NAMES, Cluster

SHELLS = ("blocking", "async")
"""Every test here runs against ``Router`` and ``AsyncRouter``."""


def _total(cluster: Cluster, key: str) -> int:
    return sum(int(stats(s.address)[key]) for s in cluster.shards.values())


def seed_session(client: Any) -> list[object]:
    """The beanstalkc tutorial's first steps, as a transcript of results."""
    out: list[object] = []
    out.append(client.put("hey!"))
    job = client.reserve()
    out.append(job.body)
    job.delete()
    out.append(client.tubes())
    out.append(client.using())
    out.append(client.use("foo"))
    out.append(client.using())
    out.append(client.tubes())
    out.append(client.use("default"))
    out.append(client.watching())
    out.append(client.watch("foo"))
    out.append(client.watching())
    out.append(client.ignore("bar"))
    out.append(client.ignore("default"))
    out.append(client.watching())
    out.append(client.tubes())
    try:
        client.ignore("foo")
    except NotIgnored:
        out.append("NOT_IGNORED")
    return out


SINGLE_SERVER_TRANSCRIPT = [
    1, b"hey!", ["default"], "default", "foo", "foo", ["default", "foo"], "default", ["default"],
    2, ["default", "foo"], 2, 1, ["foo"], ["default", "foo"], "NOT_IGNORED",
]  # fmt: skip


def test_seed_session(cluster: Cluster) -> None:
    # The same session on one server of the same backend gives the same transcript.
    one = Router([f"{cluster.shards['s0'].address} solo id=0"])
    try:
        assert seed_session(one) == SINGLE_SERVER_TRANSCRIPT
    finally:
        one.close()
    for shard in cluster.shards.values():
        shard.restart()  # fresh servers for the cluster run
    with cluster.router() as r:
        assert seed_session(r) == SINGLE_SERVER_TRANSCRIPT


def test_put_reserve_delete_and_ids(cluster: Cluster, router: Router) -> None:
    tubes = [cluster.tube_on(n) for n in NAMES]
    seen = {}
    for tube in tubes:
        router.use(tube)
        jid = router.put(f"job in {tube}".encode(), ttr=30)
        _, local = ids.decode(jid)
        assert local == 1
        seen[jid] = tube
        assert router.shard_for(tube) == router.preference(tube)[0]
    assert len({ids.decode(j)[0] for j in seen}) == 3
    for tube in tubes:
        router.watch(tube)
    router.ignore("default")
    got = {}
    for _ in tubes:
        job = router.reserve(timeout=1)
        assert job is not None
        assert isinstance(job, Job) or cluster.shell == "async"
        got[job.id] = job.tube
        assert job.body == f"job in {job.tube}".encode()
        assert job.stats()["state"] == "reserved"
        assert job.stats()["id"] == job.id
        job.delete()
    assert got == seen
    assert router.reserve(timeout=0) is None


def test_priority_order_across_shards(cluster: Cluster, router: Router) -> None:
    tubes = [cluster.tube_on(n, "p") for n in NAMES]
    pris = {tubes[0]: [50, 5, 500], tubes[1]: [7, 70, 700], tubes[2]: [1, 1000, 60]}
    for tube, values in pris.items():
        router.use(tube)
        for p in values:
            router.put(str(p), priority=p)
        router.watch(tube)
    order = []
    for _ in range(9):
        job = router.reserve(timeout=1)
        assert job is not None
        order.append(job.priority)
        assert job.body == str(job.priority).encode()
        job.delete()
    assert order == sorted(order)
    # Losers were given back with their own priority, and nothing is left reserved.
    assert _total(cluster, "current-jobs-reserved") == 0
    assert _total(cluster, "current-jobs-ready") == 0


def test_released_losers_keep_priority(cluster: Cluster, router: Router) -> None:
    a, b = cluster.tube_on("s0", "r"), cluster.tube_on("s1", "r")
    router.use(a)
    ja = router.put(b"a", priority=10)
    router.use(b)
    jb = router.put(b"b", priority=20)
    router.watch(a)
    router.watch(b)
    job = router.reserve(timeout=0)
    assert job is not None and job.id == ja
    assert router.stats_job(jb)["state"] == "ready"
    assert router.stats_job(jb)["pri"] == 20
    job.release()
    assert router.stats_job(ja)["pri"] == 10


def test_no_stranded_jobs(cluster: Cluster) -> None:
    tubes = [cluster.tube_on(n, "s") for n in NAMES]
    producer = cluster.router()
    consumer = cluster.router()
    for tube in tubes:
        consumer.watch(tube)
    put_ids: set[int] = set()
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set() and i < 150:
            producer.use(tubes[i % 3])
            put_ids.add(producer.put(f"{i}".encode(), priority=i % 7))
            i += 1
            if i % 10 == 0:
                time.sleep(0.01)

    thread = threading.Thread(target=produce)
    thread.start()
    got: list[int] = []
    released = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = consumer.reserve(timeout=0.2 if len(got) % 3 else 1)
        if job is None:
            if not thread.is_alive() and len(got) == 150:
                break
            continue
        if len(got) % 17 == 5 and released < 5:
            released += 1
            job.release()
            continue
        got.append(job.id)
        job.delete()
    stop.set()
    thread.join()
    assert sorted(got) == sorted(put_ids)
    assert len(set(got)) == len(got)
    consumer.close()
    producer.close()
    assert _total(cluster, "current-jobs-reserved") == 0
    assert _total(cluster, "current-jobs-ready") == 0


def test_close_releases_held_jobs(cluster: Cluster) -> None:
    r = cluster.router()
    tubes = [cluster.tube_on(n, "c") for n in NAMES]
    for tube in tubes:
        r.use(tube)
        r.put(b"x")
        r.put(b"y")
        r.watch(tube)
    held = [r.reserve(timeout=1) for _ in range(4)]
    assert all(held)
    assert _total(cluster, "current-jobs-reserved") == 4
    r.close()
    time.sleep(0.05)
    assert _total(cluster, "current-jobs-reserved") == 0
    assert _total(cluster, "current-jobs-ready") == 6


def test_reserve_timeouts(router: Router) -> None:
    t = time.monotonic()
    assert router.reserve(timeout=0) is None
    assert time.monotonic() - t < 0.5
    t = time.monotonic()
    assert router.reserve(timeout=1) is None
    elapsed = time.monotonic() - t
    assert 0.95 <= elapsed < 3.0  # never early; generous upper bound (loaded machines)
    t = time.monotonic()
    assert router.reserve(timeout=0.3) is None
    elapsed = time.monotonic() - t
    assert 0.28 <= elapsed < 2.0


def test_blocked_reserve_wakes_for_any_shard(cluster: Cluster) -> None:
    consumer = cluster.router()
    producer = cluster.router()
    tubes = [cluster.tube_on(n, "w") for n in NAMES]
    for tube in tubes:
        consumer.watch(tube)
    for tube in tubes:
        result: list[Job | None] = []
        thread = threading.Thread(target=lambda out=result: out.append(consumer.reserve()))
        thread.start()
        time.sleep(0.1)
        producer.use(tube)
        jid = producer.put(b"wake")
        thread.join(timeout=10)
        assert not thread.is_alive()
        job = result[0]
        assert job is not None and job.id == jid and job.tube == tube
        job.delete()
    consumer.close()
    producer.close()
    assert _total(cluster, "current-jobs-reserved") == 0


def test_idle_consumer_costs_one_command_per_timeout(cluster: Cluster, router: Router) -> None:
    for name in NAMES:
        router.watch(cluster.tube_on(name, "i"))
    relevant = {n for t in router.watching() for n in router.preference(t)}

    def counts() -> dict[str, int]:
        out = {}
        for name in relevant:
            st = stats(cluster.shards[name].address)
            out[name] = int(st["cmd-reserve"]) + int(st["cmd-reserve-with-timeout"])
        return out

    before = counts()
    for _ in range(3):
        assert router.reserve(timeout=1) is None
    after = counts()
    # One sweep (reserve-with-timeout 0) on the first call, then one wait per call: never a poll.
    assert all(after[n] - before[n] <= 1 + 3 for n in relevant), (before, after)


def test_deadline_soon(cluster: Cluster, router: Router) -> None:
    router.put(b"short", ttr=2)
    job = router.reserve(timeout=0)
    assert job is not None
    t = time.monotonic()
    with pytest.raises(DeadlineSoon):
        router.reserve(timeout=5)  # interrupted at deadline - 1 s
    assert 0.5 <= time.monotonic() - t < 2.0  # at deadline - 1 s, before the TTR (2 s) ends
    with pytest.raises(DeadlineSoon):
        router.reserve(timeout=0)
    # A ready job wins over DEADLINE_SOON, as on one beanstalkd.
    router.put(b"other")
    other = router.reserve(timeout=0)
    assert other is not None and other.body == b"other"
    other.delete()
    job.touch()
    assert router.reserve(timeout=0) is None  # touched: no longer near its deadline
    job.delete()


def test_job_operations(cluster: Cluster, router: Router) -> None:
    tube = cluster.tube_on("s2", "j")
    router.use(tube)
    router.watch(tube)
    jid = router.put(b"x", priority=100, ttr=10)
    job = router.reserve(timeout=0)
    assert job is not None and job.id == jid
    job.release(priority=42, delay=1)
    assert router.stats_job(jid)["state"] == "delayed"
    assert router.stats_job(jid)["pri"] == 42
    delayed = router.peek_delayed()
    assert delayed is not None and delayed.id == jid
    router.kick_job(jid)
    ready = router.peek_ready()
    assert ready is not None and ready.id == jid and ready.priority == 42
    job = router.reserve(timeout=0)
    assert job is not None
    job.bury()
    buried = router.peek_buried()
    assert buried is not None and buried.id == jid
    assert router.kick(10) == 1
    job = router.reserve_job(jid)
    assert job.body == b"x" and job.tube == tube
    job.touch()
    with pytest.raises(NotFound):
        router.reserve_job(jid)
    job.delete()
    assert router.peek(jid) is None
    with pytest.raises(NotFound):
        router.delete(jid)
    with pytest.raises(JobIdError):
        router.peek((999 << ids.LOCAL_BITS) | 1)
    with pytest.raises(NotFound):
        router.release(jid)
    pid = router.put(b"peeked")
    peeked = router.peek(pid)
    assert peeked is not None and peeked.body == b"peeked" and peeked.tube == tube
    router.delete(pid)


def test_merged_admin(cluster: Cluster, router: Router) -> None:
    tubes = [cluster.tube_on(n, "a") for n in NAMES]
    for i, tube in enumerate(tubes):
        router.use(tube)
        for _ in range(i + 1):
            router.put(b"x")
    router.use("default")
    assert set(tubes) <= set(router.tubes())
    st = router.stats()
    assert st["current-jobs-ready"] == 6
    assert st["cmd-put"] == 6
    assert st["shards"] == 3 and st["shards-up"] == 3
    assert "pid" not in st
    assert st["max-job-size"] == 65535
    assert st["current-tubes"] == len(router.tubes())
    for i, tube in enumerate(tubes):
        assert router.stats_tube(tube)["current-jobs-ready"] == i + 1
    with pytest.raises(NotFound):
        router.stats_tube("nothing-here")
    router.pause_tube(tubes[0], 1)
    assert router.stats_tube(tubes[0])["pause"] == 1
    with pytest.raises(NotFound):
        router.pause_tube("nothing-here", 1)


def test_failover_when_owner_is_killed(cluster: Cluster) -> None:
    tube = cluster.tube_on("s1", "f")
    with cluster.router() as r:
        owner, successor = r.preference(tube)
        r.use(tube)
        r.watch(tube)
        first = r.put(b"before")
        cluster.shards[owner].kill()
        jid = r.put(b"during")  # refused before sending: goes to the successor at once
        assert ids.decode(jid)[0] != ids.decode(first)[0]
        for _ in range(5):
            r.put(b"more")
        assert r.shard_for(tube) == successor  # marked down after repeated refusals
        job = r.reserve(timeout=1)
        assert job is not None and job.body == b"during"
        job.delete()
        cluster.shards[owner].restart()
        time.sleep(0.6)  # past the first probe interval
        again = r.put(b"back")
        assert r.shard_for(tube) == owner
        assert ids.decode(again)[0] == ids.decode(first)[0]


def test_put_unavailable(cluster: Cluster) -> None:
    tube = cluster.tube_on("s0", "u")
    with cluster.router() as r:
        for name in r.preference(tube):
            cluster.shards[name].kill()
        r.use(tube)
        with pytest.raises(ShardUnavailable) as info:
            r.put(b"x")
        assert {name for name, _ in info.value.causes} == set(r.preference(tube))
        r.watch(tube)
        r.ignore("default")
        with pytest.raises(ShardUnavailable):
            r.reserve(timeout=0)


def test_put_uncertain() -> None:
    # A shard that accepts the put and never answers: the put's fate is unknown.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with Router([f"127.0.0.1:{port} mute id=0"], timeout=0.3) as r:
            with pytest.raises(PutUncertain) as info:
                r.put(b"x")
            assert info.value.shard == "mute"


def test_one_shard_is_id_transparent(cluster: Cluster) -> None:
    with Router([f"{cluster.shards['s1'].address} only id=0"]) as r:
        assert [r.put(b"a"), r.put(b"b")] == [1, 2]
        job = r.reserve(timeout=0)
        assert job is not None and job.id == 1
        job.delete()


def test_blocked_reserve_picks_up_a_returning_shard(cluster: Cluster) -> None:
    tube = cluster.tube_on("s0", "b")
    with cluster.router() as r:
        owner = r.preference(tube)[0]
        r.watch(tube)
        r.ignore("default")
        cluster.shards[owner].kill()
        result: list[Job | None] = []
        thread = threading.Thread(target=lambda: result.append(r.reserve(timeout=8)))
        thread.start()
        time.sleep(0.3)
        cluster.shards[owner].restart()
        # A job that appears on the returning shard (as one restored from its binlog would).
        with Router([f"{cluster.shards[owner].address} direct id=0"]) as direct:
            direct.use(tube)
            local = direct.put(b"restored")
        thread.join(timeout=15)
        job = result[0]
        assert job is not None and job.body == b"restored"
        assert ids.decode(job.id)[1] == local
        job.delete()


def test_watch_order_is_beanstalkds(cluster: Cluster, router: Router) -> None:
    from beanrouter.protocol import Ok, parse_list
    from beanrouter.router.connection import Connection

    host, port = cluster.shards["s0"].address.rsplit(":", 1)
    direct = Connection.open("direct", host, int(port), 2.0, 2.0)
    try:
        ops = [("watch", "a"), ("watch", "b"), ("watch", "c"), ("ignore", "default"),
               ("watch", "d"), ("ignore", "a"), ("watch", "default"), ("ignore", "c"),
               ("watch", "b"), ("ignore", "zzz")]  # fmt: skip
        for op, tube in ops:
            (count,) = direct.request(f"{op} {tube}\r\n".encode())
            assert getattr(router, op)(tube) == getattr(count, "count", None)
            (listed,) = direct.request(b"list-tubes-watched\r\n")
            assert isinstance(listed, Ok)
            assert router.watching() == parse_list(listed.body)
    finally:
        direct.close()


def test_draining_shard_is_skipped_by_puts(cluster: Cluster) -> None:
    tube = cluster.tube_on("s2", "d")
    with cluster.router() as r:
        owner, successor = r.preference(tube)
        r.use(tube)
        proc = cluster.shards[owner].proc
        assert proc is not None
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        assert stats(cluster.shards[owner].address)["draining"] is True
        jid = r.put(b"not lost")
        successor_id = next(s.id for s in r.config.servers if s.name == successor)
        assert ids.decode(jid)[0] == successor_id


def test_a_job_reserved_alone_costs_no_stats_job_until_its_fields_are_asked(
    cluster: Cluster, router: Router
) -> None:
    # The blocking Router hands out a job its reserve got alone without reading its stats-job
    # (reserve + delete: two round trips, as with one beanstalkd client); ``tube`` and
    # ``priority`` are read when asked, and ``release()`` keeps the job's own priority.
    tube = cluster.tube_on("s0", "lazy")
    router.use(tube)
    router.watch(tube)
    router.ignore("default")
    router.reserve(timeout=0)  # (the first reserve also scans the shards)
    for pri in (7, 9):
        router.put(b"x", priority=pri)
    before = _total(cluster, "cmd-stats-job")
    first = router.reserve(timeout=0)
    assert first is not None
    first.delete()
    lazy = isinstance(router, Router)
    assert _total(cluster, "cmd-stats-job") == before + (0 if lazy else 1)
    job = router.reserve(timeout=0)
    assert job is not None and job.tube == tube  # (one tube watched: known without a look)
    assert _total(cluster, "cmd-stats-job") == before + (0 if lazy else 2)
    assert job.priority == 9
    job.release()
    job = router.reserve(timeout=0)
    assert job is not None and router.stats_job(job.id)["pri"] == 9
    job.bury()
    assert router.stats_job(job.id)["pri"] == 9 and router.stats_job(job.id)["state"] == "buried"
