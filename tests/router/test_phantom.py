"""No phantom reserves: choosing the most urgent job across shards touches no job it does not hand
out (issue 7). Real shards of both kinds, through ``Router`` and ``AsyncRouter``.

The per-job counters a worker sees (``stats-job`` ``reserves``, ``releases``, ``timeouts``) must
be what one beanstalkd shows for the same script; jobs never handed out must be untouched.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from beanrouter.core import ids
from beanrouter.core.ring import Placement
from beanrouter.protocol import (
    Ignore,
    Inserted,
    Ok,
    Reserved,
    StatsJob,
    StatValue,
    Use,
    Watch,
    encode_put,
    parse_mapping,
)
from beanrouter.router.connection import Connection

from .cluster import BEANSTALKD, Shard, stats
from .conftest import NAMES, Cluster

SHELLS = ("blocking", "async")
"""Every test here runs against ``Router`` and ``AsyncRouter``."""

COUNTERS = ("reserves", "releases", "timeouts")


class Direct:
    """A plain beanstalkd client on one connection (the reference: one beanstalkd)."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = Connection.open("direct", host, int(port), 5.0, 10.0)

    def close(self) -> None:
        self.conn.close()

    def use(self, tube: str) -> None:
        self.conn.request(Use(tube).encode())

    def put(self, body: bytes, priority: int) -> int:
        (reply,) = self.conn.request(encode_put(priority, 0, 60, body))
        assert isinstance(reply, Inserted), reply
        return reply.id

    def watch(self, tube: str) -> None:
        self.conn.request(Watch(tube).encode())

    def ignore(self, tube: str) -> None:
        self.conn.request(Ignore(tube).encode())

    def reserve(self, timeout: float) -> tuple[int, bytes] | None:
        (reply,) = self.conn.request(b"reserve-with-timeout %d\r\n" % timeout)
        return (reply.id, reply.body) if isinstance(reply, Reserved) else None

    def stats_job(self, job_id: int) -> dict[str, StatValue]:
        (reply,) = self.conn.request(StatsJob(job_id).encode())
        assert isinstance(reply, Ok), reply
        return parse_mapping(reply.body)

    def delete(self, job_id: int) -> None:
        self.conn.request(b"delete %d\r\n" % job_id)


class Routed:
    """The same operations through a router."""

    def __init__(self, router: Any) -> None:
        self.router = router

    def use(self, tube: str) -> None:
        self.router.use(tube)

    def put(self, body: bytes, priority: int) -> int:
        job_id: int = self.router.put(body, priority=priority, ttr=60)
        return job_id

    def watch(self, tube: str) -> None:
        self.router.watch(tube)

    def ignore(self, tube: str) -> None:
        self.router.ignore(tube)

    def reserve(self, timeout: float) -> tuple[int, bytes] | None:
        job = self.router.reserve(timeout=timeout)
        return None if job is None else (job.id, job.body)

    def stats_job(self, job_id: int) -> dict[str, StatValue]:
        result: dict[str, StatValue] = self.router.stats_job(job_id)
        return result

    def delete(self, job_id: int) -> None:
        self.router.delete(job_id)


def twelve_tubes() -> list[str]:
    """Twelve tubes, four owned by each shard."""
    placement = Placement([(n, 1) for n in NAMES])
    tubes: list[str] = []
    per_owner = dict.fromkeys(NAMES, 0)
    i = 0
    while len(tubes) < 12:
        tube = f"ph{i}"
        i += 1
        owner = placement.owner(tube)
        if per_owner[owner] < 4:
            per_owner[owner] += 1
            tubes.append(tube)
    return tubes


TUBES = twelve_tubes()
PRIORITIES = [(7 * i) % 12 * 10 + 3 for i in range(12)]
"""Distinct, not in the tubes' order."""
DELIVER = 8
"""Jobs reserved by the script; the other four are never handed out."""


def script(client: Direct | Routed) -> tuple[list[tuple[Any, ...]], dict[bytes, int]]:
    """One job per tube, then watch every tube and reserve ``DELIVER`` of them one by one.

    Returns each delivered job's (body, reserves, releases, timeouts, pri, state) and the ids by
    body."""
    put: dict[bytes, int] = {}
    for tube, pri in zip(TUBES, PRIORITIES, strict=True):
        client.use(tube)
        body = f"{tube}:{pri}".encode()
        put[body] = client.put(body, pri)
    for tube in TUBES:
        client.watch(tube)
    client.ignore("default")
    delivered: list[tuple[Any, ...]] = []
    for _ in range(DELIVER):
        got = client.reserve(1)
        assert got is not None
        job_id, body = got
        assert put[body] == job_id
        st = client.stats_job(job_id)
        delivered.append((body, *(st[k] for k in COUNTERS), st["pri"], st["state"]))
        client.delete(job_id)
    return delivered, put


