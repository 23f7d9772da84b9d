"""Growing a cluster strands nothing, whatever the process history (``core/scan.py``).

Jobs are put through a proxy of three shards; then shards are added to the configuration and a
*new* proxy process (a restart, a deploy, a worker started later) serves the consumers: it never
saw the old placement, and still finds every job — ready, delayed and buried — because it asks
the shards (a scan) and watches the tubes found away from their placed shards. The library does
the same. And while a new proxy runs, a job put by a process that still has the old
configuration (a rolling deploy) wakes a worker waiting on its tube within the scan interval.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from beanrouter import Router
from beanrouter import protocol as p
from beanrouter.core import Cluster
from beanrouter.router.config import load_config
from tests.router.cluster import BACKENDS, BEANSTALKD, Shard, start_all

from .test_failures import Client, Proxy, config_text

READY, DELAYED, BURIED = 120, 20, 20
TUBES = [f"grow{i}" for i in range(40)]


def _config(tmp_path: Path, shards: list[Shard], name: str, **fields: object) -> Path:
    path = tmp_path / name
    path.write_text(config_text([(s.address, f"s{i}") for i, s in enumerate(shards)], **fields))
    return path


def _fill(port: int) -> set[bytes]:
    """Put ``READY`` ready, ``DELAYED`` delayed (1 s) and ``BURIED`` buried jobs over
    ``TUBES`` through the proxy on ``port``; their bodies."""
    c = Client(port)
    bodies: set[bytes] = set()
    for i in range(READY + DELAYED + BURIED):
        tube = TUBES[i % len(TUBES)]
        c.use(tube)
        body = f"{tube}-{i}".encode()
        delay = 1 if READY <= i < READY + DELAYED else 0
        pri = 0 if i >= READY + DELAYED else 100  # (one to bury: reserved before the others)
        put = b"put %d %d 60 %d\r\n%s\r\n" % (pri, delay, len(body), body)
        assert isinstance(c.cmd(put), p.Inserted)
        bodies.add(body)
        if i >= READY + DELAYED:  # buried: reserve it and bury it
            c.watch_only(tube)
            got = c.cmd(b"reserve-with-timeout 0\r\n")
            assert isinstance(got, p.Reserved) and got.body == body, got
            assert c.cmd(b"bury %d 100\r\n" % got.id) == p.Buried(None)
    c.close()
    return bodies


def _moved(old: Path, new: Path) -> list[str]:
    """Tubes whose old owner is none of their consumer shards under ``new``: stranded without
    a scan."""
    before, after = Cluster(load_config(str(old))), Cluster(load_config(str(new)))
    return [t for t in TUBES if before.owner(t) not in after.placed(t)]


def _drain(port: int) -> set[bytes]:
    """Kick every tube's buried jobs and reserve and delete everything, delayed jobs included,
    through the proxy on ``port``."""
    c = Client(port)
    for tube in TUBES:
        c.use(tube)
        reply = c.cmd(b"kick 1000\r\n")
        assert isinstance(reply, p.Kicked), reply
    c.watch_only(*TUBES)
    got: set[bytes] = set()
    while True:
        reply = c.cmd(b"reserve-with-timeout 2\r\n")
        if reply == p.TIMED_OUT:
            break
        assert isinstance(reply, p.Reserved), reply
        assert c.cmd(b"delete %d\r\n" % reply.id) == p.DELETED
        assert reply.body not in got
        got.add(reply.body)
    c.close()
    return got


@pytest.mark.parametrize("added", [1, 2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_added_then_a_new_proxy_finds_every_job(
    backend: str, added: int, tmp_path: Path, cleanup: list[object]
) -> None:
    shards = start_all(backend, 3 + added)
    cleanup.extend(shards)
    old = _config(tmp_path, shards[:3], "old.yaml")
    new = _config(tmp_path, shards, "new.yaml")
    if added > 1:
        assert _moved(old, new), "no tube would be stranded: pick other tube names"
    first = Proxy(old)
    cleanup.append(first)
    bodies = _fill(first.port)
    first.proc.close()
    second = Proxy(new)  # a process that never knew the old placement
    cleanup.append(second)
    assert _drain(second.port) == bodies


@pytest.mark.parametrize("backend", [BEANSTALKD])
def test_the_library_with_the_new_config_finds_every_job(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    shards = start_all(backend, 6)
    cleanup.extend(shards)
    old = _config(tmp_path, shards[:3], "old.yaml")
    new = _config(tmp_path, shards, "new.yaml")
    assert _moved(old, new)
    first = Proxy(old)
    cleanup.append(first)
    bodies = _fill(first.port)
    first.proc.close()
    got: set[bytes] = set()
    with Router.from_config(new) as router:
        for tube in TUBES:
            router.use(tube)
            router.kick(1000)
        for tube in TUBES:
            router.watch(tube)
        router.ignore("default")
        while (job := router.reserve(timeout=2)) is not None:
            got.add(job.body)
            job.delete()
    assert got == bodies


def test_a_job_put_with_the_old_config_during_a_rolling_deploy_wakes_a_waiting_worker(
    tmp_path: Path, cleanup: list[object]
) -> None:
    shards = start_all(BEANSTALKD, 6)
    cleanup.extend(shards)
    old = _config(tmp_path, shards[:3], "old.yaml")
    new = _config(tmp_path, shards, "new.yaml", stray_scan_interval=0.5)
    tube = _moved(old, new)[0]
    fresh = Proxy(new)
    cleanup.append(fresh)
    worker = Client(fresh.port)
    worker.watch_only(tube)
    assert worker.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT  # (its first scan is done)
    got: list[p.Reply] = []
    waiter = threading.Thread(target=lambda: got.append(worker.cmd(b"reserve-with-timeout 30\r\n")))
    waiter.start()
    time.sleep(0.3)
    stale = Proxy(old)  # a proxy not yet deployed with the new configuration
    cleanup.append(stale)
    producer = Client(stale.port)
    producer.use(tube)
    assert isinstance(producer.put(b"from-the-old-config"), p.Inserted)
    producer.close()
    waiter.join(30)
    assert not waiter.is_alive()
    (reply,) = got
    assert isinstance(reply, p.Reserved) and reply.body == b"from-the-old-config", reply
    stats = worker.cmd(b"stats-job %d\r\n" % reply.id)
    assert isinstance(stats, p.Ok)
    assert p.parse_mapping(stats.body)["reserves"] == 1  # (a sentinel's catch is unseen)
    worker.close()
