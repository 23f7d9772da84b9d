"""The routing core's cross-shard reserve (``beanrouter.core.reserve``) with scripted replies.

Each test drives ``Session.reserve`` round by round (``core_script``): the choice (``stats-tube`` of
every watched tube, then, when several shards have ready jobs, ``peek-ready`` of their ready tubes
and ``stats-job`` of the candidates; ``reserve-with-timeout 0`` on the winner only), the blocking
wait and its race, lingering waits, prefetched jobs, DEADLINE_SOON and timeouts.
"""

from __future__ import annotations

import math

import pytest

from beanrouter.core import Cluster, Failure, FailureKind, Link, Round, Session, ids
from beanrouter.core.cluster import BoundedUnseen
from beanrouter.core.errors import ShardUnavailable
from beanrouter.core.reserve import PREFETCH_HOLD, SAFETY_MARGIN
from beanrouter.core.session import Held
from beanrouter.protocol import (
    DEADLINE_SOON,
    NOT_FOUND,
    RELEASED,
    TIMED_OUT,
    Found,
    Reply,
    Reserved,
    Watching,
)

from .core_script import (
    NAMES,
    TUBE_ON,
    Clock,
    Script,
    add_wait_links,
    auto,
    commands,
    job_stats,
    make,
    shard_stats,
    tube_stats,
)
from .core_script import watch_only as _watch_only


def own_unseen(cluster: Cluster) -> BoundedUnseen:
    """The cluster's own unseen-counter ledger (a dict), as every test cluster has."""
    assert isinstance(cluster.unseen, BoundedUnseen)
    return cluster.unseen


def watch_only(s: Session, tubes: list[str]) -> None:
    """``core_script.watch_only``, then a wait link per shard (``add_wait_links``)."""
    _watch_only(s, tubes)
    add_wait_links(s)


SID = {"s0": 0, "s1": 1, "s2": 2}


def gid(shard: str, local: int) -> int:
    return ids.encode(SID[shard], local)


def three() -> tuple[Cluster, Session, Clock]:
    """A session watching t0, t1, t2: one tube on each shard."""
    cluster, s, clock = make()
    watch_only(s, [TUBE_ON[n] for n in NAMES])
    return cluster, s, clock


def sweep_lines(tube: str) -> list[bytes]:
    """A choice's second round on one shard: the tube's most urgent job."""
    t = tube.encode()
    return [b"use " + t, b"peek-ready", b"use default"]


def answer_sweep(
    run: Script,
    ready: dict[str, Reply],
    paused: dict[str, int] | None = None,
    left: dict[str, int] | None = None,
) -> None:
    """Answer a choice: ``ready`` is each shard's ``peek-ready`` reply (default NOT_FOUND: no
    ready job); ``paused`` its tube's ``pause`` and ``left`` its ``pause-time-left`` (default
    ``paused``). Round 1 is ``stats-tube`` everywhere; round 2 (the peeks, only where jobs are
    ready) comes when several shards have ready jobs or a job is prefetched."""
    assert not run.now.first
    # The peeks come in round 1 when the session's last choice saw a backlog (peek_ahead).
    ahead = any(b"peek-ready" in d for d in _lines(run))
    expect = {n: [b"stats-tube " + TUBE_ON[n].encode()] for n in run.sends()}
    if ahead:
        expect = {n: [b"stats-tube " + TUBE_ON[n].encode(), *sweep_lines(TUBE_ON[n])]
                  for n in run.sends()}  # fmt: skip
    assert run.data() == expect
    paused = paused or {}
    left = left or {}
    run.auto(
        **{
            n: [
                tube_stats(
                    TUBE_ON[n],
                    paused.get(n, 0),
                    int(isinstance(ready.get(n), Found)),
                    left.get(n),
                ),
                *([ready.get(n, NOT_FOUND)] if ahead else []),
            ]
            for n in run.sends()
        }
    )
    if ahead:
        return
    if run.done or run.now.first or not any(b"peek-ready" in d for d in _lines(run)):
        return
    assert run.data() == {n: sweep_lines(TUBE_ON[n]) for n in run.sends()}
    run.auto(**{n: [ready[n]] for n in run.sends()})


def _lines(run: Script) -> list[bytes]:
    return [line for lines in run.data().values() for line in lines]


def reserve_lines(run: Script) -> list[tuple[str, bytes]]:
    """Every reserve command sent during the operation so far."""
    return [
        (send.link.shard.name, line)
        for rnd in run.rounds
        for send in rnd.sends
        for line in commands(send.data)
        if line.startswith(b"reserve")
    ]


# ---- the choice -------------------------------------------------------------------------------


def test_the_most_urgent_wins_and_only_the_winner_is_reserved() -> None:
    cluster, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"a"), "s1": Found(4, b"b")})
    assert run.data() == {"s0": [b"stats-job 3"], "s1": [b"stats-job 4"]}  # candidates only
    run.auto(s0=[job_stats(3, "t0", 10)], s1=[job_stats(4, "t1", 5, ttr=30)])
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}
    run.auto(s1=[Reserved(4, b"b")])
    assert run.value() == Reserved(gid("s1", 4), b"b")
    assert reserve_lines(run) == [("s1", b"reserve-with-timeout 0")]
    held = s.held[gid("s1", 4)]
    assert (held.priority, held.ttr, held.tube) == (5, 30, "t1")
    assert cluster.metrics.deliveries == 1 and cluster.metrics.give_backs == 0
    assert len(run.rounds) == 4  # stats-tube, peeks, stats-job, reserve: none after it


def test_equal_priority_the_oldest_wins() -> None:
    _, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {n: Found(i + 1, b"j") for i, n in enumerate(NAMES)})
    run.auto(
        s0=[job_stats(1, "t0", 7, age=1)],
        s1=[job_stats(2, "t1", 7, age=9)],
        s2=[job_stats(3, "t2", 7, age=4)],
    )
    assert list(run.sends()) == ["s1"]


