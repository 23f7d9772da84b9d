"""The proxy's record of the shards' heads (``core/heads.py``) through a real ``beanrouter proxy``
over three real shards (``/usr/bin/beanstalkd`` and the bundled server).

A worker watches three tubes, each owned by another shard; other clients put, reserve by id,
release, bury, kick and pause on the same proxy in between. Every reserve must give the job one
beanstalkd would give at that moment (the most urgent; a paused tube's and a delayed job's
only when they may be), whatever the records said, and no job may be reserved that is not
handed out (``reserves``/``releases`` as one beanstalkd counts them).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from beanrouter import protocol as p
from beanrouter.core import Cluster
from beanrouter.router.config import load_config
from tests.router.cluster import BACKENDS

from .test_failures import Client, proxy_over

RWT0 = b"reserve-with-timeout 0\r\n"


def _three_owners(config: Path) -> list[str]:
    cluster = Cluster(load_config(str(config)))
    tubes: dict[str, str] = {}
    for i in range(10_000):
        tube = f"h{i}"
        tubes.setdefault(cluster.preference(tube)[0], tube)
        if len(tubes) == 3:
            return list(tubes.values())
    raise AssertionError("no such tubes")


def _put(c: Client, tube: str, body: bytes, pri: int, delay: int = 0) -> int:
    c.use(tube)
    reply = c.cmd(b"put %d %d 60 %d\r\n%s\r\n" % (pri, delay, len(body), body))
    assert isinstance(reply, p.Inserted), reply
    assert reply.id is not None
    return reply.id


def _stats(c: Client, job_id: int) -> dict[str, p.StatValue]:
    reply = c.cmd(b"stats-job %d\r\n" % job_id)
    assert isinstance(reply, p.Ok), reply
    return p.parse_mapping(reply.body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_reserve_gives_what_one_beanstalkd_gives(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    proxy = proxy_over(backend, 3, tmp_path, cleanup)
    ta, tb, tc = _three_owners(proxy.config)
    worker, producer, other = proxy.client(), proxy.client(), proxy.client()
    worker.watch_only(ta, tb, tc)
    handed: list[int] = []

    def reserve(expect: bytes | None) -> None:
        reply = worker.cmd(RWT0)
        if expect is None:
            assert reply == p.TIMED_OUT, reply
            return
        assert isinstance(reply, p.Reserved) and reply.body == expect, (expect, reply)
        handed.append(reply.id)
        assert worker.cmd(b"delete %d\r\n" % reply.id) == p.Word("DELETED")

    def stats_first(job_id: int) -> None:
        fields = _stats(other, job_id)
        assert (fields["reserves"], fields["releases"]) == (0, 0), fields

    _put(producer, ta, b"a1", 10)
    b1 = _put(producer, tb, b"b1", 20)
    _put(producer, tc, b"c1", 30)
    reserve(b"a1")  # the first choice asks every shard; what comes next is recorded
    _put(producer, tc, b"c2", 5)  # more urgent than what is recorded for tc
    reserve(b"c2")

    # Another client takes b1 by id, then releases it, more urgent than a job put meanwhile.
    stats_first(b1)
    assert isinstance(other.cmd(b"reserve-job %d\r\n" % b1), p.Reserved)
    reserve(b"c1")  # (tb has no ready job now)
    _put(producer, ta, b"a2", 40)
    assert other.cmd(b"release %d 1 0\r\n" % b1) == p.Word("RELEASED")
    reserve(b"b1")
    reserve(b"a2")

    # A buried job is not reserved; kicked, it is, before a less urgent one put meanwhile.
    a3 = _put(producer, ta, b"a3", 3)
    assert isinstance(other.cmd(b"reserve-job %d\r\n" % a3), p.Reserved)
    assert other.cmd(b"bury %d 3\r\n" % a3) == p.Buried()
    _put(producer, tc, b"c3", 50)
    reserve(b"c3")
    _put(producer, tb, b"b2", 60)
    other.use(ta)
    assert other.cmd(b"kick 1\r\n") == p.Kicked(1)
    reserve(b"a3")
    reserve(b"b2")
    reserve(None)

    # A paused tube's job is not handed out, however urgent; then it is.
    _put(producer, tb, b"b3", 0)
    _put(producer, tc, b"c4", 50)
    assert producer.cmd(b"pause-tube %s 1\r\n" % tb.encode()) == p.Word("PAUSED")
    paused_at = time.monotonic()
    reserve(b"c4")
    reserve(None)
    assert time.monotonic() - paused_at < 1.0, "too slow: the pause was over before the checks"
    time.sleep(max(0.0, paused_at + 1.3 - time.monotonic()))
    reserve(b"b3")

    # A delayed job is handed out once it is ready, before a less urgent one put since.
    _put(producer, ta, b"a4", 0, delay=1)
    put_at = time.monotonic()
    _put(producer, tc, b"c5", 100)
    _put(producer, tb, b"b4", 100)
    reserve(b"c5")
    time.sleep(max(0.0, put_at + 1.3 - time.monotonic()))
    reserve(b"a4")
    reserve(b"b4")
    reserve(None)

    # Nothing was reserved that was not handed out.
    for job_id in handed:
        reply = other.cmd(b"stats-job %d\r\n" % job_id)
        assert reply == p.NOT_FOUND  # (deleted)
    for c in (worker, producer, other):
        c.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_counters_of_jobs_handed_out_from_records(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """Jobs taken by ``reserve-job`` from what the records said show the counters one
    beanstalkd shows: one reserve each, nothing released."""
    proxy = proxy_over(backend, 3, tmp_path, cleanup)
    tubes = _three_owners(proxy.config)
    worker, producer = proxy.client(), proxy.client()
    worker.watch_only(*tubes)
    bodies = {}
    for i in range(30):
        tube = tubes[i % 3]
        bodies[_put(producer, tube, b"j%d" % i, 100 + (i * 7) % 11)] = 100 + (i * 7) % 11
    got = []
    for _ in range(30):
        reply = worker.cmd(RWT0)
        assert isinstance(reply, p.Reserved), reply
        fields = _stats(worker, reply.id)
        assert (fields["reserves"], fields["releases"], fields["state"]) == (1, 0, "reserved")
        got.append(fields["pri"])
        assert worker.cmd(b"delete %d\r\n" % reply.id) == p.Word("DELETED")
    assert got == sorted(bodies.values())  # most urgent first
    assert worker.cmd(RWT0) == p.TIMED_OUT
    worker.close()
    producer.close()
