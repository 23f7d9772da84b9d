"""The races a move can lose, forced against real shards by running the mover in-process with
its put wrapped: a consumer takes the original between the copy's put and the original's
delete. The copy must then go (or, if a consumer of the owner already took it, the duplicate
must be reported): never a lost job, never a silent second copy."""

from __future__ import annotations

import time
from collections.abc import Callable

import greenstalk
import pytest

from beanrouter.core.rebalance import Report
from beanrouter.router import load_config
from beanrouter.router.rebalance import Link, rebalance

from .conftest import Env


@pytest.fixture
def interfere(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str, Callable[[int], None]], None]:
    """``interfere(tube, action)``: after each put of a copy of ``tube``, ``action(copy_id)``."""
    real_put = Link.put

    def arm(tube: str, action: Callable[[int], None]) -> None:
        def put(self: Link, priority: int, delay: int, ttr: int, body: bytes) -> tuple[int, bool]:
            result = real_put(self, priority, delay, ttr, body)
            if self.used == tube:
                action(result[0])
            return result

        monkeypatch.setattr(Link, "put", put)

    return arm


def run(cluster: Env) -> Report:
    config = load_config(cluster.config())
    return rebalance(config, journal_path=cluster.tmp / "journal")


def test_delayed_original_reserved_meanwhile(cluster: Env, interfere: Callable[..., None]) -> None:
    tube = cluster.tube_on("s0")
    consumer = cluster.client("s1", tube)
    try:
        original = consumer.put(b"delayed", delay=120)
        interfere(tube, lambda _copy: consumer.reserve_job(original))
        report = run(cluster)
        assert report.moved_total == 0
        assert report.duplicates == 0
        assert cluster.jobs("s0", tube) == []  # the copy went
        assert [(j.body, j.state) for j in cluster.jobs("s1", tube)] == [(b"delayed", "reserved")]
        assert report.left == {("s1", tube): {"reserved": 1}}
    finally:
        consumer.close()


def test_buried_original_kicked_and_reserved_meanwhile(
    cluster: Env, interfere: Callable[..., None]
) -> None:
    tube = cluster.tube_on("s0")
    consumer = cluster.client("s1", tube)
    try:
        original = consumer.put(b"buried")
        consumer.bury(consumer.reserve_job(original))

        def kick_and_take(_copy: int) -> None:
            consumer.kick_job(original)
            consumer.reserve_job(original)

        interfere(tube, kick_and_take)
        report = run(cluster)
        assert report.moved_total == 0
        assert cluster.jobs("s0", tube) == []
        assert [(j.body, j.state) for j in cluster.jobs("s1", tube)] == [(b"buried", "reserved")]
    finally:
        consumer.close()


def take_when_expired(consumer: greenstalk.Client[bytes]) -> bool:
    """Wait out the mover's reservation (TTR 1 s, touched once) and take the original. The
    bundled server times reservations out on time; beanstalkd 1.12 may not while the reserving
    connection is idle (then the mover's delete wins and nothing raced): False."""
    time.sleep(2.2)
    try:
        consumer.reserve(timeout=3)
    except greenstalk.TimedOutError:
        return False
    return True


def test_reservation_expired_mid_move(cluster: Env, interfere: Callable[..., None]) -> None:
    """A TTR of one second runs out between the copy's put and the original's delete, and a
    consumer takes the original: the copy goes."""
    tube = cluster.tube_on("s0")
    consumer = cluster.client("s1", tube)
    took: list[bool] = []
    try:
        consumer.put(b"short", ttr=1)
        interfere(tube, lambda _copy: took.append(take_when_expired(consumer)))
        report = run(cluster)
        assert report.duplicates == 0
        if cluster.backend == "bundled":
            assert took == [True]
        if took == [True]:
            assert report.moved_total == 0
            assert cluster.jobs("s0", tube) == []  # the copy went
            assert [(j.body, j.state) for j in cluster.jobs("s1", tube)] == [(b"short", "reserved")]
        else:  # the mover kept its reservation: an ordinary move
            assert report.moved_total == 1
            assert [j.body for j in cluster.jobs("s0", tube)] == [b"short"]
            assert cluster.jobs("s1", tube) == []
    finally:
        consumer.close()


def test_reservation_expired_and_copy_taken(cluster: Env, interfere: Callable[..., None]) -> None:
    """... and a consumer of the owner took the copy too: both are live, and the run says so."""
    tube = cluster.tube_on("s0")
    consumer = cluster.client("s1", tube)
    owner_consumer = cluster.client("s0", tube)
    took: list[bool] = []
    try:
        consumer.put(b"short", ttr=1)

        def expire_and_take_both(copy: int) -> None:
            took.append(take_when_expired(consumer))
            owner_consumer.reserve_job(copy)  # held (1 s) while the mover looks

        interfere(tube, expire_and_take_both)
        report = run(cluster)
        if cluster.backend == "bundled":
            assert took == [True]
        if took == [True]:
            assert report.duplicates == 1
            assert any("both live" in note for note in report.notes)
            assert report.exit_code() == 1
        else:
            assert (report.duplicates, report.moved_total) == (0, 1)
    finally:
        consumer.close()
        owner_consumer.close()