def test_a_paused_tube_is_skipped() -> None:
    _, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"a"), "s1": Found(4, b"b")}, paused={"s1": 30})
    # s0 alone has a ready job in an unpaused tube: no stats-job round, reserve it.
    assert run.data() == {"s0": [b"reserve-with-timeout 0"]}
    run.auto(s0=[Reserved(3, b"a")])
    assert run.data() == {"s0": [b"stats-job 3"]}  # learnt now: priority and TTR of the held job
    run.auto(s0=[job_stats(3, "t0", 9, state="reserved")])
    assert run.value() == Reserved(gid("s0", 3), b"a")
    assert reserve_lines(run) == [("s0", b"reserve-with-timeout 0")]


def test_a_tube_in_the_last_second_of_its_pause_is_skipped() -> None:
    # ``pause-time-left`` is whole seconds: 0 in a pause's last second, while ``pause`` still says
    # the tube is paused. s1's job is the more urgent but its shard would not reserve it.
    _, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(
        run, {"s0": Found(3, b"a"), "s1": Found(4, b"b")}, paused={"s1": 1}, left={"s1": 0}
    )
    assert run.data() == {"s0": [b"reserve-with-timeout 0"]}  # s0 alone: no peek of s1
    run.auto(s0=[Reserved(3, b"a")])
    run.auto(s0=[job_stats(3, "t0", 9, state="reserved")])
    assert run.value() == Reserved(gid("s0", 3), b"a")
    assert reserve_lines(run) == [("s0", b"reserve-with-timeout 0")]


def test_a_lifted_pause_competes_again() -> None:
    # The shard sets ``pause`` to 0 when the pause lifts: the tube's job is chosen by priority.
    _, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"a"), "s1": Found(4, b"b")}, paused={"s1": 0})
    run.auto(s0=[job_stats(3, "t0", 9, age=5)], s1=[job_stats(4, "t1", 0)])
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}


def test_every_tube_paused_times_out_without_reserving() -> None:
    _, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {n: Found(1, b"j") for n in NAMES}, paused=dict.fromkeys(NAMES, 5))
    assert run.value() == TIMED_OUT
    assert reserve_lines(run) == []


def test_the_winner_taken_meanwhile_is_chosen_again() -> None:
    cluster, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {"s2": Found(8, b"z")})
    assert run.data() == {"s2": [b"reserve-with-timeout 0"]}
    run.auto(s2=[TIMED_OUT])  # another client took it
    assert cluster.metrics.sweep_retries == 1
    answer_sweep(run, {"s0": Found(2, b"y")})
    assert run.data() == {"s0": [b"reserve-with-timeout 0"]}
    run.auto(s0=[Reserved(2, b"y")])
    run.auto(s0=[job_stats(2, "t0", 1, state="reserved")])
    assert run.value() == Reserved(gid("s0", 2), b"y")


def test_reserve_0_with_nothing_ready_times_out_after_one_round() -> None:
    _, s, _ = three()
    run = Script(s.reserve(0))
    answer_sweep(run, {})
    assert run.value() == TIMED_OUT
    assert len(run.rounds) == 1


def test_a_single_shard_is_reserved_directly() -> None:
    _, s, clock = make()
    watch_only(s, ["t1"])
    run = Script(s.reserve(0))
    rnd = run.now
    assert rnd.first and rnd.until == clock.t
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}
    run.auto(s1=[TIMED_OUT])
    assert run.value() == TIMED_OUT
    assert len(run.rounds) == 1
    run = Script(s.reserve(None))
    assert run.now.first and run.now.until is None
    assert run.data() == {"s1": [b"reserve"]}
    run.auto(s1=[Reserved(5, b"x")])
    run.auto(s1=[job_stats(5, "t1", 3, state="reserved")])
    assert run.value() == Reserved(gid("s1", 5), b"x")


def test_no_shard_up_raises() -> None:
    cluster, s, _ = three()
    for shard in cluster.shards.values():
        for _ in range(cluster.config.server_failure_limit):
            shard.health.failure("down")
    with pytest.raises(ShardUnavailable):
        Script(s.reserve(1)).value()


@pytest.mark.parametrize("probing", [False, True])
def test_a_wait_looks_at_a_down_shard_again_as_often_as_a_background_prober_tries_it(
    probing: bool,
) -> None:
    """A blocked reserve wakes when the down shard's backoff ends; when a shell probes the down
    shards in the background (``Cluster.probing``), at least every ``server_retry_timeout``,
    so a shard found up again joins the wait without waiting out its backoff."""
    cluster, s, clock = three()
    cluster.probing = probing
    down = cluster.shards["s2"]
    for _ in range(8):
        down.health.failure("down")  # its probe interval at its maximum
    assert down.health.next_probe() == clock.t + cluster.config.server_retry_timeout_max
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    rnd = run.now
    assert rnd.first and set(run.sends()) == {"s0", "s1"}
    looks_at = clock.t + cluster.config.server_retry_timeout if probing else down.health.retry_at
    assert rnd.until == looks_at
    clock.t = looks_at
    cluster.probed(down)  # (as the prober does once the shard answers)
    run.reply({})
    assert set(run.sends()) == {"s2"}  # it joins the wait


# ---- the blocking wait ------------------------------------------------------------------------


