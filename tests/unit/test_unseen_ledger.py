"""The unseen-counter ledgers: the process's own (``BoundedUnseen``) and the one the workers of
``proxy --workers`` share (``proxy.unseen.SharedUnseen``): counts add up whoever notes them,
the table stays bounded and keeps the most recent jobs, processes noting at once lose nothing,
and a ``stats-job`` read through one worker takes off what another noted."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator

import pytest

from beanrouter import protocol as p
from beanrouter.core import Cluster, ids
from beanrouter.core.cluster import BoundedUnseen
from beanrouter.core.session import global_stats_job
from beanrouter.protocol import format_mapping
from beanrouter.proxy import unseen
from beanrouter.proxy.unseen import SharedUnseen, create, ledger_from_env
from beanrouter.router.config import config_from_servers


@pytest.fixture
def ledger_fd() -> Iterator[int]:
    fd = create()
    yield fd
    os.close(fd)


def test_bounded_unseen_adds_up_and_forgets_the_oldest() -> None:
    ledger = BoundedUnseen(limit=3)
    ledger.add(1, 1, 0, 0)
    ledger.add(2, 1, 1, 0)
    ledger.add(1, 1, 0, 1)
    ledger.add(3, 1, 0, 0)
    ledger.add(4, 2, 0, 0)  # 2 is now the least recently changed
    assert dict(ledger) == {1: (2, 0, 1), 3: (1, 0, 0), 4: (2, 0, 0)}
    assert ledger.get(2) is None


def test_a_shared_ledger_is_one_ledger_for_every_process_that_maps_it(ledger_fd: int) -> None:
    one, two = SharedUnseen(os.dup(ledger_fd)), SharedUnseen(os.dup(ledger_fd))
    try:
        assert one.get(7) is None
        one.add(7, 1, 0, 0)
        two.add(7, 1, 1, 0)
        two.add(2**64 - 1, 0, 0, 1)  # (the largest id a job can have)
        assert one.get(7) == two.get(7) == (2, 1, 0)
        assert one.get(2**64 - 1) == (0, 0, 1)
        assert one.get(8) is None and one.get(0) is None
    finally:
        one.close()
        two.close()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("beanrouter-unseen-")]


def test_a_shared_ledger_is_bounded_and_keeps_the_most_recent() -> None:
    fd = create(buckets=4, ways=2)
    ledger = SharedUnseen(fd)
    try:
        for job_id in range(1, 201):
            ledger.add(job_id, 1, 0, 0)
        kept = [j for j in range(1, 201) if ledger.get(j) is not None]
        assert len(kept) == 8  # 4 buckets of 2
        assert min(kept) > 150  # each bucket kept its latest two (ids spread over the buckets)
        assert os.fstat(fd).st_size == 64 + 4 * 2 * 32
        # A job already there adds up, and an older one in a full bucket gives way first.
        ledger.add(kept[0], 1, 1, 0)
        assert ledger.get(kept[0]) == (2, 1, 0)
    finally:
        ledger.close()


def _hammer(fd: int, rounds: int) -> None:
    ledger = SharedUnseen(fd)
    for n in range(rounds):
        ledger.add(42, 1, n % 2, 0)
        ledger.add(1000 + n, 1, 0, 0)
    ledger.close()


def test_processes_noting_at_once_lose_nothing(ledger_fd: int) -> None:
    ctx = multiprocessing.get_context("fork")
    rounds = 2000
    workers = [ctx.Process(target=_hammer, args=(os.dup(ledger_fd), rounds)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    ledger = SharedUnseen(os.dup(ledger_fd))
    try:
        assert ledger.get(42) == (3 * rounds, 3 * rounds // 2, 0)
        assert ledger.get(1000 + rounds - 1) == (3, 0, 0)
    finally:
        ledger.close()


def test_a_worker_reads_what_another_noted_off_stats_job(ledger_fd: int) -> None:
    config = config_from_servers(["127.0.0.1:1 s0 id=0", "127.0.0.1:2 s1 id=1"])
    a = Cluster(config, unseen=SharedUnseen(os.dup(ledger_fd)))
    b = Cluster(config, unseen=SharedUnseen(os.dup(ledger_fd)))
    gid = ids.encode(1, 5)
    a.note_unseen(gid)  # worker a's wait raced its cancellation: one reserve nobody saw
    shard = b.by_id[1]
    body = format_mapping({"id": 5, "tube": "t", "state": "reserved", "reserves": 2,
                           "timeouts": 0, "releases": 0, "buries": 0})  # fmt: skip
    reply = global_stats_job(p.Ok(body), shard, b, gid)
    assert isinstance(reply, p.Ok)
    assert b"reserves: 1\n" in reply.body and f"id: {gid}\n".encode() in reply.body
    # Without the shared ledger worker b would show the phantom reserve.
    alone = Cluster(config)
    reply = global_stats_job(p.Ok(body), alone.by_id[1], alone, gid)
    assert isinstance(reply, p.Ok) and b"reserves: 2\n" in reply.body


def test_ledger_from_env(ledger_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(unseen.UNSEEN_ENV, raising=False)
    assert isinstance(ledger_from_env(), BoundedUnseen)  # one process: its own
    monkeypatch.setenv(unseen.UNSEEN_ENV, str(os.dup(ledger_fd)))
    shared = ledger_from_env()
    assert isinstance(shared, SharedUnseen) and unseen.UNSEEN_ENV not in os.environ
    shared.close()
    not_a_ledger = os.open(os.devnull, os.O_RDONLY)
    monkeypatch.setenv(unseen.UNSEEN_ENV, str(not_a_ledger))
    assert isinstance(ledger_from_env(), BoundedUnseen)  # logged, and its own
    os.close(not_a_ledger)
    monkeypatch.setenv(unseen.UNSEEN_ENV, "x")
    assert isinstance(ledger_from_env(), BoundedUnseen)
