"""The cross-shard reserve with the process's record of heads (``core/heads.py``), scripted.

The proxy's sessions share what looks found: a choice asks no shard whose watched tubes' heads
are recorded, takes the chosen job with ``reserve-job`` and looks at its tube again in the same
round; what this process puts keeps the records current, what may make a job ready forgets them.
"""

from __future__ import annotations

from beanrouter.core import Cluster, Session, ids
from beanrouter.core.heads import Heads
from beanrouter.protocol import NOT_FOUND, TIMED_OUT, Found, Ok, Reply, Reserved

from .core_script import Clock, Script, make, shard_stats, watch_only

SID = {"s0": 0, "s1": 1, "s2": 2}
TUBE = {"s0": "t0", "s1": "t1", "s2": "t2"}


def gid(shard: str, local: int) -> int:
    return ids.encode(SID[shard], local)


def proxy_like() -> tuple[Cluster, Session, Clock]:
    """The proxy's kind of session (not cancellable) over 3 shards, one watched tube on each,
    with the record of heads on."""
    cluster, s, clock = make(cancellable=False)
    cluster.heads = Heads(clock)
    watch_only(s, list(TUBE.values()))
    return cluster, s, clock


def tube(name: str, ready: int, urgent: int | None = None, delayed: int = 0) -> Ok:
    return shard_stats(
        name=name,
        current_jobs_urgent=ready if urgent is None else urgent,
        current_jobs_ready=ready,
        current_jobs_delayed=delayed,
        pause=0,
        pause_time_left=0,
    )


def look(name: str) -> list[bytes]:
    """A look at a tube, the link using its own tube again after (a tube used by a connection
    lives on: ``list-tubes`` would show it)."""
    t = name.encode()
    return [b"stats-tube " + t, b"use " + t, b"peek-ready", b"use default"]


def peeked(local: int | None) -> Reply:
    return NOT_FOUND if local is None else Found(local, b"job %d" % local)


def put(cluster: Cluster, shard: str, local: int, priority: int, delay: int = 0) -> None:
    """A put this process stored, acknowledged."""
    cluster.note_put(gid(shard, local), delay, priority, TUBE[shard])


def first_choice(cluster: Cluster, s: Session) -> None:
    """s0 holds job 3 (pri 10), s1 jobs 4 (pri 5) then 6 (pri 7), s2 nothing: the first
    reserve looks everywhere, takes job 4 and records what comes next on t1."""
    put(cluster, "s0", 3, 10)
    put(cluster, "s1", 4, 5)
    put(cluster, "s1", 6, 7)
    run = Script(s.reserve(0))
    assert run.data() == {n: look(TUBE[n]) for n in ("s0", "s1", "s2")}
    run.auto(
        s0=[tube("t0", 1), peeked(3)],
        s1=[tube("t1", 2), peeked(4)],
        s2=[tube("t2", 0), peeked(None)],
    )
    assert run.data() == {"s1": [b"reserve-job 4", *look("t1")]}
    run.auto(s1=[Reserved(4, b"job 4"), tube("t1", 1), peeked(6)])
    assert run.value() == Reserved(gid("s1", 4), b"job 4")
    s._unhold(gid("s1", 4))  # (deleted)


def test_a_known_head_is_taken_without_asking_the_other_shards() -> None:
    cluster, s, _ = proxy_like()
    first_choice(cluster, s)
    run = Script(s.reserve(0))
    # t0's job 3 (pri 10), t1's job 6 (pri 7), t2 empty: known; job 6 wins, one round on s1
    assert run.data() == {"s1": [b"reserve-job 6", *look("t1")]}
    run.auto(s1=[Reserved(6, b"job 6"), tube("t1", 0), peeked(None)])
    assert run.value() == Reserved(gid("s1", 6), b"job 6")
    s._unhold(gid("s1", 6))
    run = Script(s.reserve(0))
    assert run.data() == {"s0": [b"reserve-job 3", *look("t0")]}
    run.auto(s0=[Reserved(3, b"job 3"), tube("t0", 0), peeked(None)])
    assert run.value() == Reserved(gid("s0", 3), b"job 3")
    assert cluster.metrics.looks == 3  # the first choice's only
    assert cluster.metrics.looks_spared == 6


def test_taken_by_someone_else_is_chosen_again_and_empty_records_are_not_trusted() -> None:
    cluster, s, _ = proxy_like()
    first_choice(cluster, s)
    run = Script(s.reserve(0))
    assert run.data() == {"s1": [b"reserve-job 6", *look("t1")]}
    run.auto(s1=[NOT_FOUND, tube("t1", 0), peeked(None)])  # another client took job 6
    # job 3 on s0 is next, still known
    assert run.data() == {"s0": [b"reserve-job 3", *look("t0")]}
    run.auto(s0=[NOT_FOUND, tube("t0", 0), peeked(None)])
    assert cluster.metrics.sweep_retries == 2
    # every record now says "nothing ready": that is not trusted, every shard is asked
    assert run.data() == {n: [b"stats-tube " + TUBE[n].encode()] for n in ("s0", "s1", "s2")}
    run.auto(s0=[tube("t0", 0)], s1=[tube("t1", 0)], s2=[tube("t2", 0)])
    assert run.value() == TIMED_OUT


def test_a_more_urgent_put_becomes_the_head_it_is_in() -> None:
    cluster, s, _ = proxy_like()
    first_choice(cluster, s)
    put(cluster, "s2", 9, 1)  # t2 was empty: job 9 is its head now, and the most urgent
    run = Script(s.reserve(0))
    assert run.data() == {"s2": [b"reserve-job 9", *look("t2")]}
    run.auto(s2=[Reserved(9, b"job 9"), tube("t2", 0), peeked(None)])
    assert run.value() == Reserved(gid("s2", 9), b"job 9")