def test_a_wait_that_may_be_cancelled_runs_beside_the_main_link_which_keeps_the_watches() -> None:
    # Closing a wait must not make a watched tube vanish from its shard (with its pause state):
    # on one beanstalkd a watched tube exists while the connection watches it.
    cluster, s, _ = make()
    _watch_only(s, [TUBE_ON[n] for n in NAMES])  # the main links only, as a session starts
    mains = {n: s.main(cluster.shards[n]) for n in NAMES}
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    sends = run.sends()
    for n in NAMES:
        assert sends[n].link is not mains[n]
        assert commands(sends[n].data) == [b"watch " + TUBE_ON[n].encode(), b"ignore default",
                                           b"reserve"]  # fmt: skip
    waits = {n: sends[n].link for n in NAMES}
    run.reply({waits["s1"]: auto(sends["s1"], Reserved(7, b"job"))})
    rnd = run.now
    assert set(rnd.cancel) == {waits["s0"], waits["s2"]}
    run.reply({waits[n]: [Watching(2), Watching(1)] for n in ("s0", "s2")})  # not the reserve
    run.auto(s1=[job_stats(7, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 7), b"job")
    assert waits["s0"].closed and waits["s2"].closed
    for n in NAMES:
        assert not mains[n].closed and mains[n].watched == [TUBE_ON[n]]


def wait_raced(s: Session, first_pri: int = 5, raced_pri: int = 10) -> tuple[Script, Link]:
    """A blocking reserve over three empty shards: s1 delivers, s2's job races in before its wait
    is cancelled, s0 delivers nothing. Returns the script and s0's cancelled link."""
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    rnd = run.now
    assert rnd.first and rnd.until is None
    assert run.data() == {n: [b"reserve"] for n in NAMES}
    links = {n: send.link for n, send in run.sends().items()}
    run.reply({links["s1"]: [Reserved(7, b"first")]})
    # One cancel step: the shell reads what raced in on the other waits without waiting, and
    # closes at once those still owing (s0).
    rnd = run.now
    assert not rnd.sends and set(rnd.cancel) == {links["s0"], links["s2"]}
    run.reply({links["s2"]: [Reserved(9, b"raced")], links["s0"]: []})
    assert links["s0"].closed
    assert run.data() == {"s1": [b"stats-job 7"], "s2": [b"stats-job 9"]}
    run.auto(
        s1=[job_stats(7, "t1", first_pri, state="reserved")],
        s2=[job_stats(9, "t2", raced_pri, state="reserved")],
    )
    return run, links["s0"]


def test_the_first_job_wins_and_a_raced_job_is_kept() -> None:
    cluster, s, clock = three()
    run, cancelled = wait_raced(s)
    assert run.value() == Reserved(gid("s1", 7), b"first")
    assert cancelled.closed and cancelled not in s.all_links()
    assert list(s.held) == [gid("s1", 7)]
    assert list(s.prefetched) == [gid("s2", 9)]
    assert s.prefetched[gid("s2", 9)].keep_until == clock.t + PREFETCH_HOLD
    m = cluster.metrics
    assert (m.deliveries, m.raced, m.wait_cancels, m.give_backs) == (1, 1, 1, 0)
    assert s.next_timer() == clock.t + PREFETCH_HOLD


def test_the_raced_job_wins_when_more_urgent() -> None:
    _, s, _ = three()
    run, _ = wait_raced(s, first_pri=10, raced_pri=5)
    assert run.value() == Reserved(gid("s2", 9), b"raced")
    assert list(s.prefetched) == [gid("s1", 7)]


def test_the_prefetched_job_is_handed_out_first_when_most_urgent() -> None:
    cluster, s, _ = three()
    wait_raced(s)[0].value()
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"later")})
    assert run.data() == {"s0": [b"stats-job 3"]}
    run.auto(s0=[job_stats(3, "t0", 20)])
    assert run.value() == Reserved(gid("s2", 9), b"raced")
    assert reserve_lines(run) == []  # nothing else reserved
    assert s.prefetched == {} and gid("s2", 9) in s.held
    assert cluster.metrics.prefetch_hits == 1 and cluster.metrics.give_backs == 0


def test_the_prefetched_job_alone_needs_no_stats_job() -> None:
    _, s, _ = three()
    wait_raced(s)[0].value()
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    assert run.value() == Reserved(gid("s2", 9), b"raced")
    assert len(run.rounds) == 1


def test_a_more_urgent_ready_job_beats_the_prefetched_one_which_is_given_back_later() -> None:
    cluster, s, clock = three()
    wait_raced(s)[0].value()
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"urgent")})
    run.auto(s0=[job_stats(3, "t0", 1)])
    (send,) = run.now.sends
    assert send.link.shard.name == "s0" and commands(send.data)[-1] == b"reserve-with-timeout 0"
    run.reply({send.link: auto(send, Reserved(3, b"urgent"))})
    assert run.value() == Reserved(gid("s0", 3), b"urgent")
    assert list(s.prefetched) == [gid("s2", 9)]
    # Nothing comes for it within PREFETCH_HOLD: maintain() gives it back.
    assert s.next_timer() == clock.t + PREFETCH_HOLD
    clock.t += PREFETCH_HOLD / 2
    assert Script(s.maintain()).done and s.prefetched  # not yet
    clock.t += PREFETCH_HOLD / 2
    run = Script(s.maintain())
    assert run.data() == {"s2": [b"release 9 10 0"]}  # its own priority
    holder = run.now.sends[0].link
    run.auto(s2=[RELEASED])
    assert run.value() is None
    assert s.prefetched == {} and s.next_timer() is None
    assert cluster.metrics.give_backs == 1
    assert holder.held == 0
    # The shard counted a reserve and a release nobody saw: stats-job will not show them.
    assert own_unseen(cluster) == {gid("s2", 9): (1, 1, 0)}
    assert cluster.metrics.unseen_reserves == 1


def test_a_give_back_the_shard_answers_not_found_was_a_ttr_timeout() -> None:
    cluster, s, clock = three()
    wait_raced(s)[0].value()
    clock.t += PREFETCH_HOLD
    run = Script(s.maintain())
    assert run.data() == {"s2": [b"release 9 10 0"]}
    holder = run.now.sends[0].link
    run.auto(s2=[NOT_FOUND])  # its TTR ran out on the shard just before
    run.value()
    assert own_unseen(cluster) == {gid("s2", 9): (1, 0, 1)}
    assert not holder.closed  # an answer, not a broken link


def test_a_give_back_that_fails_is_a_reserve_unseen_the_link_closing_puts_back() -> None:
    cluster, s, clock = three()
    wait_raced(s)[0].value()
    clock.t += PREFETCH_HOLD
    run = Script(s.maintain())
    holder = run.now.sends[0].link
    run.reply({holder: Failure(FailureKind.LOST, "reset")})
    run.value()
    assert holder.closed and own_unseen(cluster) == {gid("s2", 9): (1, 0, 0)}


def test_a_prefetched_job_of_an_ignored_tube_is_given_back() -> None:
    cluster, s, _ = three()
    wait_raced(s)[0].value()
    s.watching.remove("t2")  # as ``ignore`` does (its links' rounds are not the point here)
    s._wmap = None
    run = Script(s.reserve(0))
    assert run.data() == {"s2": [b"release 9 10 0"]}
    run.auto(s2=[RELEASED])
    assert cluster.metrics.give_backs == 1
    answer_sweep(run, {})
    assert run.value() == TIMED_OUT


