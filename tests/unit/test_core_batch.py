"""Pipelined commands as one round (``beanrouter.core.batch``), with scripted shard replies.

Each test plans a run of parsed client commands, checks what goes to which link in how many
rounds, answers with protocol replies or link failures, and compares the results with what each
command's own operation gives.
"""

from __future__ import annotations

import math

import pytest

from beanrouter import protocol as p
from beanrouter.core import Failure, FailureKind, Session, ids
from beanrouter.core.batch import MAX_COMMANDS, MAX_RESERVES, extend, extendable, plan
from beanrouter.core.errors import JobIdError, PutUncertain, ReservationLost, ShardUnavailable
from beanrouter.core.reserve import HELD_FAST_MAX, reserve, stream_link
from beanrouter.protocol import (
    DELETED,
    DRAINING,
    NOT_FOUND,
    TIMED_OUT,
    Inserted,
    Reserved,
    Using,
    Watching,
)

from .core_script import (
    TUBE_ON,
    Script,
    commands,
    job_stats,
    make,
    run_auto,
    tube_stats,
    watch_only,
)

SID = {"s0": 0, "s1": 1, "s2": 2}


def gid(shard: str, local: int) -> int:
    return ids.encode(SID[shard], local)


def put(body: bytes = b"x", pri: int = 10) -> p.Put:
    return p.Put(pri, 0, 60, body)


def proxy_session(tube: str = "t1", failover: int = 0) -> Session:
    """A proxy session (``cancellable=False``) using and watching ``tube`` alone."""
    _, s, _ = make(cancellable=False, failover=failover)
    run_auto(s.use(tube))
    watch_only(s, [tube])
    return s


def test_a_run_of_puts_is_one_write_with_replies_in_order() -> None:
    cluster, s, _ = make()
    run_auto(s.use("t1"))
    batch = plan(s, [put(b"a"), put(b"b"), put(b"c")])
    assert batch is not None and batch.size == 3
    run = Script(batch.op)
    (send,) = run.now.sends
    assert send.link.shard.name == "s1" and send.replies == 3 and not run.now.first
    assert send.data == b"".join(p.encode_put(10, 0, 60, b) for b in (b"a", b"b", b"c"))
    run.answer({"s1": [Inserted(5), Inserted(6), Inserted(7)]})
    assert run.value() == [Inserted(gid("s1", n)) for n in (5, 6, 7)]
    assert [cluster.put_order[gid("s1", n)] for n in (5, 6, 7)] == [1, 2, 3]
    assert send.link.ready


def test_use_then_puts_go_in_the_same_write() -> None:
    _, s, _ = make()
    run_auto(s.use("t1"))
    batch = plan(s, [p.Use("t1"), put(), p.ListTubeUsed(), put()])
    assert batch is not None and batch.size == 4
    run = Script(batch.op)
    assert run.data() == {"s1": [b"put 10 0 60 1", b"x", b"put 10 0 60 1", b"x"]}
    run.answer({"s1": [Inserted(1), Inserted(2)]})
    assert run.value() == [
        Using("t1"),
        Inserted(gid("s1", 1)),
        Using("t1"),
        Inserted(gid("s1", 2)),
    ]


def test_a_use_that_changes_the_link_is_in_the_write() -> None:
    _, s, _ = make(n=1)
    batch = plan(s, [p.Use("jobs"), put(), put()])
    assert batch is not None and batch.size == 3
    run = Script(batch.op)
    assert run.data() == {"s0": [b"use jobs", b"put 10 0 60 1", b"x", b"put 10 0 60 1", b"x"]}
    run.answer({"s0": [Using("jobs"), Inserted(1), Inserted(2)]})
    assert run.value() == [Using("jobs"), Inserted(1), Inserted(2)]
    assert s.using == "jobs"


def test_the_run_ends_before_a_command_for_another_link_or_one_that_cannot_join() -> None:
    _, s, _ = make()
    run_auto(s.use("t1"))
    batch = plan(s, [put(), put(), p.Stats(), put()])
    assert batch is not None and batch.size == 2
    Script(batch.op).answer({"s1": [Inserted(1), Inserted(2)]})
    # A job of another shard: the run ends before it.
    batch = plan(s, [put(), p.Delete(gid("s2", 4)), put()])
    assert batch is not None and batch.size == 1
    # A first command that cannot start a run: the caller runs it alone.
    assert plan(s, [p.Watch("t2"), put()]) is None
    assert plan(s, [p.Reserve(), put()]) is None
    assert plan(s, [p.ReserveWithTimeout(5)]) is None


