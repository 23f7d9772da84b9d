"""The routing core's cross-shard reserve (``beanrouter.core.reserve``) with scripted replies.

Each test drives ``Session.reserve`` round by round (``core_script``): the choice (``stats-tube``
+ ``peek-ready`` per watched tube, ``stats-job`` of the candidates, ``reserve-with-timeout 0`` on
the winner only), the blocking wait and its race, prefetched jobs, DEADLINE_SOON and timeouts.
"""

from __future__ import annotations

import math

import pytest

from beanrouter.core import Cluster, Failure, FailureKind, Link, Round, Session
from beanrouter.core.reserve import PREFETCH_HOLD, SAFETY_MARGIN
from beanrouter.protocol import (
    DEADLINE_SOON,
    NOT_FOUND,
    RELEASED,
    TIMED_OUT,
    Found,
    Reply,
    Reserved,
)
from beanrouter.router import ids
from beanrouter.router.errors import ShardUnavailable

from .core_script import (
    NAMES,
    TUBE_ON,
    Clock,
    Script,
    auto,
    commands,
    job_stats,
    make,
    tube_stats,
    watch_only,
)

SID = {"s0": 0, "s1": 1, "s2": 2}


def gid(shard: str, local: int) -> int:
    return ids.encode(SID[shard], local)


def three() -> tuple[Cluster, Session, Clock]:
    """A session watching t0, t1, t2: one tube on each shard."""
    cluster, s, clock = make()
    watch_only(s, [TUBE_ON[n] for n in NAMES])
    return cluster, s, clock


def sweep_lines(tube: str) -> list[bytes]:
    t = tube.encode()
    return [b"stats-tube " + t, b"use " + t, b"peek-ready", b"use default"]


def answer_sweep(
    run: Script, ready: dict[str, Reply], paused: dict[str, int] | None = None
) -> None:
    """Answer a choice round: ``ready`` is each shard's ``peek-ready`` reply (default
    NOT_FOUND); ``paused`` its tube's ``pause-time-left``."""
    assert not run.now.first
    assert run.data() == {n: sweep_lines(TUBE_ON[n]) for n in run.sends()}
    paused = paused or {}
    run.auto(
        **{
            n: [tube_stats(TUBE_ON[n], paused.get(n, 0)), ready.get(n, NOT_FOUND)]
            for n in run.sends()
        }
    )


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
    assert len(run.rounds) == 3  # no stats-job after the reserve: the choice read it


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


# ---- the blocking wait ------------------------------------------------------------------------


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
    # One non-blocking read of the other waits collects what raced in.
    rnd = run.now
    assert rnd.first and rnd.until == -math.inf and rnd.sends == []
    assert set(rnd.wait) == {links["s0"], links["s2"]}
    run.reply({links["s2"]: [Reserved(9, b"raced")]})
    # s0's wait is cancelled by closing its link, before anything else is sent.
    assert run.now.close == [links["s0"]]
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
    run = Script(s.reserve(0))
    sends = run.sends()
    assert sends["s2"].link is holder
    out: dict[Link, list[Reply] | Failure] = {
        sends[n].link: auto(sends[n], tube_stats(TUBE_ON[n]), NOT_FOUND) for n in ("s0", "s1")
    }
    out[holder] = Failure(FailureKind.LOST, "reset")
    run.reply(out)
    assert run.value() == TIMED_OUT
    assert s.prefetched == {} and cluster.metrics.give_backs == 1


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
    assert run.value() == DEADLINE_SOON
    closing = s.take_closes()
    assert set(closing) == set(waits)
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
    assert rnd.first and rnd.sends == [] and set(rnd.wait) == set(links.values())
    assert clock.t < (rnd.until or 0) <= clock.t + 0.1
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
    assert run.value() == TIMED_OUT
    assert s.take_closes() == [links["s2"]]
    assert cluster.metrics.wait_cancels == 1


def test_a_job_in_the_grace_wins() -> None:
    cluster, s, clock = three()
    run, links = start_wait(s, clock, 1)
    clock.t += 1
    run.reply({})
    run.reply({links["s1"]: [Reserved(4, b"late")]})
    assert run.now.until == -math.inf  # the others are read once, then cancelled
    run.reply({})
    assert set(run.now.close) == {links["s0"], links["s2"]}
    run.auto(s1=[job_stats(4, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 4), b"late")
    assert cluster.metrics.give_backs == 0


def test_a_fractional_timeout_rounds_the_shards_wait_up() -> None:
    _, s, clock = three()
    run, links = start_wait(s, clock, 0.5)
    clock.t += 0.5
    run.reply({})
    # The shards' waits (1 s) end after the grace: they are cancelled.
    assert run.value() == TIMED_OUT
    assert set(s.take_closes()) == set(links.values())


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
    run.auto(s1=[job_stats(1, "t1", 5, ttr=ttr, state="reserved")])
    assert run.value() == Reserved(gid("s1", 1), b"held")
    job = gid("s1", 1)
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
    (send,) = run.now.sends
    link = send.link
    for _ in range(10):  # the shard is slow: no reply within the grace
        assert link not in run.now.close and not run.done
        clock.t += 0.2
        run.reply({})
    assert link in run.now.wait and link not in run.now.close
    run.reply({link: [Reserved(7, b"late")]})
    run.auto(s1=[job_stats(7, "t1", 5, state="reserved")])
    assert run.value() == Reserved(gid("s1", 7), b"late")
    assert not link.closed and cluster.metrics.wait_cancels == 0


def test_an_exact_wait_gets_the_shards_own_deadline_soon() -> None:
    _, s, clock, job, holder = exact_session_holding_one(ttr=3)
    run = Script(s.reserve(None))
    assert run.now.sends[0].link is holder
    clock.t = s.held[job].deadline - SAFETY_MARGIN  # the core's estimate of the margin
    run.reply({})
    if not run.done:
        assert holder not in run.now.close and holder in run.now.wait
        run.reply({holder: [DEADLINE_SOON]})
    assert run.value() == DEADLINE_SOON
    assert not holder.closed and holder not in s.take_closes()
    assert job in s.held