def test_a_prefetched_job_on_a_closed_link_is_a_give_back() -> None:
    cluster, s, _ = three()
    wait_raced(s)[0].value()
    holder = s.prefetched[gid("s2", 9)].link
    main = s.main(holder.shard)
    assert main is not holder  # the wait ran beside the main link (``beside_main``)
    s.settle(holder, Failure(FailureKind.LOST, "reset"))  # the shell found it broken
    assert holder.closed and s.prefetched == {} and cluster.metrics.give_backs == 1
    assert own_unseen(cluster) == {gid("s2", 9): (1, 0, 0)}  # the shard puts it back: one reserve
    run = Script(s.reserve(0))
    answer_sweep(run, {})
    assert run.value() == TIMED_OUT
    assert not main.closed


def raced_with_ttr(ttr: float) -> tuple[Cluster, Session, Clock, Held]:
    """``wait_raced``, the raced job (s2's 9, prefetched) with ``ttr`` seconds left."""
    cluster, s, clock = three()
    wait_raced(s)[0].value()
    pre = s.prefetched[gid("s2", 9)]
    s.timed(pre, clock.t + ttr)
    return cluster, s, clock, pre


def test_a_prefetched_job_whose_ttr_runs_out_during_the_choice_is_not_handed_out() -> None:
    # The choice's rounds can take a paused shard's reply timeout; the raced job's TTR may run
    # out meanwhile: the shard has it back, so it is no longer the session's to hand out.
    cluster, s, clock, pre = raced_with_ttr(3)
    run = Script(s.reserve(0))
    clock.t = pre.deadline - SAFETY_MARGIN  # the slow round's replies come in now
    answer_sweep(run, {})
    assert run.value() == TIMED_OUT
    assert gid("s2", 9) not in s.held
    assert cluster.metrics.prefetch_hits == 0


def test_a_prefetched_job_that_goes_stale_while_its_choice_reads_stats_is_not_handed_out() -> None:
    cluster, s, clock, pre = raced_with_ttr(3)
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"later")})
    assert run.data() == {"s0": [b"stats-job 3"]}
    clock.t = pre.deadline - SAFETY_MARGIN  # the third round (the candidates' stats) was slow
    run.auto(s0=[job_stats(3, "t0", 20)])
    # The prefetched job (priority 10) would have won: the choice starts again without it.
    assert gid("s2", 9) not in s.held
    # (the last choice saw a backlog: this one peeks in its first round)
    answer_sweep(run, {"s0": Found(3, b"later")})
    assert run.data()["s0"][-1] == b"reserve-with-timeout 0"
    run.auto(s0=[Reserved(3, b"later")])
    run.auto(s0=[job_stats(3, "t0", 20, state="reserved")])
    assert run.value() == Reserved(gid("s0", 3), b"later")
    assert cluster.metrics.prefetch_hits == 0


def test_a_raced_job_the_shard_no_longer_counts_reserved_is_not_kept() -> None:
    # The stats-job of a job that raced in says "ready": its TTR ran out before the shard
    # answered (a paused shard); it is not the session's, neither held nor prefetched.
    _, s, _ = three()
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    links = {n: send.link for n, send in run.sends().items()}
    run.reply({links["s1"]: [Reserved(7, b"first")]})
    run.reply({links["s2"]: [Reserved(9, b"raced")], links["s0"]: []})
    run.auto(
        s1=[job_stats(7, "t1", 5, state="reserved")],
        s2=[job_stats(9, "t2", 1, state="ready")],
    )
    assert run.value() == Reserved(gid("s1", 7), b"first")
    assert s.prefetched == {} and list(s.held) == [gid("s1", 7)]
    assert links["s2"].held == 0


def test_reserve_job_of_a_prefetched_job_whose_ttr_ran_out_asks_the_shard() -> None:
    _, s, clock = three()
    wait_raced(s)[0].value()
    holder = s.prefetched[gid("s2", 9)].link
    clock.t = s.prefetched[gid("s2", 9)].deadline  # its TTR ran out: the shard has it back
    run = Script(s.reserve_job(gid("s2", 9)))
    assert [line for lines in run.data().values() for line in lines] == [b"reserve-job 9"]
    run.auto(s2=[NOT_FOUND])
    assert run.value() == NOT_FOUND
    assert gid("s2", 9) not in s.held and holder.held == 0


# ---- DEADLINE_SOON ----------------------------------------------------------------------------


def hold_one(s: Session, ttr: int) -> int:
    """Reserve a job of TTR ``ttr`` on s0 through the choice; returns its global id."""
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(1, b"held")})
    run.auto(s0=[Reserved(1, b"held")])
    run.auto(s0=[job_stats(1, "t0", 5, ttr=ttr, state="reserved")])
    assert run.value() == Reserved(gid("s0", 1), b"held")
    return gid("s0", 1)


def test_deadline_soon_during_the_wait() -> None:
    cluster, s, clock = three()
    job = hold_one(s, ttr=3)
    holder = s.held[job].link
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    rnd = run.now
    soon = s.held[job].deadline - SAFETY_MARGIN
    assert rnd.first and rnd.until == soon
    waits = [send.link for send in rnd.sends]
    assert holder not in waits  # waits never run on a link holding jobs (closing it loses them)
    clock.t = soon
    run.reply({})
    assert set(run.now.cancel) == set(waits)  # read once, then closed, in one shell step
    run.reply({link: [] for link in waits})
    assert run.value() == DEADLINE_SOON
    assert all(link.closed for link in waits)
    assert not holder.closed and job in s.held
    assert cluster.metrics.wait_cancels == 3


def test_deadline_soon_at_once_when_nothing_is_ready() -> None:
    _, s, clock = three()
    job = hold_one(s, ttr=3)
    clock.t = s.held[job].deadline - SAFETY_MARGIN / 2
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    assert run.value() == DEADLINE_SOON
    assert reserve_lines(run) == []