def test_a_run_is_bounded() -> None:
    _, s, _ = make()
    run_auto(s.use("t1"))
    batch = plan(s, [put()] * (MAX_COMMANDS + 10))
    assert batch is not None and batch.size == MAX_COMMANDS


def test_job_commands_go_to_the_link_that_holds_the_job() -> None:
    s = proxy_session()
    got = run_auto_reserve(s, 9)
    job = got.id
    holder = s.held[job].link
    batch = plan(s, [p.Touch(job), p.StatsJob(job), p.Release(job, 7, 0), put()])
    assert batch is not None and batch.size == 4
    run = Script(batch.op)
    (send,) = run.now.sends
    assert send.link is holder
    assert commands(send.data) == [
        b"touch 9",
        b"stats-job 9",
        b"release 9 7 0",
        b"put 10 0 60 1",
        b"x",
    ]
    run.answer({"s1": [p.TOUCHED, job_stats(9, "t1", 7), p.RELEASED, Inserted(10)]})
    results = run.value()
    assert results[0] == p.TOUCHED and results[2] == p.RELEASED
    assert isinstance(results[1], p.Ok) and p.parse_mapping(results[1].body)["id"] == job
    assert results[3] == Inserted(gid("s1", 10))
    assert job not in s.held and holder.held == 0


def run_auto_reserve(s: Session, local: int) -> Reserved:
    """A one-shard ``reserve-with-timeout 0`` that gets job ``local`` (one round, no stats)."""
    run = Script(reserve(s, 0))
    assert run.now.first and run.now.until is None
    (send,) = run.now.sends
    assert commands(send.data)[-1] == b"reserve-with-timeout 0"
    run.reply({send.link: [Watching(1)] * (send.replies - 1) + [Reserved(local, b"job")]})
    got = run.value()
    assert isinstance(got, Reserved)
    return got


def test_commands_answered_without_sending_anything_join_the_run() -> None:
    s = proxy_session()
    job = run_auto_reserve(s, 3).id
    s.drop(s.held[job].link)  # its link closed: the reservation is lost
    s.take_closes()
    batch = plan(s, [put(), p.Delete(ids.encode(9, 1)), p.Delete(job), p.ListTubesWatched()])
    assert batch is not None and batch.size == 4
    run = Script(batch.op)
    assert run.data() == {"s1": [b"use t1", b"put 10 0 60 1", b"x"]}
    run.answer({"s1": [Using("t1"), Inserted(4)]})
    first, bad, lost, watched = run.value()
    assert first == Inserted(gid("s1", 4))
    assert isinstance(bad, JobIdError) and isinstance(lost, ReservationLost)
    assert watched == p.Ok(p.format_list(["t1"]))


def test_a_reserve_ends_the_run_and_its_job_is_held_without_a_stats_job() -> None:
    s = proxy_session()
    cluster = s.cluster
    job = run_auto_reserve(s, 1).id
    probe = p.ReserveWithTimeout(0)
    batch = plan(s, [p.Delete(job), probe, put()], probe=probe)
    assert batch is not None and batch.size == 2
    run = Script(batch.op)
    assert run.now.first and run.now.until is None  # read until the shard answers
    assert run.data() == {"s1": [b"delete 1", b"reserve-with-timeout 0"]}
    (send,) = run.now.sends
    run.reply({send.link: [DELETED]})  # only part has come: the rest is still read
    assert run.now.wait == [send.link] and not run.now.sends
    run.reply({send.link: [Reserved(2, b"next")]})
    assert run.value() == [DELETED, Reserved(gid("s1", 2), b"next")]
    held = s.held[gid("s1", 2)]
    assert held.ttr == 0 and held.deadline == math.inf and held.link is send.link
    assert job not in s.held and send.link.held == 1
    assert cluster.metrics.give_backs == 0