def test_a_delayed_put_or_a_release_makes_the_shard_looked_at_look() -> None:
    for change in ("delayed put", "release", "pause"):
        cluster, s, _ = proxy_like()
        first_choice(cluster, s)
        if change == "delayed put":
            put(cluster, "s0", 8, 1, delay=1)
        elif change == "release":
            cluster.readied("s0")
        else:
            assert cluster.heads is not None
            cluster.heads.changed_everywhere("t0")
        run = Script(s.reserve(0))
        assert run.data() == {"s0": look("t0")}, change
        run.auto(s0=[tube("t0", 1, delayed=1), peeked(3)])
        # t1's job 6 (pri 7) beats job 3 (pri 10)
        assert run.data() == {"s1": [b"reserve-job 6", *look("t1")]}, change
        run.auto(s1=[Reserved(6, b"job 6"), tube("t1", 0), peeked(None)])
        assert run.value() == Reserved(gid("s1", 6), b"job 6")
        assert cluster.heads is not None
        assert cluster.heads.get("s0", "t0", cluster.clock()) is None  # delayed jobs there


def test_a_priority_the_urgent_count_contradicts_is_read_from_stats_job() -> None:
    cluster, s, _ = proxy_like()
    put(cluster, "s0", 3, 10)  # another process released it since as 2000: nothing urgent
    put(cluster, "s1", 4, 1500)
    run = Script(s.reserve(0))
    run.auto(
        s0=[tube("t0", 1, urgent=0), peeked(3)],
        s1=[tube("t1", 1, urgent=0), peeked(4)],
        s2=[tube("t2", 0), peeked(None)],
    )
    assert run.data() == {"s0": [b"stats-job 3"]}
    run.auto(s0=[shard_stats(id=3, tube="t0", state="ready", pri=2000, age=0)])
    assert run.data() == {"s1": [b"reserve-job 4", *look("t1")]}


def test_a_head_being_taken_is_passed_over_only_for_one_as_urgent() -> None:
    cluster, s, clock = proxy_like()
    first_choice(cluster, s)
    other = Session(cluster, cancellable=False)
    watch_only(other, list(TUBE.values()))
    taking = Script(s.reserve(0))  # takes job 6 (pri 7) on s1: its round is out
    assert taking.data() == {"s1": [b"reserve-job 6", *look("t1")]}
    # job 3 (pri 10) is less urgent than the one being taken: t1's next job could beat it
    run = Script(other.reserve(0))
    assert run.data() == {"s1": look("t1")}  # (its own link)
    run.auto(s1=[tube("t1", 1), peeked(6)])  # (job 6 not reserved yet)
    assert run.data() == {"s1": [b"reserve-job 6", *look("t1")]}
    taking.auto(s1=[Reserved(6, b"job 6"), tube("t1", 1), peeked(11)])
    assert taking.value() == Reserved(gid("s1", 6), b"job 6")
    run.auto(s1=[NOT_FOUND, tube("t1", 1), peeked(11)])  # job 11: no priority known
    # t1 is looked at again (its head's priority is unknown), job 3 is next known
    assert run.data() == {"s1": look("t1")}
    del clock


def test_a_head_being_taken_is_passed_over_for_one_as_urgent() -> None:
    cluster, s, _ = proxy_like()
    put(cluster, "s0", 3, 5)
    put(cluster, "s1", 4, 5)
    put(cluster, "s1", 6, 5)
    run = Script(s.reserve(0))
    run.auto(
        s0=[tube("t0", 1), peeked(3)],
        s1=[tube("t1", 2), peeked(4)],
        s2=[tube("t2", 0), peeked(None)],
    )
    winner = run.data()
    assert list(winner) in (["s0"], ["s1"])
    # while that round is out, another session takes the other shard's job without a look
    other = Session(cluster, cancellable=False)
    watch_only(other, list(TUBE.values()))
    second = Script(other.reserve(0))
    assert list(second.data()) != list(winner) and len(second.data()) == 1


def test_a_reserve_that_waits_trusts_records_of_nothing_ready() -> None:
    cluster, s, clock = proxy_like()
    first_choice(cluster, s)
    run = Script(s.reserve(0))
    run.auto(s1=[Reserved(6, b"job 6"), tube("t1", 0), peeked(None)])
    s._unhold(gid("s1", 6))
    run = Script(s.reserve(0))
    run.auto(s0=[Reserved(3, b"job 3"), tube("t0", 0), peeked(None)])
    s._unhold(gid("s0", 3))
    looks = cluster.metrics.looks
    # Every record says "nothing ready": a reserve that waits goes to its wait at once (a job
    # ready after all would be the wait's at once); one with timeout 0 asks every shard.
    run = Script(s.reserve(1))
    assert run.now.first and sorted(run.data()) == ["s0", "s1", "s2"]
    assert all(lines[-1] == b"reserve-with-timeout 1" for lines in run.data().values())
    assert cluster.metrics.looks == looks
    del clock


def test_the_library_worker_of_one_owner_waits_at_once_on_its_away_shards_too() -> None:
    """A library session whose tubes one shard owns (its failover successor holds them only
    after a failover) looks at no shard: its reserve waits on both at once; the owner answers
    in a backlog, and the away shard's wait lingers for the next reserves."""
    cluster, s, _ = make(failover=1)
    tube_name = TUBE["s0"]
    watch_only(s, [tube_name])
    away = cluster.away(tube_name)
    assert away and cluster.owner(tube_name) == "s0"
    run = Script(s.reserve(1))
    assert run.now.first and sorted(run.data()) == sorted(["s0", *away])
    assert all(lines[-1] == b"reserve-with-timeout 1" for lines in run.data().values())
    assert cluster.metrics.looks == 0