def shard_addresses(cluster: Cluster) -> dict[int, str]:
    """Shard id -> address, from the router's server lines (``addr name id=N``)."""
    out = {}
    for line in cluster.lines:
        address, _, sid = line.split()
        out[int(sid.removeprefix("id="))] = address
    return out


def direct_stats_job(addresses: dict[int, str], job_id: int) -> dict[str, StatValue]:
    shard_id, local = ids.decode(job_id)
    client = Direct(addresses[shard_id])
    try:
        return client.stats_job(local)
    finally:
        client.close()


def test_no_phantom_reserves_one_by_one(cluster: Cluster) -> None:
    reference = Shard(BEANSTALKD)
    reference.spawn()
    try:
        reference.wait_ready()
        one = Direct(reference.address)
        try:
            expected, _ = script(one)
        finally:
            one.close()
        assert int(stats(reference.address)["cmd-release"]) == 0
    finally:
        reference.stop()
    # One beanstalkd: priority order, each job reserved once, never released or timed out.
    assert [row[4] for row in expected] == sorted(PRIORITIES)[:DELIVER]
    assert {row[1:4] for row in expected} == {(1, 0, 0)}

    with cluster.router() as router:
        got, put = script(Routed(router))
        assert got == expected
        assert router.metrics.give_backs == 0
        addresses = shard_addresses(cluster)
        delivered = {row[0] for row in got}
        untouched = [body for body in put if body not in delivered]
        assert len(untouched) == len(TUBES) - DELIVER
        for body in untouched:
            st = direct_stats_job(addresses, put[body])
            assert (st["state"], *(st[k] for k in COUNTERS)) == ("ready", 0, 0, 0), body
        assert {ids.decode(put[b])[0] for b in put} == {0, 1, 2}  # every shard holds jobs
    assert sum(int(stats(s.address)["cmd-release"]) for s in cluster.shards.values()) == 0


def test_no_phantom_reserves_under_load(cluster: Cluster) -> None:
    producers, consumers, total = 2, 3, 600
    deadline = time.monotonic() + 120
    put_ids: set[int] = set()
    first: dict[int, int] = {}  # job id -> reserves on its first delivery
    duplicates: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    produced = threading.Event()
    routers: list[Any] = []

    def produce(seed: int) -> None:
        rng = random.Random(seed)
        with cluster.router() as r:
            for i in range(total // producers):
                r.use(TUBES[(seed + i) % len(TUBES)])
                job_id = r.put(b"job %d %d" % (seed, i), priority=rng.randrange(100), ttr=60)
                with lock:
                    put_ids.add(job_id)

    def consume() -> None:
        r = cluster.router()
        with lock:
            routers.append(r)
        for tube in TUBES:
            r.watch(tube)
        r.ignore("default")
        while time.monotonic() < deadline:
            with lock:
                if produced.is_set() and len(first) >= len(put_ids):
                    return
            job = r.reserve(timeout=0.2)
            if job is None:
                continue
            reserves = int(job.stats()["reserves"])
            with lock:
                if job.id in first:
                    duplicates.append(job.id)
                else:
                    first[job.id] = reserves
            job.delete()

    def guard(target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(consume,)) for _ in range(consumers)]
    for t in threads:
        t.start()
    makers = [threading.Thread(target=guard, args=(produce, p)) for p in range(producers)]
    for t in makers:
        t.start()
    for t in makers:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    produced.set()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 5))
    give_backs = sum(r.metrics.give_backs for r in routers)
    for r in routers:
        r.close()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads + makers)
    assert len(put_ids) == total
    assert set(first) == put_ids  # nothing lost
    assert duplicates == []
    phantom = [job_id for job_id, n in first.items() if n != 1]
    assert len(phantom) <= give_backs, (len(phantom), give_backs)
    for shard in cluster.shards.values():
        st = stats(shard.address)
        assert (st["current-jobs-ready"], st["current-jobs-reserved"]) == (0, 0)