def test_a_clients_own_reserve_0_does_not_end_the_run() -> None:
    s = proxy_session()
    probe = p.ReserveWithTimeout(0)
    own = [p.ReserveWithTimeout(0), put(), p.ReserveWithTimeout(0), probe, put()]
    batch = plan(s, own, probe=probe)
    assert batch is not None and batch.size == 4  # up to the shell's probe, which ends it
    run = Script(batch.op)
    assert run.data() == {
        "s1": [
            b"reserve-with-timeout 0",
            b"put 10 0 60 1",
            b"x",
            b"reserve-with-timeout 0",
            b"reserve-with-timeout 0",
        ]
    }
    run.answer({"s1": [Reserved(1, b"a"), Inserted(2), TIMED_OUT, Reserved(2, b"x")]})
    assert run.value() == [
        Reserved(gid("s1", 1), b"a"),
        Inserted(gid("s1", 2)),
        TIMED_OUT,
        Reserved(gid("s1", 2), b"x"),
    ]
    assert set(s.held) == {gid("s1", 1), gid("s1", 2)}
    assert not any(link.reserving for link in s.all_links())


def test_a_reserve_that_times_out_in_a_run() -> None:
    s = proxy_session()
    batch = plan(s, [put(), p.ReserveWithTimeout(0)])
    assert batch is not None and batch.size == 2
    run = Script(batch.op)
    run.answer({"s1": [Inserted(1), TIMED_OUT]})
    assert run.value() == [Inserted(gid("s1", 1)), TIMED_OUT]
    assert not any(link.reserving for link in s.all_links())


@pytest.mark.parametrize("kind", [FailureKind.CONNECT, FailureKind.STALE])
def test_nothing_sent_each_command_runs_its_own_operation(kind: FailureKind) -> None:
    cluster, s, _ = make(failover=1)
    tube = "t1"
    owner = cluster.preference(tube)[0]
    run_auto(s.use(tube))
    batch = plan(s, [put(b"a"), put(b"b")])
    assert batch is not None and batch.size == 2
    run = Script(batch.op)
    run.answer({owner: Failure(kind, "gone")})
    # The first put's own operation: the owner again on a new link (stale) or the successor.
    for body, local in ((b"a", 1), (b"b", 2)):
        (send,) = run.now.sends
        assert commands(send.data)[-1] == body
        replies = [Using(tube), Inserted(local)] if send.replies == 2 else [Inserted(local)]
        run.reply({send.link: replies})
    results = run.value()
    shard = {r.id >> ids.LOCAL_BITS for r in results}
    assert all(isinstance(r, Inserted) for r in results) and len(shard) == 1


def test_lost_after_the_write_each_command_gets_its_own_error() -> None:
    cluster, s, _ = make()
    run_auto(s.use("t1"))
    job = ids.encode(1, 77)
    batch = plan(s, [put(), p.Delete(job), p.StatsJob(job)])
    assert batch is not None and batch.size == 3
    run = Script(batch.op)
    run.answer({"s1": Failure(FailureKind.LOST, "reset")})
    uncertain, deleted, stats = run.value()
    assert isinstance(uncertain, PutUncertain)
    assert isinstance(deleted, ShardUnavailable) and isinstance(stats, ShardUnavailable)
    assert cluster.metrics.put_uncertain == 1


def test_a_put_refused_in_a_run_tries_the_next_shard_at_its_turn() -> None:
    cluster, s, _ = make(failover=1)
    tube = "t1"
    owner, successor = cluster.preference(tube)
    run_auto(s.use(tube))
    batch = plan(s, [put(b"a"), put(b"b"), put(b"c")])
    assert batch is not None
    run = Script(batch.op)
    run.answer({owner: [Inserted(1), DRAINING, Inserted(3)]})
    assert run.data() == {successor: [b"use t1", b"put 10 0 60 1", b"b"]}  # at its turn
    run.answer({successor: [Using(tube), Inserted(9)]})
    results = run.value()
    assert results[0] == Inserted(gid(owner, 1)) and results[2] == Inserted(gid(owner, 3))
    assert results[1] == Inserted(gid(successor, 9))
    assert cluster.metrics.failovers == 1


