"""A tube in the last second of its pause, through a real ``beanrouter proxy`` over three real
shards (``/usr/bin/beanstalkd`` and the bundled server): the conformance suite's
``reserve-*-last-second-of-pause`` cases (tests/conformance/test_reserve.py) run on the bundled
cluster only, this is the same scenario over real beanstalkd shards.

A worker watches ``ta`` (owned by one shard) and ``tb`` (owned by another, its failover successor
being ``ta``'s owner). ``ta`` holds the most urgent job and is paused for 1 s, so its
``stats-tube`` reads ``pause: 1``, ``pause-time-left: 0``. One beanstalkd hands out ``tb``'s jobs
at once (``reserve-with-timeout 0`` and a blocking ``reserve-with-timeout 1``), ``TIMED_OUT``
when only ``ta``'s job is left, and ``ta``'s job first once the pause is over. No job is reserved
that is not handed out (``reserves: 1`` each).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from beanrouter import protocol as p
from beanrouter.core import Cluster
from beanrouter.router.config import load_config
from tests.router.cluster import BACKENDS

from .test_failures import Client, Proxy, proxy_over

RWT0 = b"reserve-with-timeout 0\r\n"


def _tubes(config: Path) -> tuple[str, str]:
    """``ta`` and ``tb`` on different owners, ``tb``'s failover successor being ``ta``'s owner."""
    cluster = Cluster(load_config(str(config)))
    ta = "ta"
    owner = cluster.preference(ta)[0]
    for i in range(10_000):
        tb = f"tb{i}"
        pref = cluster.preference(tb)
        if pref[0] != owner and pref[1] == owner:
            return ta, tb
    raise AssertionError("no such tube")


def _reserved(c: Client, cmd: bytes, body: bytes) -> int:
    reply = c.cmd(cmd)
    assert isinstance(reply, p.Reserved) and reply.body == body, (cmd, reply)
    return reply.id


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tube_in_the_last_second_of_its_pause(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    proxy: Proxy = proxy_over(backend, 3, tmp_path, cleanup)
    ta, tb = _tubes(proxy.config)

    worker = proxy.client()
    worker.watch_only(ta, tb)  # before the pause: it reaches ta on its successor too
    producer = proxy.client()
    producer.use(tb)
    for body in (b"b1", b"b2", b"b3", b"b4"):
        assert isinstance(producer.put(body, pri=5), p.Inserted)
    producer.use(ta)
    assert isinstance(producer.put(b"a1", pri=0), p.Inserted)

    assert producer.cmd(b"pause-tube %s 1\r\n" % ta.encode()) == p.Word("PAUSED")
    paused_at = time.monotonic()
    stats = producer.cmd(b"stats-tube %s\r\n" % ta.encode())
    assert isinstance(stats, p.Ok)
    fields = p.parse_mapping(stats.body)
    assert (fields["pause"], fields["pause-time-left"]) == (1, 0), fields

    got = [
        _reserved(worker, RWT0, b"b1"),
        _reserved(worker, RWT0, b"b2"),
        _reserved(worker, b"reserve-with-timeout 1\r\n", b"b3"),
    ]
    assert time.monotonic() - paused_at < 1.0, "too slow: the pause was over before the checks"
    time.sleep(max(0.0, paused_at + 1.3 - time.monotonic()))
    # The pause is over: the most urgent job first, before the older b4.
    got.append(_reserved(worker, RWT0, b"a1"))
    got.append(_reserved(worker, RWT0, b"b4"))
    assert worker.cmd(RWT0) == p.TIMED_OUT

    for job_id in got:  # reserved once each: nothing was reserved without being handed out
        reply = worker.cmd(b"stats-job %d\r\n" % job_id)
        assert isinstance(reply, p.Ok)
        assert p.parse_mapping(reply.body)["reserves"] == 1, reply.body
    worker.close()
    producer.close()


def test_timed_out_while_only_the_paused_tube_has_jobs(
    tmp_path: Path, cleanup: list[object]
) -> None:
    """Only the paused tube has a ready job: ``TIMED_OUT`` (twice), nothing reserved, as one
    beanstalkd answers; the job comes out once the pause is over."""
    proxy = proxy_over("beanstalkd", 3, tmp_path, cleanup)
    ta, tb = _tubes(proxy.config)
    worker = proxy.client()
    worker.watch_only(ta, tb)
    producer = proxy.client()
    producer.use(ta)
    assert isinstance(producer.put(b"a1", pri=0), p.Inserted)
    assert producer.cmd(b"pause-tube %s 1\r\n" % ta.encode()) == p.Word("PAUSED")
    paused_at = time.monotonic()
    assert worker.cmd(RWT0) == p.TIMED_OUT
    assert worker.cmd(RWT0) == p.TIMED_OUT
    assert time.monotonic() - paused_at < 1.0, "too slow: the pause was over before the checks"
    job_id = _reserved(worker, b"reserve-with-timeout 3\r\n", b"a1")  # when the pause lifts
    assert time.monotonic() - paused_at >= 0.9
    reply = worker.cmd(b"stats-job %d\r\n" % job_id)
    assert isinstance(reply, p.Ok)
    assert p.parse_mapping(reply.body)["reserves"] == 1
    worker.close()
    producer.close()
