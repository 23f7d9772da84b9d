"""Cancelling a blocking wait (``Round.cancel``) in both shells: the link is half-closed, the
shard's last answer is read, and a job the shard reserved just before it saw the half-close is a
reserve no client saw: it goes into ``Cluster.unseen`` and off that job's ``stats-job``.

The shard here is a scripted fake on loopback that answers a half-closed wait as the race makes a
real one answer: with the job it had just reserved (``RESERVED``), with ``TIMED_OUT`` (as
beanstalkd and the bundled server answer a half-closed wait), or not at all (a hung shard).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from beanrouter.core import Cluster, Link, Op, Round, Send, Session, ids
from beanrouter.core.session import global_stats_job
from beanrouter.protocol import Ok, Reply, format_mapping
from beanrouter.router.aio_driver import AsyncDriver
from beanrouter.router.config import config_from_servers
from beanrouter.router.driver import Driver
from tests.unit.test_core_reserve import own_unseen

SHARD_ID = 3
LOCAL = 41


class FakeShard:
    """Accepts one connection, swallows what it is sent, and when the client half-closes answers
    ``answer`` (None: never answers, holds the connection until the test ends)."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.eof = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                self.received += data
            self.eof.set()
            if self.answer is None:
                self.done.wait(10)
                return
            conn.sendall(self.answer)

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def make_shard() -> Iterator[type[FakeShard]]:
    made: list[FakeShard] = []

    class Made(FakeShard):
        def __init__(self, answer: bytes | None) -> None:
            super().__init__(answer)
            made.append(self)

    yield Made
    for shard in made:
        shard.close()


def _session(port: int) -> tuple[Cluster, Session, Link]:
    cluster = Cluster(config_from_servers([f"127.0.0.1:{port} s{SHARD_ID} id={SHARD_ID}"]))
    session = Session(cluster)
    link = session.idle_link(cluster.shards[f"s{SHARD_ID}"], beside_main=True)
    return cluster, session, link


def _wait_then_cancel(link: Link) -> Op[list[Reply]]:
    """A wait that nothing answers within 50 ms, then its cancellation."""
    link.owed += 1
    link.reserving = True
    outcome = yield Round(
        sends=[Send(link, b"reserve-with-timeout 10\r\n", 1)],
        first=True,
        until=time.monotonic() + 0.05,
    )
    assert outcome.get(link) == [], outcome
    outcome = yield Round(cancel=[link])
    got = outcome[link]
    assert isinstance(got, list)
    return got


RESERVED = b"RESERVED %d 3\r\nabc\r\n" % LOCAL


def _run_blocking(port: int, timeout: float = 2.0) -> tuple[Cluster, list[Reply], float]:
    cluster, session, link = _session(port)
    driver = Driver(session, connect_timeout=2.0, timeout=timeout)
    start = time.monotonic()
    got = driver.run(_wait_then_cancel(link))
    took = time.monotonic() - start
    driver.close()  # (its wake-up socket pair)
    return cluster, got, took


def _run_async(port: int, settle: float, timeout: float = 2.0) -> tuple[Cluster, list[Reply]]:
    async def main() -> tuple[Cluster, list[Reply]]:
        cluster, session, link = _session(port)
        driver = AsyncDriver(session, connect_timeout=2.0, timeout=timeout)
        got = await driver.run(_wait_then_cancel(link))
        await asyncio.sleep(settle)  # the read-out runs in the background
        return cluster, got

    return asyncio.run(main())


def _gid() -> int:
    return ids.encode(SHARD_ID, LOCAL)


@pytest.mark.parametrize("driver", ["blocking", "async"])
def test_a_job_reserved_as_the_wait_is_cancelled_is_an_unseen_reserve(
    make_shard: type[FakeShard], driver: str
) -> None:
    shard = make_shard(RESERVED)
    if driver == "blocking":
        cluster, got, _ = _run_blocking(shard.port)
    else:
        cluster, got = _run_async(shard.port, settle=0.5)
    assert got == []  # the cancel round reports what came before the half-close: nothing
    assert shard.eof.wait(2), "the shard never saw the half-close"
    assert shard.received == b"reserve-with-timeout 10\r\n"
    assert own_unseen(cluster) == {_gid(): (1, 0, 0)}
    assert cluster.metrics.unseen_reserves == 1
    assert cluster.metrics.wait_cancels == 0  # (counted by the core's cancel, not the shell)


@pytest.mark.parametrize("driver", ["blocking", "async"])
def test_a_timed_out_answer_leaves_no_unseen_reserve(
    make_shard: type[FakeShard], driver: str
) -> None:
    shard = make_shard(b"TIMED_OUT\r\n")
    if driver == "blocking":
        cluster, _, _ = _run_blocking(shard.port)
    else:
        cluster, _ = _run_async(shard.port, settle=0.5)
    assert shard.eof.wait(2)
    assert own_unseen(cluster) == {}
    assert cluster.metrics.link_failures == {}