def test_a_use_answered_with_nonsense_drops_the_link() -> None:
    _, s, _ = make(n=1)
    batch = plan(s, [p.Use("jobs"), put()])
    assert batch is not None
    run = Script(batch.op)
    (send,) = run.now.sends
    run.reply({send.link: [NOT_FOUND, Inserted(1)]})
    assert run.value() == [Using("jobs"), Inserted(1)]
    assert send.link.closed


# ---- held jobs whose TTR is read later (``reserve.hold`` / ``learn``) ---------------------------


def test_ttrs_are_read_when_the_watch_list_spans_several_shards() -> None:
    _, s, clock = make(cancellable=False)
    watch_only(s, ["t1"])
    kept = run_auto_reserve(s, 1).id
    gone = run_auto_reserve(s, 2).id
    run_auto(s.watch(TUBE_ON["s2"]))  # now two shards: DEADLINE_SOON is the core's
    clock.t += 10
    run = Script(reserve(s, 0))
    assert run.data()["s1"] == [b"stats-job 1", b"stats-job 2"]
    run.answer(
        {
            "s1": [
                job_stats(1, "t1", 5, ttr=60, state="reserved"),
                job_stats(2, "t1", 5, ttr=5, state="reserved"),  # its TTR ran out: not ours
            ]
        }
    )
    assert s.held[kept].ttr == 60 and s.held[kept].deadline == 1000.0 + 60
    assert gone not in s.held
    assert s.held[kept].link.held == 1


def test_many_held_jobs_take_the_usual_path_that_reads_their_ttrs() -> None:
    _, s, _ = make(cancellable=False)
    watch_only(s, ["t1"])
    for local in range(HELD_FAST_MAX):
        run_auto_reserve(s, local + 1)
    run = Script(reserve(s, 0))
    (send,) = run.now.sends
    assert commands(send.data)[:2] == [b"stats-job 1", b"stats-job 2"]
    assert send.replies == HELD_FAST_MAX


# -- streamed runs: the client's own blocking reserves go to the shard as they are ----------------


def test_a_streamed_run_sends_blocking_reserves_as_they_are_and_answers_as_replies_come() -> None:
    s = proxy_session()
    job = run_auto_reserve(s, 1).id
    got: list[object] = []
    commands_in = [
        p.Delete(job),
        p.Reserve(),
        p.Delete(gid("s1", 2)),
        p.ReserveWithTimeout(5),
        put(),
    ]
    batch = plan(s, commands_in, stream=got.append)
    assert batch is not None and batch.size == 5  # the waits do not end it
    run = Script(batch.op)
    assert run.now.first and run.now.until is None and run.now.partial
    assert run.data() == {
        "s1": [
            b"delete 1",
            b"reserve",
            b"delete 2",
            b"reserve-with-timeout 5",
            b"put 10 0 60 1",
            b"x",
        ]
    }
    (send,) = run.now.sends
    run.reply({send.link: [DELETED]})  # the shard waits in the reserve: the delete is answered
    assert got == [DELETED]
    assert run.now.wait == [send.link] and run.now.partial
    run.reply({send.link: [Reserved(2, b"b"), DELETED]})
    assert got == [DELETED, Reserved(gid("s1", 2), b"b"), DELETED]
    run.reply({send.link: [TIMED_OUT, Inserted(3)]})  # the second wait timed out at the shard
    assert got[3:] == [TIMED_OUT, Inserted(gid("s1", 3))]
    assert run.value() == []  # (streamed: not kept)
    assert not s.held and not any(link.reserving or link.owed for link in s.all_links())
    assert s.cluster.metrics.give_backs == 0


def test_a_streamed_wait_whose_link_is_lost_answers_internal_error_not_a_new_wait() -> None:
    s = proxy_session()
    got: list[object] = []
    batch = plan(s, [p.Reserve(), put()], stream=got.append)
    assert batch is not None and batch.size == 2
    run = Script(batch.op)
    (send,) = run.now.sends
    run.reply({send.link: Failure(FailureKind.LOST, "shard gone")})
    assert run.value() == []
    (wait, stored) = got
    assert isinstance(wait, ShardUnavailable) and isinstance(stored, PutUncertain)