def test_a_ready_job_beats_deadline_soon() -> None:
    # beanstalkd answers DEADLINE_SOON only when no job is ready for the connection.
    _, s, clock = three()
    job = hold_one(s, ttr=3)
    clock.t = s.held[job].deadline - SAFETY_MARGIN / 2
    run = Script(s.reserve(None))
    answer_sweep(run, {"s1": Found(2, b"ready")})
    run.auto(s1=[Reserved(2, b"ready")])
    run.auto(s1=[job_stats(2, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 2), b"ready")


def one_shard_holding() -> tuple[Session, Clock, int]:
    """A session watching t1 alone (one shard: reserves go straight to the wait), holding a job
    of TTR 3 whose DEADLINE_SOON has begun."""
    _, s, clock = make()
    watch_only(s, ["t1"])
    run = Script(s.reserve(0))
    run.auto(s1=[Reserved(1, b"held")])
    run.auto(s1=[job_stats(1, "t1", 5, ttr=3, state="reserved")])
    assert run.value() == Reserved(gid("s1", 1), b"held")
    clock.t = s.held[gid("s1", 1)].deadline - SAFETY_MARGIN / 2
    return s, clock, gid("s1", 1)


def test_deadline_soon_on_one_shard_waits_for_the_shards_answer() -> None:
    # The shard's answer to the reserve-with-timeout 0 may come late (a loaded machine): the
    # job it reserved wins over DEADLINE_SOON, and nothing is closed before the answer.
    s, clock, held = one_shard_holding()
    run = Script(s.reserve(0))
    send = run.sends()["s1"]
    assert commands(send.data)[-1] == b"reserve-with-timeout 0"
    wait = send.link
    assert wait is not s.held[held].link
    run.reply({})  # nothing yet at the deadline (now): the answer is waited for
    assert not run.now.cancel and run.now.wait == [wait]
    clock.t += 0.4
    run.reply({wait: auto(send, Reserved(2, b"ready"))})
    run.auto(s1=[job_stats(2, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 2), b"ready")
    assert not wait.closed


def test_deadline_soon_on_one_shard_when_the_shard_has_no_job() -> None:
    s, _, _ = one_shard_holding()
    run = Script(s.reserve(None))
    send = run.sends()["s1"]
    assert commands(send.data)[-1] == b"reserve-with-timeout 0"  # not a blocking wait
    wait = send.link
    run.reply({wait: auto(send, TIMED_OUT)})
    assert run.value() == DEADLINE_SOON
    assert not wait.closed


def test_a_held_job_past_its_ttr_is_forgotten() -> None:
    _, s, clock = three()
    job = hold_one(s, ttr=3)
    clock.t += 3
    run = Script(s.reserve(0))
    assert job not in s.held  # the shard put it back: no DEADLINE_SOON for it
    answer_sweep(run, {})
    assert run.value() == TIMED_OUT


# ---- timeouts ---------------------------------------------------------------------------------


def start_wait(s: Session, clock: Clock, timeout: float) -> tuple[Script, dict[str, Link]]:
    run = Script(s.reserve(timeout))
    answer_sweep(run, {})
    rnd = run.now
    assert rnd.first and rnd.until == clock.t + timeout
    seconds = math.ceil(timeout)
    assert run.data() == {n: [b"reserve-with-timeout %d" % seconds] for n in NAMES}
    return run, {n: send.link for n, send in run.sends().items()}


def test_timed_out_at_the_deadline_keeps_the_links() -> None:
    cluster, s, clock = three()
    run, links = start_wait(s, clock, 2)
    clock.t += 2
    run.reply({})
    # The shards' own timeouts fire now: they are waited for briefly, so no link is closed.
    rnd = run.now
    assert rnd.first and not rnd.sends and set(rnd.wait) == set(links.values())
    # (until they answer, or the reply timeout says the shard is failing)
    assert rnd.until == clock.t + cluster.config.timeout
    run.reply({link: [TIMED_OUT] for link in links.values()})
    assert run.value() == TIMED_OUT
    assert s.take_closes() == [] and cluster.metrics.wait_cancels == 0
    assert all(link.ready for link in links.values())


def test_shards_late_past_the_grace_are_cancelled() -> None:
    cluster, s, clock = three()
    run, links = start_wait(s, clock, 2)
    clock.t += 2
    run.reply({links["s0"]: [TIMED_OUT]})
    rnd = run.now
    assert set(rnd.wait) == {links["s1"], links["s2"]}
    clock.t = rnd.until or 0
    run.reply({links["s1"]: [TIMED_OUT]})
    assert run.now.cancel == [links["s2"]]
    run.reply({links["s2"]: []})
    assert run.value() == TIMED_OUT
    assert links["s2"].closed and not links["s1"].closed
    assert cluster.metrics.wait_cancels == 1


def test_a_job_in_the_grace_wins() -> None:
    cluster, s, clock = three()
    run, links = start_wait(s, clock, 1)
    clock.t += 1
    run.reply({})
    run.reply({links["s1"]: [Reserved(4, b"late")]})
    # The others are read once and cancelled in one shell step.
    assert set(run.now.cancel) == {links["s0"], links["s2"]}
    run.reply({links["s0"]: [], links["s2"]: []})
    run.auto(s1=[job_stats(4, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 4), b"late")
    assert cluster.metrics.give_backs == 0


def test_a_fractional_timeout_rounds_the_shards_wait_up() -> None:
    _, s, clock = three()
    run, links = start_wait(s, clock, 0.5)
    clock.t += 0.5
    run.reply({})
    # The shards' waits (1 s) end after the grace: they are cancelled.
    assert set(run.now.cancel) == set(links.values())
    run.reply({link: [] for link in links.values()})
    assert run.value() == TIMED_OUT
    assert all(link.closed for link in links.values())


def test_a_reserve_right_after_an_idle_timeout_skips_the_choice() -> None:
    _, s, clock = three()
    run, links = start_wait(s, clock, 1)
    clock.t += 1
    run.reply({})
    run.reply({link: [TIMED_OUT] for link in links.values()})
    assert run.value() == TIMED_OUT
    run = Script(s.reserve(1))
    rnd: Round = run.now
    assert rnd.first  # straight to the wait
    assert run.data() == {n: [b"reserve-with-timeout 1"] for n in NAMES}


def test_a_failed_wait_is_rearmed_on_a_new_link() -> None:
    cluster, s, _ = three()
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    links = {n: send.link for n, send in run.sends().items()}
    run.reply({links["s0"]: Failure(FailureKind.STALE, "closed by the shard")})
    rnd = run.now
    (send,) = rnd.sends
    assert send.link.shard.name == "s0" and send.link is not links["s0"]
    assert commands(send.data) == [b"watch t0", b"ignore default", b"reserve"]
    assert set(rnd.wait) == {links["s1"], links["s2"]}
    assert cluster.shards["s0"].health.failures == 0


# ---- the proxy's exact single-shard wait ------------------------------------------------------


def exact_session_holding_one(ttr: int = 60) -> tuple[Cluster, Session, Clock, int, Link]:
    """A proxy session (``cancellable=False``) on t1 alone, holding one job on its main link."""
    cluster, s, clock = make(cancellable=False)
    watch_only(s, ["t1"])
    run = Script(s.reserve(None))
    assert run.data() == {"s1": [b"reserve"]}
    run.auto(s1=[Reserved(1, b"held")])
    # Handed out at once: the shard's own DEADLINE_SOON covers the job, its TTR is not read.
    assert run.value() == Reserved(gid("s1", 1), b"held")
    job = gid("s1", 1)
    assert s.held[job].ttr == 0 and s.held[job].since == clock.t
    return cluster, s, clock, job, s.held[job].link


def test_an_exact_wait_runs_on_the_link_holding_the_jobs() -> None:
    _, s, _, _, holder = exact_session_holding_one()
    run = Script(s.reserve(None))
    (send,) = run.now.sends
    assert send.link is holder and send.data == b"reserve\r\n"


def test_an_exact_wait_whose_timeout_is_late_is_not_cancelled() -> None:
    # Closing the link to cancel the wait would give the client's held jobs back: the shard's
    # own TIMED_OUT is waited for however late it is.
    cluster, s, clock, job, holder = exact_session_holding_one()
    run = Script(s.reserve(1))
    assert run.data() == {"s1": [b"reserve-with-timeout 1"]}
    clock.t += 1
    run.reply({})
    while not run.done and holder not in run.now.close:
        assert holder in run.now.wait
        clock.t = max(clock.t + 0.05, run.now.until or 0)  # the shard is slow to answer
        if clock.t > 1010:
            break
        run.reply({} if clock.t < 1003 else {holder: [TIMED_OUT]})
    assert not holder.closed and holder not in s.take_closes()
    assert run.value() == TIMED_OUT
    assert job in s.held and s.lost == {}
    assert cluster.metrics.wait_cancels == 0


def test_an_exact_reserve_0_whose_reply_is_late_is_read_not_cancelled() -> None:
    # A proxy client's reserve-with-timeout 0 on one shard holding nothing yet: closing the link
    # when the reply is late would give back a job the shard had just reserved (a phantom
    # reserve) and answer TIMED_OUT although a job was ready. The shard's answer is read.
    cluster, s, clock = make(cancellable=False)
    watch_only(s, ["t1"])
    run = Script(s.reserve(0))
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}
    assert run.now.first and run.now.until is None  # read until the shard answers
    (send,) = run.now.sends
    link = send.link
    for _ in range(10):  # the shard is slow: a shell that came back without the reply
        assert link not in run.now.close and not run.done
        clock.t += 0.2
        run.reply({})
        assert run.now.wait == [link] and run.now.until is None and not run.now.sends
    run.reply({link: [Reserved(7, b"late")]})
    assert run.value() == Reserved(gid("s1", 7), b"late")
    assert not link.closed and cluster.metrics.wait_cancels == 0


def test_an_exact_wait_gets_the_shards_own_deadline_soon() -> None:
    _, s, clock, job, holder = exact_session_holding_one(ttr=3)
    run = Script(s.reserve(None))
    assert run.now.sends[0].link is holder
    assert run.now.until is None  # the job's TTR is not known: only the shard can tell
    clock.t += 3 - SAFETY_MARGIN
    run.reply({})
    if not run.done:
        assert holder not in run.now.close and holder in run.now.wait
        run.reply({holder: [DEADLINE_SOON]})
    assert run.value() == DEADLINE_SOON
    assert not holder.closed and holder not in s.take_closes()
    assert job in s.held


# ---- lingering waits (Session.linger: the asyncio shells and the proxy) ---------------------


def lingering_three(linger: float = 0.05) -> tuple[Cluster, Session, Clock]:
    cluster, s, clock = three()
    s.linger = linger
    return cluster, s, clock


def first_wait(s: Session) -> tuple[Script, dict[str, Link]]:
    """A blocking reserve over three empty shards, s1 delivering: returns the links."""
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    links = {n: send.link for n, send in run.sends().items()}
    run.reply({links["s1"]: [Reserved(7, b"first")]})
    # Nothing is cancelled: the other waits stay armed for the next reserve.
    assert run.data() == {"s1": [b"stats-job 7"]}
    assert not run.now.cancel and not run.now.close
    run.auto(s1=[job_stats(7, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 7), b"first")
    return run, links


def test_other_waits_linger_after_a_delivery_and_are_reused() -> None:
    cluster, s, clock = lingering_three()
    _, links = first_wait(s)
    assert set(s.lingering) == {links["s0"], links["s2"]}
    assert s.next_timer() == clock.t + 0.05
    s.held.clear()  # (the job was deleted)
    run = Script(s.reserve(None))
    # First: what the lingering waits caught meanwhile, read without waiting.
    rnd = run.now
    assert rnd.first and rnd.until == -math.inf and set(rnd.wait) == {links["s0"], links["s2"]}
    run.reply({})
    # s0 and s2 need no look (a job ready there would have been given to their armed waits),
    # and s1 alone needs no choice: it is armed again at once (on a new link: the first holds
    # the job); s0 and s2 still wait from the previous reserve.
    assert list(run.data()) == ["s1"] and run.data()["s1"][-1] == b"reserve"
    assert set(run.now.wait) == {links["s0"], links["s2"]}
    run.reply({links["s2"]: [Reserved(9, b"next")]})
    assert run.data() == {"s2": [b"stats-job 9"]}
    run.auto(s2=[job_stats(9, "t2", 5, state="reserved")])
    assert run.value() == Reserved(gid("s2", 9), b"next")
    assert cluster.metrics.wait_cancels == 0 and cluster.metrics.give_backs == 0


def test_a_job_caught_by_a_lingering_wait_is_handed_out_next() -> None:
    cluster, s, clock = lingering_three()
    _, links = first_wait(s)
    run = Script(s.reserve(0))
    run.reply({links["s2"]: [Reserved(9, b"caught")]})
    assert run.data() == {"s2": [b"stats-job 9"]}
    run.auto(s2=[job_stats(9, "t2", 5, state="reserved", **{"time-left": 30})])
    # It competes with the shards' ready jobs (none) and wins: no shard reserve is sent.
    answer_sweep(run, {})
    assert run.value() == Reserved(gid("s2", 9), b"caught")
    assert s.held[gid("s2", 9)].deadline == clock.t + 30  # from time-left: reserved earlier
    assert (cluster.metrics.give_backs, cluster.metrics.prefetch_hits) == (0, 1)


def test_a_job_a_lingering_wait_catches_during_the_choice_is_handed_out() -> None:
    # A put lands while the next reserve(0) runs: the shard gives the job to the lingering wait,
    # so the choice sees nothing ready. The wait's answer is read before answering TIMED_OUT.
    cluster, s, _ = lingering_three()
    _, links = first_wait(s)
    s.held.clear()
    run = Script(s.reserve(0))
    assert run.now.until == -math.inf
    run.reply({})  # the lingering waits: nothing yet
    # s0 and s2 need no look (their waits are armed); s1 alone is asked, as reserve 0 would,
    # while the armed waits are read too.
    rnd = run.now
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}
    assert rnd.first and set(rnd.wait) == {links["s0"], links["s2"]}
    run.reply({links["s2"]: [Reserved(9, b"just put")]})
    run.auto(s2=[job_stats(9, "t2", 5, state="reserved")])
    assert run.value() == Reserved(gid("s2", 9), b"just put")
    assert cluster.metrics.give_backs == 0 and links["s0"] in s.lingering


def test_lingering_waits_are_cancelled_when_their_time_is_up() -> None:
    cluster, s, clock = lingering_three()
    _, links = first_wait(s)
    clock.t += 0.05
    run = Script(s.maintain())
    assert set(run.now.cancel) == {links["s0"], links["s2"]}
    run.reply({links["s0"]: [], links["s2"]: [Reserved(9, b"late")]})
    # A job caught meanwhile is kept for a reserve that may still come (PREFETCH_HOLD)...
    assert run.data() == {"s2": [b"stats-job 9"]}
    run.auto(s2=[job_stats(9, "t2", 5, state="reserved", **{"time-left": 30})])
    run.value()
    assert links["s0"].closed and not s.lingering and list(s.prefetched) == [gid("s2", 9)]
    assert s.next_timer() == clock.t + PREFETCH_HOLD
    # ... and given back (counted) when none did.
    clock.t += PREFETCH_HOLD
    run = Script(s.maintain())
    assert run.data() == {"s2": [b"release 9 5 0"]}
    run.auto(s2=[RELEASED])
    run.value()
    assert not s.prefetched
    assert (cluster.metrics.wait_cancels, cluster.metrics.give_backs) == (1, 1)


def test_lingering_waits_are_cancelled_when_the_watch_list_changed() -> None:
    cluster, s, _ = lingering_three()
    _, links = first_wait(s)
    s.held.clear()
    s.watching.append("other")
    s._wmap = None  # (what watch() does, without its own round)
    run = Script(s.reserve(0))
    assert set(run.now.cancel) == {links["s0"], links["s2"]}
    run.reply({links["s0"]: [], links["s2"]: []})
    assert links["s0"].closed and links["s2"].closed
    assert cluster.metrics.wait_cancels == 2


def test_equal_priority_and_age_go_in_put_order_across_shards() -> None:
    # greenstalk's own suite: two jobs into a tube on one shard, then one into a tube on another,
    # all in the same second: beanstalkd reserves them in put order (by id).
    cluster, s, _ = three()
    cluster.note_put(gid("s2", 5))  # put first
    cluster.note_put(gid("s0", 3))  # put second
    run = Script(s.reserve(0))
    answer_sweep(run, {"s0": Found(3, b"second"), "s2": Found(5, b"first")})
    run.auto(s0=[job_stats(3, "t0", 10)], s2=[job_stats(5, "t2", 10)])
    assert run.data() == {"s2": [b"reserve-with-timeout 0"]}


# ---- wake-up latency ----------------------------------------------------------------------------


def _woken(reserves: int = 1, releases: int = 0, put_before_wait: bool = False) -> Cluster:
    """A blocking reserve over three empty shards; a put this process made (acknowledged at
    1000.5, or before the wait with ``put_before_wait``) is delivered by s1 at 1000.8."""
    cluster, s, clock = three()
    observed: list[float] = []
    by_shard: list[tuple[str, float]] = []
    cluster.metrics.on_wakeup = observed.append
    cluster.metrics.on_shard_wakeup = lambda shard, seconds: by_shard.append((shard, seconds))
    if put_before_wait:
        clock.t = 999.0
        cluster.note_put(gid("s1", 7), 0)
        clock.t = 1000.0
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    links = {n: send.link for n, send in run.sends().items()}
    if not put_before_wait:
        clock.t = 1000.5
        cluster.note_put(gid("s1", 7), 0)
    clock.t = 1000.8
    run.reply({links["s1"]: [Reserved(7, b"job")]})
    run.reply({links["s0"]: [], links["s2"]: []})  # the cancel step
    stats = job_stats(7, "t1", 5, state="reserved", reserves=reserves, releases=releases)
    run.auto(s1=[stats])
    assert run.value() == Reserved(gid("s1", 7), b"job")
    m = cluster.metrics
    assert m.wakeups == len(observed) and sum(observed) == pytest.approx(m.wakeup_seconds)
    assert by_shard == [("s1", seconds) for seconds in observed]  # the shard that delivered
    return cluster


def test_a_blocked_reserve_counts_its_wake_up_latency_from_the_put() -> None:
    m = _woken().metrics
    assert m.wakeups == 1 and m.wakeup_seconds == pytest.approx(0.3)


def test_a_job_ready_before_the_wait_or_not_fresh_is_no_wake_up() -> None:
    assert _woken(put_before_wait=True).metrics.wakeups == 0
    assert _woken(reserves=2, releases=1).metrics.wakeups == 0


def test_a_job_handed_out_before_its_put_is_acknowledged_is_a_wake_up_of_latency_0() -> None:
    # The shard answered the waiting reserve before this process read the put's INSERTED (two
    # links, either order): the wake-up is counted when the acknowledgement is read.
    cluster, s, clock = three()
    observed: list[tuple[str, float]] = []
    cluster.metrics.on_shard_wakeup = lambda shard, seconds: observed.append((shard, seconds))
    run = Script(s.reserve(None))
    answer_sweep(run, {})
    links = {n: send.link for n, send in run.sends().items()}
    clock.t = 1000.8
    run.reply({links["s1"]: [Reserved(7, b"job")]})
    run.reply({links["s0"]: [], links["s2"]: []})  # the cancel step
    run.auto(s1=[job_stats(7, "t1", 5, state="reserved", reserves=1)])
    assert run.value() == Reserved(gid("s1", 7), b"job")
    assert cluster.metrics.wakeups == 0 and cluster.early == {gid("s1", 7): "s1"}
    cluster.note_put(gid("s1", 7), 0)
    assert cluster.metrics.wakeups == 1 and observed == [("s1", 0.0)]
    assert not cluster.early and gid("s1", 7) not in cluster.put_acked


# ---- the choice's cheaper rounds: peeks ahead, priorities known from puts ---------------------


def test_a_known_priority_the_urgent_count_contradicts_is_read_again() -> None:
    cluster, s, clock = three()
    cluster.note_put(gid("s0", 3), 0, 10)
    clock.t += 5  # s0's job is older, s1's more urgent
    cluster.note_put(gid("s1", 4), 0, 5)
    run = Script(s.reserve(0))
    # The scripted stats-tube says current-jobs-urgent 0, and both priorities are < 1024: the
    # priorities may have changed since (another process's release), so they are read.
    answer_sweep(run, {"s0": Found(3, b"a"), "s1": Found(4, b"b")})
    assert run.data() == {"s0": [b"stats-job 3"], "s1": [b"stats-job 4"]}


def test_urgent_known_priorities_consistent_with_the_urgent_count_are_ranked_from_the_puts() -> (
    None
):
    cluster, s, clock = three()
    cluster.note_put(gid("s0", 3), 0, 10)
    clock.t += 5
    cluster.note_put(gid("s1", 4), 0, 5)
    run = Script(s.reserve(0))
    urgent = {"current_jobs_ready": 1, "current_jobs_urgent": 1, "pause": 0}
    run.auto(
        s0=[shard_stats(name="t0", **urgent)],
        s1=[shard_stats(name="t1", **urgent)],
        s2=[tube_stats("t2", ready=0)],
    )
    run.auto(s0=[Found(3, b"a")], s1=[Found(4, b"b")])
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}  # priority 5 wins, no stats-job


def test_a_known_priority_consistent_with_the_urgent_count_needs_no_stats_job() -> None:
    cluster, s, _ = three()
    cluster.note_put(gid("s0", 3), 0, 2000)
    cluster.note_put(gid("s1", 4), 0, 1500)
    run = Script(s.reserve(0))
    assert run.data() == {n: [b"stats-tube " + TUBE_ON[n].encode()] for n in NAMES}
    run.auto(
        s0=[tube_stats(TUBE_ON["s0"], ready=1)],
        s1=[tube_stats(TUBE_ON["s1"], ready=1)],
        s2=[tube_stats(TUBE_ON["s2"], ready=0)],
    )
    assert run.data() == {n: sweep_lines(TUBE_ON[n]) for n in ("s0", "s1")}
    run.auto(s0=[Found(3, b"a")], s1=[Found(4, b"b")])
    # Both ranked from their puts (priority 1500 wins), no stats-job round.
    assert run.data() == {"s1": [b"reserve-with-timeout 0"]}
    assert s.peek_ahead  # a backlog on two shards: the next choice peeks in its first round


def test_a_choice_after_a_backlog_peeks_in_its_first_round_and_stops_when_it_is_gone() -> None:
    cluster, s, _ = three()
    s.peek_ahead = True
    cluster.note_put(gid("s0", 3), 0, 2000)
    cluster.note_put(gid("s2", 5), 0, 2000)
    run = Script(s.reserve(0))
    lines = run.data()
    assert lines == {n: [b"stats-tube " + TUBE_ON[n].encode(), *sweep_lines(TUBE_ON[n])]
                     for n in NAMES}  # fmt: skip
    run.auto(
        s0=[tube_stats(TUBE_ON["s0"], ready=1), Found(3, b"a")],
        s1=[tube_stats(TUBE_ON["s1"], ready=0), NOT_FOUND],
        s2=[tube_stats(TUBE_ON["s2"], ready=1), Found(5, b"c")],
    )
    # One round for the whole choice: equal priorities, s0's put first.
    assert run.data() == {"s0": [b"reserve-with-timeout 0"]}
    run.auto(s0=[Reserved(3, b"a")])
    run.auto(s0=[job_stats(3, "t0", 2000, state="reserved")])
    assert run.value() == Reserved(gid("s0", 3), b"a")
    assert s.peek_ahead
    s.held.clear()
    run = Script(s.reserve(0))
    run.auto(
        s0=[tube_stats(TUBE_ON["s0"], ready=0), NOT_FOUND],
        s1=[tube_stats(TUBE_ON["s1"], ready=0), NOT_FOUND],
        s2=[tube_stats(TUBE_ON["s2"], ready=1), Found(5, b"c")],
    )
    assert not s.peek_ahead  # one shard with ready jobs: no backlog to peek ahead for


def test_a_release_or_bury_forgets_what_the_put_said() -> None:
    cluster, s, _ = three()
    cluster.note_put(gid("s0", 3), 0, 7)
    assert gid("s0", 3) in cluster.put_meta
    s._unhold(gid("s0", 3))
    assert gid("s0", 3) not in cluster.put_meta