def test_an_interrupted_async_wait_is_read_out_too(make_shard: type[FakeShard]) -> None:
    """A wait still armed when its operation is interrupted (a client that disconnects
    mid-reserve, a task cancelled) is closed by ``close_links``: read out the same way."""
    shard = make_shard(RESERVED)

    def wait_forever(link: Link) -> Op[None]:
        link.owed += 1
        link.reserving = True
        yield Round(sends=[Send(link, b"reserve\r\n", 1)], first=True)

    async def main() -> Cluster:
        cluster, session, link = _session(shard.port)
        driver = AsyncDriver(session, connect_timeout=2.0, timeout=2.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(driver.run(wait_forever(link)), 0.1)
        await asyncio.sleep(0.5)
        return cluster

    cluster = asyncio.run(main())
    assert shard.eof.wait(2) and shard.received == b"reserve\r\n"
    assert own_unseen(cluster) == {_gid(): (1, 0, 0)}


def test_blocking_read_out_of_a_hung_shard_is_bounded(make_shard: type[FakeShard]) -> None:
    shard = make_shard(None)
    cluster, _, took = _run_blocking(shard.port, timeout=5.0)
    assert took < 2.0  # CANCEL_READ (0.5 s), not the 5 s reply timeout
    assert own_unseen(cluster) == {}
    assert cluster.metrics.link_failures == {f"s{SHARD_ID}": 1}


def test_async_read_out_of_a_hung_shard_ends_at_the_reply_timeout(
    make_shard: type[FakeShard],
) -> None:
    shard = make_shard(None)
    cluster, _ = _run_async(shard.port, settle=0.6, timeout=0.3)
    assert own_unseen(cluster) == {}
    assert cluster.metrics.link_failures == {f"s{SHARD_ID}": 1}


def _stats_job(local: int, **counters: int) -> Ok:
    fields = {"id": local, "tube": "t", "state": "ready", "pri": 0, "reserves": 0}
    fields.update({"releases": 0, "timeouts": 0, "buries": 0, "kicks": 0})
    fields.update(counters)
    return Ok(format_mapping(fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("shard_id", [0, SHARD_ID])
def test_stats_job_shows_the_counters_without_the_unseen_ones(shard_id: int) -> None:
    cluster = Cluster(config_from_servers([f"127.0.0.1:1 s{shard_id} id={shard_id}"]))
    shard = cluster.shards[f"s{shard_id}"]
    gid = ids.encode(shard_id, LOCAL)
    plain = global_stats_job(_stats_job(LOCAL, reserves=2), shard, cluster, gid)
    assert isinstance(plain, Ok) and b"reserves: 2\n" in plain.body
    cluster.note_unseen(gid)  # a wait's race
    cluster.note_unseen(gid, releases=1)  # a give-back
    cluster.note_unseen(gid, timeouts=1)  # a prefetched job whose TTR ran out
    assert own_unseen(cluster)[gid] == (3, 1, 1)
    reply = global_stats_job(
        _stats_job(LOCAL, reserves=4, releases=1, timeouts=2), shard, cluster, gid
    )
    assert isinstance(reply, Ok)
    expected = _stats_job(LOCAL, reserves=1, releases=0, timeouts=1).body
    assert reply.body == expected.replace(b"id: %d\n" % LOCAL, b"id: %d\n" % gid)
    # Another job of the shard is untouched (its id rewritten only).
    other_gid = ids.encode(shard_id, LOCAL + 1)
    other = global_stats_job(_stats_job(LOCAL + 1, reserves=4), shard, cluster, other_gid)
    assert isinstance(other, Ok) and b"reserves: 4\n" in other.body
    assert b"id: %d\n" % other_gid in other.body


def test_stats_job_never_shows_fewer_reserves_than_the_job_has_had() -> None:
    """A shard restarted from its binlog counts a job's reserves from its last logged record (a
    binlog does not log reserves): unseen reserves recorded before are not subtracted below one
    for each release, bury and timeout, and one more for a reserved job."""
    cluster = Cluster(config_from_servers([f"127.0.0.1:1 s{SHARD_ID} id={SHARD_ID}"]))
    shard = cluster.shards[f"s{SHARD_ID}"]
    gid = ids.encode(SHARD_ID, LOCAL)
    cluster.note_unseen(gid)  # (before the shard was killed)
    restored = _stats_job(LOCAL, state="reserved", reserves=1)  # type: ignore[arg-type]
    reply = global_stats_job(restored, shard, cluster, gid)
    assert isinstance(reply, Ok) and b"reserves: 1\n" in reply.body
    cluster.note_unseen(gid, reserves=2)
    released = _stats_job(LOCAL, state="reserved", reserves=3, releases=1, buries=1)  # type: ignore[arg-type]
    reply = global_stats_job(released, shard, cluster, gid)  # unseen 3 of 3: floor 1 + 1 + 1
    assert isinstance(reply, Ok) and b"reserves: 3\n" in reply.body
    ready = _stats_job(LOCAL, reserves=3, releases=1)
    reply = global_stats_job(ready, shard, cluster, gid)  # floor 1 (its release)
    assert isinstance(reply, Ok) and b"reserves: 1\n" in reply.body