def test_a_streamed_run_out_takes_more_commands_on_its_link_in_order() -> None:
    """``extend``: what the client sends while a streamed run is out joins it on its link (the
    shard keeps the order); results come through ``stream`` after the earlier ones."""
    s = proxy_session()
    got: list[object] = []
    batch = plan(s, [p.Reserve()], stream=got.append)
    assert batch is not None
    run = Script(batch.op)
    (send,) = run.now.sends
    link = send.link
    assert extendable(batch) is link and link.owed == 1
    assert extend(s, batch, []) == (0, b"")
    assert extend(s, batch, [p.ReserveWithTimeout(9)]) == (1, b"reserve-with-timeout 9\r\n")
    run.reply({link: [Reserved(1, b"a")]})
    first = gid("s1", 1)
    assert got == [Reserved(first, b"a")] and first in s.held and link.owed == 1
    assert extend(s, batch, [p.Delete(first), p.Reserve()]) == (2, b"delete 1\r\nreserve\r\n")
    assert link.owed == 3
    assert extend(s, batch, [p.Use("t2"), put()]) == (0, b"")  # (``use``: not while out)
    taken, data = extend(s, batch, [put(), p.ListTubeUsed(), p.Watch("t2")])
    assert taken == 2 and data == b"put 10 0 60 1\r\nx\r\n" and link.owed == 4
    run.reply({link: [TIMED_OUT, DELETED]})
    assert got[1:] == [TIMED_OUT, DELETED] and first not in s.held
    run.reply({link: [Reserved(2, b"b"), Inserted(3)]})
    assert got[3:] == [Reserved(gid("s1", 2), b"b"), Inserted(gid("s1", 3)), p.Using("t1")]
    assert run.value() == [] and extendable(batch) is None  # over: nothing joins it now
    assert extend(s, batch, [p.Reserve()]) == (0, b"")
    assert link.owed == 0 and not link.reserving


def test_a_streamed_run_out_keeps_its_bound_on_unanswered_reserves() -> None:
    s = proxy_session()
    batch = plan(s, [p.Reserve(), p.Reserve(), p.Reserve()], stream=lambda _: None, max_reserves=2)
    assert batch is not None and batch.size == 2
    run = Script(batch.op)
    (send,) = run.now.sends
    assert extend(s, batch, [p.ReserveWithTimeout(5)]) == (0, b"")  # two unanswered already
    run.reply({send.link: [Reserved(1, b"a")]})
    assert extend(s, batch, [p.ReserveWithTimeout(5), p.Reserve()]) == (
        1,
        b"reserve-with-timeout 5\r\n",
    )
    run.reply({send.link: Failure(FailureKind.LOST, "shard gone")})
    assert extendable(batch) is None  # a failed link takes nothing more
    assert extend(s, batch, [p.Reserve()]) == (0, b"")


def hold_elsewhere(s: Session, job: int) -> None:
    """Make the held ``job`` held on another link of its shard than the one it came on."""
    held = s.held[job]
    other = s.idle_link(held.link.shard)
    held.link.held -= 1
    held.link = other
    other.held += 1


def test_no_stream_when_the_session_holds_jobs_on_another_link_or_watches_two_shards() -> None:
    s = proxy_session()
    job = run_auto_reserve(s, 1).id
    hold_elsewhere(s, job)
    batch = plan(s, [p.Reserve()], stream=lambda _: None)
    assert batch is None  # the shard's own DEADLINE_SOON would not cover that job
    s2 = proxy_session()
    run_auto(s2.watch("t2"))  # t1 on s1, t2 on another shard
    assert s2.watch_map().keys() != {"s1"}
    assert plan(s2, [p.Reserve()], stream=lambda _: None) is None
    assert plan(proxy_session(), [p.Reserve()]) is None  # and never without ``stream``


def test_a_run_takes_a_bounded_number_of_reserves() -> None:
    """Each reserve may bring back a whole job body: a run takes ``MAX_RESERVES`` of them (or
    what the shell allows), so a client that does not read is paused after one run's replies."""
    s = proxy_session()
    many = [p.ReserveWithTimeout(0) for _ in range(MAX_RESERVES + 5)]
    batch = plan(s, many)
    assert batch is not None and batch.size == MAX_RESERVES
    Script(batch.op).answer({"s1": [TIMED_OUT] * MAX_RESERVES})
    streamed = plan(proxy_session(), [p.Reserve()] * 5, stream=lambda _: None, max_reserves=2)
    assert streamed is not None and streamed.size == 2


