"""Pipelined clients through a real ``beanrouter proxy`` (the routing core's batches), in front
of ``/usr/bin/beanstalkd`` and the bundled server.

The proxy writes a client's pipelined commands to the shard together where the core allows it
(``beanrouter.core.batch``): the replies must still come in order, with the ids one beanstalkd
would give, each command run exactly once, and a reserve that has to wait must still hold back
the commands after it (and let the ones before it answer).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from beanrouter import protocol as p
from tests.cli.procs import wait_for
from tests.router.cluster import BACKENDS
from tests.router.cluster import stats as shard_stats

from .test_failures import Client, _drain_when_up, config_text, shards_with_binlogs, start_proxy


def one_shard(backend: str, tmp_path: Path, cleanup: list[object]) -> tuple[str, int]:
    """One shard (id 0: its ids are beanstalkd's) behind a proxy: (shard address, proxy port)."""
    (shard,) = shards_with_binlogs(backend, tmp_path, 1, cleanup)
    proxy = start_proxy(tmp_path, config_text([(shard.address, "a")]), cleanup)
    return shard.address, proxy.port


def tube_stats(client: Client, tube: str) -> dict[str, p.StatValue]:
    reply = client.cmd(b"stats-tube %s\r\n" % tube.encode())
    assert isinstance(reply, p.Ok), reply
    return p.parse_mapping(reply.body)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_thousand_pipelined_puts_then_reserves_and_deletes(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    address, port = one_shard(backend, tmp_path, cleanup)
    c = Client(port)
    n = 1000
    bodies = [b"job-%04d" % i for i in range(n)]
    c.send(b"use pipe\r\nwatch pipe\r\nignore default\r\n")
    c.send(b"".join(b"put 5 0 600 %d\r\n%s\r\n" % (len(b), b) for b in bodies))  # one write
    assert [c.reply() for _ in range(3)] == [p.Using("pipe"), p.Watching(2), p.Watching(1)]
    inserted = [c.reply() for _ in range(n)]
    assert all(isinstance(r, p.Inserted) for r in inserted), inserted
    ids = [r.id for r in inserted if isinstance(r, p.Inserted)]
    assert ids == list(range(ids[0], ids[0] + n))  # one shard: beanstalkd's own ids, in order

    c.send(b"reserve-with-timeout 0\r\n" * n)  # one write
    reserved = [c.reply() for _ in range(n)]
    assert reserved == [p.Reserved(i, b) for i, b in zip(ids, bodies, strict=True)]
    c.send(b"".join(b"delete %d\r\n" % i for i in ids) + b"delete %d\r\n" % ids[0])
    assert [c.reply() for _ in range(n + 1)] == [p.DELETED] * n + [p.NOT_FOUND]
    assert c.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT

    # Every command ran exactly once on the shard, and the proxy counted each one.
    shard = shard_stats(address)
    assert shard["cmd-put"] == n and shard["cmd-delete"] == n + 1
    assert shard["total-jobs"] == n and shard["current-jobs-ready"] == 0
    mine = c.stats()
    assert mine["cmd-put"] == n and mine["cmd-delete"] == n + 1
    assert mine["cmd-reserve-with-timeout"] == n + 1
    assert mine["current-waiting"] == 0  # (reserves counted together, answered together)
    c.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_blocking_reserve_in_the_middle_of_a_pipeline(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """``put; reserve; put; list-tube-used`` in one write, nothing to reserve: the first put is
    answered at once, the second does not run while the reserve waits; another client's job
    ends the wait, then the rest runs, in order."""
    _, port = one_shard(backend, tmp_path, cleanup)
    a = Client(port)
    a.use("made")
    a.watch_only("wanted")
    put = b"put 1 0 600 4\r\nmade\r\n"
    a.send(put + b"reserve\r\n" + put + b"list-tube-used\r\n")
    first = a.reply()
    assert isinstance(first, p.Inserted)  # before the reserve is answered
    b = Client(port)
    wait_for(lambda: tube_stats(b, "wanted")["current-waiting"] == 1, "a to wait")
    assert tube_stats(b, "made")["current-jobs-ready"] == 1  # the second put has not run
    b.use("wanted")
    given = b.put(b"wanted")
    assert isinstance(given, p.Inserted)
    assert a.reply() == p.Reserved(given.id, b"wanted")
    second = a.reply()
    assert isinstance(second, p.Inserted) and second.id > given.id
    assert a.reply() == p.Using("made")
    assert tube_stats(b, "made")["current-jobs-ready"] == 2
    a.close()
    b.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_close_behind_a_pipelined_reserve(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """``put; reserve; put`` then EOF, nothing to reserve: as with beanstalkd, the waiting
    reserve answers TIMED_OUT and the put after it still runs and is answered."""
    _, port = one_shard(backend, tmp_path, cleanup)
    a = Client(port)
    a.use("made")
    a.watch_only("wanted")
    put = b"put 1 0 600 4\r\nmade\r\n"
    a.send(put + b"reserve\r\n" + put)
    assert isinstance(a.reply(), p.Inserted)
    a.sock.shutdown(1)  # SHUT_WR
    assert a.reply() == p.TIMED_OUT
    assert isinstance(a.reply(), p.Inserted)
    assert a.sock.recv(100) == b""  # then the proxy closes the connection
    a.close()
    b = Client(port)
    assert tube_stats(b, "made")["current-jobs-ready"] == 2
    b.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pipelined_worker_waits_in_its_own_reserves_at_the_shard(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """A worker that pipelines ``reserve`` (the shard keeps a connection's order, so the proxy
    sends each one as it is): every job is delivered once, in order, with ``reserves: 1`` and
    ``releases: 0``, and the shard ran exactly the client's reserves."""
    address, port = one_shard(backend, tmp_path, cleanup)
    producer = Client(port)
    n = 200
    producer.use("work")
    ids = []
    for i in range(n):
        got = producer.put(b"w%03d" % i)
        assert isinstance(got, p.Inserted)
        ids.append(got.id)
    w = Client(port)
    w.watch_only("work")
    assert isinstance(w.cmd(b"stats-job %d\r\n" % ids[0]), p.Ok)  # (its link is up now)
    w.send(b"reserve\r\n" * n + b"".join(b"stats-job %d\r\n" % i for i in ids))
    reserved = [w.reply() for _ in range(n)]
    assert reserved == [p.Reserved(i, b"w%03d" % k) for k, i in enumerate(ids)]
    for _ in range(n):
        stats = w.reply()
        assert isinstance(stats, p.Ok)
        job = p.parse_mapping(stats.body)
        assert (job["state"], job["reserves"], job["releases"]) == ("reserved", 1, 0)
    assert shard_stats(address)["cmd-reserve"] == n
    w.close()
    producer.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_client_gone_while_its_reserve_waits_at_the_shard_leaves_no_ghost(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """The client vanishes (RST) while its own ``reserve`` waits at the shard: the proxy
    closes that link, so the next job goes to the next consumer, not to the ghost."""
    address, port = one_shard(backend, tmp_path, cleanup)
    a = Client(port)
    a.watch_only("ghost")
    assert a.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT  # (its link is up now)
    a.send(b"reserve\r\n")
    b = Client(port)
    wait_for(lambda: tube_stats(b, "ghost")["current-waiting"] == 1, "a to wait")
    a.close(reset=True)
    wait_for(lambda: shard_stats(address)["current-waiting"] == 0, "the shard to see the wait end")
    b.use("ghost")
    given = b.put(b"for-c")
    assert isinstance(given, p.Inserted)
    c = Client(port)
    c.watch_only("ghost")
    assert c.cmd(b"reserve-with-timeout 5\r\n") == p.Reserved(given.id, b"for-c")
    c.close()
    b.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_shard_killed_under_a_reserve_waiting_at_it(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """The client's own ``reserve`` waits at the shard (its link was up) with a command behind
    it when the shard is killed: the reserve answers INTERNAL_ERROR, the command behind it is
    still answered, and after the restart the acknowledged jobs are all there."""
    (shard,) = shards_with_binlogs(backend, tmp_path, 1, cleanup)
    proxy = start_proxy(tmp_path, config_text([(shard.address, "a")]), cleanup)
    producer = Client(proxy.port)
    producer.use("kept")
    acked = [producer.put(b"k%d" % i) for i in range(5)]
    assert all(isinstance(r, p.Inserted) for r in acked)
    waiter = Client(proxy.port)
    waiter.watch_only("empty")
    assert waiter.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT  # (its link is up now)
    waiter.send(b"reserve\r\nlist-tube-used\r\n")
    wait_for(lambda: shard_stats(shard.address)["current-waiting"] == 1, "the reserve to wait")
    shard.kill()
    assert waiter.reply() == p.INTERNAL_ERROR
    assert waiter.reply() == p.Using("default")
    shard.restart()
    got = _drain_when_up(proxy.port, ["kept"], [shard.address])
    assert sorted(got) == sorted(b"k%d" % i for i in range(5))
    producer.close()
    waiter.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_answering_each_job_as_it_comes_joins_the_run_out(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """100 ``reserve-with-timeout`` pipelined, then ``delete`` + one more reserve sent for each
    job as it arrives (while the proxy's run is still out at the shard, so they join it): every
    job comes once, in order, each ``delete`` is answered, and the shard ran exactly the
    client's reserves."""
    address, port = one_shard(backend, tmp_path, cleanup)
    producer = Client(port)
    n = 400
    producer.use("work")
    producer.send(b"".join(b"put 7 0 600 4\r\nj%03d\r\n" % (i % 1000) for i in range(n)))
    ids = []
    for _ in range(n):
        got = producer.reply()
        assert isinstance(got, p.Inserted)
        ids.append(got.id)
    w = Client(port)
    w.watch_only("work")
    reserve = b"reserve-with-timeout 5\r\n"
    w.send(reserve * 100)
    asked, seen, deleted = 100, [], 0
    while deleted < n:
        reply = w.reply()
        if isinstance(reply, p.Reserved):
            seen.append(reply.id)
            more = reserve if asked < n else b""
            asked += bool(more)
            w.send(b"delete %d\r\n%s" % (reply.id, more))
        else:
            assert reply == p.DELETED, reply
            deleted += 1
    assert seen == ids  # one priority: in put order, each once
    shard = shard_stats(address)
    assert shard["cmd-reserve-with-timeout"] == n and shard["cmd-delete"] == n
    assert shard["current-jobs-reserved"] == 0 and shard["current-jobs-ready"] == 0
    assert w.cmd(b"reserve-with-timeout 0\r\n") == p.TIMED_OUT
    w.close()
    producer.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_that_does_not_read_its_jobs_is_not_buffered(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """A worker pipelines 250 reserves of 60 KB jobs (15 MB) and reads nothing: the proxy stops
    reading the shard link of its run once the worker's output is above its high-water mark,
    so the jobs wait at the shard and in the kernel's buffers, not in the proxy; when the worker
    reads, every job comes, in order."""
    (shard,) = shards_with_binlogs(backend, tmp_path, 1, cleanup)
    proxy = start_proxy(tmp_path, config_text([(shard.address, "a")]), cleanup)
    n, size = 250, 60_000
    producer = proxy.client()
    producer.use("big")
    ids = []
    for i in range(n):
        got = producer.put(b"%06d" % i + b"x" * (size - 6))
        assert isinstance(got, p.Inserted)
        ids.append(got.id)
    pid = proxy.proc.proc.pid
    before = _rss_kib(pid)
    w = proxy.client()
    w.sock.close()
    w.sock = socket.socket()  # a small receive window (set before connecting: it stays small)
    w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    w.sock.settimeout(30)
    w.sock.connect(("127.0.0.1", proxy.port))
    w.watch_only("big")
    w.send(b"reserve-with-timeout 5\r\n" * n)
    time.sleep(1.0)
    grown = _rss_kib(pid) - before
    # (the heap's own growth aside, a few MB: 23-25 MB when the link is read on, here)
    assert grown < 10 * 1024, f"the proxy grew by {grown} KiB"
    reserved = [w.reply() for _ in range(n)]
    assert [r.id for r in reserved if isinstance(r, p.Reserved)] == ids
    assert all(isinstance(r, p.Reserved) and len(r.body) == size for r in reserved)
    w.close()
    producer.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_put_line_behind_stats_is_counted_after_it(
    backend: str, tmp_path: Path, cleanup: list[object]
) -> None:
    """``stats`` then a put whose body is still on its way, in one write, while the connection
    is idle and while a streamed reserve waits: as with beanstalkd, ``stats`` does not count
    that put yet (beanstalkd counts ``cmd-put`` at the put's line, which it reads after
    answering ``stats``)."""
    _, port = one_shard(backend, tmp_path, cleanup)
    c = Client(port)
    c.use("counted")
    c.watch_only("wanted")
    other = Client(port)
    other.use("wanted")
    for waiting in (False, True):
        before = c.stats()["cmd-put"]
        assert isinstance(before, int)
        if waiting:
            c.send(b"reserve\r\n")
            wait_for(lambda: tube_stats(other, "wanted")["current-waiting"] == 1, "the wait")
        c.send(b"stats\r\nput 0 0 60 5\r\nab")
        given: p.Inserted | None = None
        if waiting:
            got = other.put(b"w")  # (counted: ``stats`` is the proxy's, all clients')
            assert isinstance(got, p.Inserted)
            given = got
            assert c.reply() == p.Reserved(given.id, b"w")
        stats = c.reply()
        assert isinstance(stats, p.Ok), stats
        assert p.parse_mapping(stats.body)["cmd-put"] == before + waiting
        c.send(b"cde\r\n")
        assert isinstance(c.reply(), p.Inserted)
        assert c.stats()["cmd-put"] == before + waiting + 1
        if given is not None:
            assert c.cmd(b"delete %d\r\n" % given.id) == p.DELETED
    other.close()
    c.close()
