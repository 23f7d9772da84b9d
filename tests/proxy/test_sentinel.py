"""The sentinels (``core/sentinel.py``) through a real ``beanrouter proxy`` over three real shards
(``/usr/bin/beanstalkd`` and the bundled server), with the default failover of 1.

A worker of one tube reserves from the tube's owner alone: in a reserve → delete loop no wait is
ever cancelled. A job that appears on the tube's failover successor (put there directly, as
another process does while it sees the owner down) wakes the worker at once rather than when its
reserve times out, is handed out with the counters one beanstalkd shows (``reserves: 1``: the
sentinel's catch and give-back are kept off), and is found by a ``reserve-with-timeout 0`` too.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from beanrouter import protocol as p
from beanrouter.core import Cluster
from beanrouter.router.config import load_config
from tests.cli.procs import Proc, wait_for
from tests.ports import free_port
from tests.router.cluster import BACKENDS, Shard, start_all

from .test_failures import TIMEOUT, Client, config_text

TUBE = "jobs"


class _Proxy:
    def __init__(self, tmp_path: Path, shards: list[Shard], cleanup: list[object]) -> None:
        path = tmp_path / "cluster.yaml"
        path.write_text(config_text([(s.address, f"shard-{i}") for i, s in enumerate(shards)]))
        self.port, self.http = free_port(), free_port()
        argv = ["proxy", "--config", str(path), "-p", str(self.port), "--http-port", str(self.http)]
        self.proc = Proc(argv, backend=None)
        cleanup.append(self.proc)
        self.proc.connect(self.port).close()
        owner, successor = Cluster(load_config(str(path))).preference(TUBE)
        by_name = {f"shard-{i}": s for i, s in enumerate(shards)}
        self.owner, self.successor = by_name[owner], by_name[successor]

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.http}/metrics"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(f"beanrouter_{name} "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")


def _put_directly(shard: Shard, body: bytes) -> None:
    c = Client(shard.port)
    c.use(TUBE)
    assert isinstance(c.put(body), p.Inserted)
    c.close()


def _waiting(shard: Shard) -> p.StatValue | None:
    """``current-waiting`` of ``TUBE`` on ``shard`` (0 when the tube does not exist there)."""
    c = Client(shard.port)
    reply = c.cmd(b"stats-tube %s\r\n" % TUBE.encode())
    c.close()
    return p.parse_mapping(reply.body).get("current-waiting") if isinstance(reply, p.Ok) else 0


def _reserves(c: Client, job_id: int) -> p.StatValue:
    reply = c.cmd(b"stats-job %d\r\n" % job_id)
    assert isinstance(reply, p.Ok), reply
    return p.parse_mapping(reply.body)["reserves"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_of_one_tube_reserves_from_its_owner_and_a_stray_job_wakes_it(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    shards = start_all(backend, 3)
    cleanup.extend(shards)
    proxy = _Proxy(tmp_path, shards, cleanup)
    worker = Client(proxy.port)
    worker.watch_only(TUBE)
    producer = Client(proxy.port)
    producer.use(TUBE)
    wait_for(lambda: proxy.metric("wait_cancels_total") == 0, "the metrics")
    # The sentinel of the successor covers the tube: the worker waits on the owner alone.
    for i in range(20):
        worker.send(b"reserve-with-timeout 5\r\n")
        wait_for(lambda: _waiting(proxy.owner) == 1, "a wait")
        assert isinstance(producer.put(b"job-%d" % i), p.Inserted)
        reply = worker.reply()
        assert isinstance(reply, p.Reserved) and reply.body == b"job-%d" % i, (i, reply)
        assert worker.cmd(b"delete %d\r\n" % reply.id) == p.DELETED
    assert proxy.metric("wait_cancels_total") == 0
    assert _waiting(proxy.successor) == 1  # the sentinel

    # A job put on the successor wakes the blocked worker long before its reserve times out.
    for round_ in range(2):  # (and coverage comes back once the stray pair is seen empty)
        worker.send(b"reserve-with-timeout 20\r\n")
        wait_for(lambda: _waiting(proxy.owner) == 1, "a wait")
        begun = time.monotonic()
        _put_directly(proxy.successor, b"stray-%d" % round_)
        reply = worker.reply()
        assert isinstance(reply, p.Reserved) and reply.body == b"stray-%d" % round_, reply
        assert time.monotonic() - begun < 10, "the worker was not woken"
        assert _reserves(worker, reply.id) == 1  # the sentinel's catch is kept off
        assert worker.cmd(b"delete %d\r\n" % reply.id) == p.DELETED
        assert proxy.metric("strays_found_total") == round_ + 1
        assert worker.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT  # seen empty again
        wait_for(
            lambda: _waiting(proxy.successor) == 1,
            "the sentinel armed again",
        )
    worker.close()
    producer.close()


def test_a_stray_job_is_found_by_a_reserve_that_does_not_wait(
    tmp_path: Path, cleanup: list[object]
) -> None:
    shards = start_all("beanstalkd", 3)
    cleanup.extend(shards)
    proxy = _Proxy(tmp_path, shards, cleanup)
    worker = Client(proxy.port)
    worker.watch_only(TUBE)
    wait_for(
        lambda: _waiting(proxy.successor) == 1,
        "the sentinel",
    )
    _put_directly(proxy.successor, b"stray")
    wait_for(lambda: proxy.metric("strays_found_total") == 1, "the sentinel's catch")
    reply = worker.cmd(b"reserve-with-timeout 0\r\n")
    assert isinstance(reply, p.Reserved) and reply.body == b"stray", reply
    assert _reserves(worker, reply.id) == 1
    assert worker.cmd(b"delete %d\r\n" % reply.id) == p.DELETED
    worker.close()
    # The last watcher gone, the sentinel lets go of the tube: it no longer exists anywhere.
    wait_for(
        lambda: _waiting(proxy.successor) == 0,
        "the sentinel let go",
    )
    lister = Client(proxy.port)
    reply = lister.cmd(b"list-tubes\r\n")
    assert isinstance(reply, p.Ok)
    assert TUBE not in p.parse_list(reply.body)
    lister.close()