def test_stream_link_is_the_core_s_answer_and_creates_nothing() -> None:
    s = proxy_session()
    s.links.clear()  # (as if its links had gone)
    assert stream_link(s, s.cluster.clock()) is None  # no link: none is made for asking
    assert not any(s.links.values())
    job = run_auto_reserve(s, 1).id
    link = stream_link(s, s.cluster.clock())
    assert link is not None and link is s.held[job].link
    hold_elsewhere(s, job)  # a held job elsewhere: its DEADLINE_SOON
    assert stream_link(s, s.cluster.clock()) is None
    two = proxy_session()
    run_auto(two.watch("t2"))
    assert stream_link(two, two.cluster.clock()) is None  # watched tubes on two shards


@pytest.mark.parametrize(
    ("cmd", "waits"),
    [
        (p.Reserve(), True),
        (p.ReserveWithTimeout(5), True),
        (p.ReserveWithTimeout(-1), True),
        (p.ReserveWithTimeout(0), False),
        (p.ReserveJob(3), False),
        (put(), False),
    ],
)
def test_may_wait(cmd: p.Command, waits: bool) -> None:
    assert p.may_wait(cmd) is waits


# ---- posted use (the proxy's: ``Session.posting``, ``Send.posted``) ----------------------------


def test_a_posted_use_is_written_before_the_run_and_answered_without_a_shard_reply() -> None:
    _, s, _ = make()
    s.posting = True
    run_auto(s.use("t1"))  # (posted too: answered by the script as written)
    batch = plan(s, [p.Use("t2"), put(b"a")])
    assert batch is not None and batch.size == 2
    run = Script(batch.op)
    # First the posted uses: t2 on its shard, and s1's link lets go of t1.
    posted = {send.link.shard.name: (commands(send.data), send.posted) for send in run.now.sends}
    assert posted == {
        "s2": ([b"use t2"], (Using("t2"),)),
        "s1": ([b"use default"], (Using("default"),)),
    }
    run.reply({send.link: list(send.posted) for send in run.now.sends})  # (the shell answers)
    assert run.data() == {"s2": [b"put 10 0 60 1", b"a"]}
    run.answer({"s2": [Inserted(4)]})
    assert run.value() == [Using("t2"), Inserted(gid("s2", 4))]


def test_without_posting_a_use_that_changes_several_links_is_its_own_operation() -> None:
    _, s, _ = make()
    run_auto(s.use("t1"))
    assert plan(s, [p.Use("t2"), put(b"a")]) is None


def test_two_posted_uses_of_one_link_are_one_send() -> None:
    _, s, _ = make()
    s.posting = True
    batch = plan(s, [p.Use("t1"), p.Use("t1b"), p.ListTubeUsed()])
    assert batch is not None
    run = Script(batch.op)
    by_link: dict[object, int] = {}
    for send in run.now.sends:
        by_link[send.link] = by_link.get(send.link, 0) + 1
        assert send.replies == len(send.posted)
    assert all(n == 1 for n in by_link.values())


def test_a_proxy_reserve_now_over_several_shards_runs_alone_as_the_cross_shard_reserve() -> None:
    """``reserve-with-timeout 0`` over several shards is not a one-shard run, but the proxy
    still runs it without a task: a batch of its own operation, alone."""
    _, s, _ = make(cancellable=False)
    watch_only(s, [TUBE_ON["s0"], TUBE_ON["s1"]])
    batch = plan(s, [p.ReserveWithTimeout(0), p.Delete(1)])
    assert batch is not None and batch.size == 1
    run = Script(batch.op)
    assert sorted(run.data()) == ["s0", "s1"]  # the cross-shard choice's look
    run.auto(s0=[tube_stats("t0", ready=0)], s1=[tube_stats("t1", ready=0)])  # none ready
    assert run.value() == [p.TIMED_OUT]
    _, lib, _ = make()  # the library's session runs reserves by their own operation
    watch_only(lib, [TUBE_ON["s0"], TUBE_ON["s1"]])
    assert plan(lib, [p.ReserveWithTimeout(0)]) is None
