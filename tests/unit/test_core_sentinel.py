"""The sentinels (``core/sentinel.py``) and the coverage they give (``Cluster``, ``Session``),
scripted: no servers."""

from __future__ import annotations

from beanrouter.core import Cluster, Session, ids
from beanrouter.core.reserve import reserve
from beanrouter.core.sentinel import sentinel
from beanrouter.protocol import TIMED_OUT, Reserved, Watching, Word

from .core_script import Script, auto, job_stats, make, tube_stats, watch_only

TUBE = "jobs"


def setup() -> tuple[Cluster, Session, str, str, list[tuple[str, ...]]]:
    """A proxy cluster of 3 shards (failover 1) running sentinels, a proxy session watching
    ``TUBE`` alone; returns the tube's owner and its successor, and the hooks' calls."""
    cluster, s, _ = make(3, failover=1, cancellable=False)
    cluster.sentinels = True
    calls: list[tuple[str, ...]] = []
    cluster.on_wanted = lambda shard: calls.append(("wanted", shard))
    cluster.on_uncovered = lambda shard, tube: calls.append(("uncovered", shard, tube))
    watch_only(s, [TUBE])
    owner, successor = cluster.preference(TUBE)
    return cluster, s, owner, successor, calls


def arm(cluster: Cluster, shard: str) -> Script:
    """Start the sentinel of ``shard`` and answer its watches: its reserve is armed."""
    own = Session(cluster, linger=0.0, counted=False)
    run = Script(sentinel(own, cluster.shards[shard]))
    rnd = run.now
    assert rnd.first and rnd.partial
    (send,) = rnd.sends
    assert send.data == f"watch {TUBE}\r\nignore default\r\nreserve\r\n".encode()
    run.reply({send.link: [Watching(2), Watching(1)]})
    return run


def test_watchers_are_counted_and_the_sentinel_wants_the_away_shards_only() -> None:
    cluster, s, owner, successor, calls = setup()
    assert cluster.watchers == {TUBE: 1}  # ``default`` ignored
    assert ("wanted", successor) in calls
    assert cluster.wanted(successor) == {TUBE}
    assert cluster.wanted(owner) == frozenset()
    s.close()
    assert cluster.watchers == {}
    assert cluster.wanted(successor) == frozenset()


def test_an_armed_sentinel_covers_its_shard_and_sessions_leave_it_out() -> None:
    cluster, s, owner, successor, _ = setup()
    assert set(s.watch_map()) == {owner, successor} and not s.partial
    run = arm(cluster, successor)
    assert cluster.covered[successor] == {TUBE}
    assert run.now.first and run.now.wait and not run.now.sends  # the reserve waits
    assert list(s.watch_map()) == [owner] and s.partial
    # The owner marked down: the successor takes the puts, and sessions look there again.
    for _ in range(cluster.config.server_failure_limit):
        cluster.note_failure(cluster.shards[owner], "test")
    assert successor in s.watch_map()


def test_a_caught_job_is_given_back_with_its_priority_and_the_pair_becomes_a_stray() -> None:
    cluster, s, _, successor, calls = setup()
    run = arm(cluster, successor)
    (link,) = run.now.wait
    run.reply({link: [Reserved(5, b"x")]})
    assert run.data() == {successor: [b"stats-job 5"]}
    assert cluster.covered[successor] == {TUBE}  # still: the job is not ready until released
    run.auto(**{successor: [job_stats(5, TUBE, 7, state="reserved")]})
    assert run.data() == {successor: [b"release 5 7 0"]}
    run.auto(**{successor: [Word("RELEASED")]})
    gid = ids.encode(cluster.shards[successor].id, 5)
    assert cluster.unseen.get(gid) == (1, 1, 0)  # kept off the job's stats-job
    assert cluster.strays == {(successor, TUBE)}
    assert cluster.covered[successor] == frozenset()
    assert ("uncovered", successor, TUBE) in calls
    assert cluster.metrics.strays_found == 1
    assert set(s.watch_map()) == set(cluster.preference(TUBE)) and not s.partial
    # Nothing else to cover there: the link is closed (its watches would keep the tube
    # alive on the shard) and the sentinel waits for what is wanted to change.
    rnd = run.now
    assert rnd.first and not rnd.sends and not rnd.wait and rnd.until is None
    assert list(rnd.close) == [link]
    # A reserve that sees no ready job of the pair makes it coverable again.
    calls.clear()
    cluster.saw_empty(successor, TUBE)
    assert cluster.strays == set() and calls == [("wanted", successor)]
    run.reply({})
    (send,) = run.now.sends
    assert send.data == f"watch {TUBE}\r\nignore default\r\nreserve\r\n".encode()


def test_what_is_wanted_changing_cancels_the_armed_reserve_after_uncovering() -> None:
    cluster, s, _, successor, calls = setup()
    run = arm(cluster, successor)
    (link,) = run.now.wait
    s.close()  # the last watcher of the tube is gone
    run.reply({})  # the shell's nudge ends the wait round early
    assert cluster.covered[successor] == frozenset()
    assert ("uncovered", successor, TUBE) in calls
    assert list(run.now.cancel) == [link]
    run.reply({link: []})  # half-closed: the shell reads its last answer
    rnd = run.now
    assert rnd.first and not rnd.sends and not rnd.wait and rnd.until is None
    assert link.closed


def test_a_job_caught_as_the_reserve_is_cancelled_is_counted_unseen() -> None:
    cluster, s, _, successor, _ = setup()
    run = arm(cluster, successor)
    (link,) = run.now.wait
    s.close()
    run.reply({})
    run.reply({link: [Reserved(9, b"x")]})
    assert cluster.unseen.get(ids.encode(cluster.shards[successor].id, 9)) == (1, 0, 0)


def test_a_failed_link_uncovers_and_the_sentinel_tries_again_later() -> None:
    from beanrouter.core import Failure, FailureKind

    cluster, _, _, successor, _ = setup()
    run = arm(cluster, successor)
    (link,) = run.now.wait
    run.reply({link: Failure(FailureKind.LOST, "gone")})
    assert cluster.covered[successor] == frozenset()
    (send,) = run.now.sends  # (the shard is not marked down by one failure): again at once
    assert send.link is not link
    run.reply({send.link: Failure(FailureKind.CONNECT, "refused")})
    rnd = run.now
    assert rnd.first and not rnd.sends and rnd.until is not None and rnd.until > cluster.clock()


def test_a_reserve_waits_on_the_owner_alone_and_looks_again_when_a_stray_is_found() -> None:
    cluster, s, owner, successor, _ = setup()
    sentinel_run = arm(cluster, successor)
    run = Script(reserve(s, 5))
    # One shard: no choice; the wait runs beside the main link (it may have to be cancelled).
    (send,) = run.now.sends
    assert send.link.shard.name == owner and send.data.endswith(b"reserve-with-timeout 5\r\n")
    assert s.nudgeable
    wait_link = send.link
    # The sentinel catches a job on the successor and gives it back: the pair is a stray.
    (slink,) = sentinel_run.now.wait
    sentinel_run.reply({slink: [Reserved(5, b"x")]})
    sentinel_run.auto(**{successor: [job_stats(5, TUBE, 1024, state="reserved")]})
    sentinel_run.auto(**{successor: [Word("RELEASED")]})
    # The shell's nudge ends the session's wait round: its wait is cancelled, it looks again.
    run.reply({wait_link: []})
    assert list(run.now.cancel) == [wait_link]
    run.reply({wait_link: []})
    assert not s.nudgeable
    assert {n: [c.split()[0] for c in cmds] for n, cmds in run.data().items()} == {
        owner: [b"stats-tube"],
        successor: [b"stats-tube"],
    }
    run.auto(**{owner: [tube_stats(TUBE, ready=0)], successor: [tube_stats(TUBE, ready=1)]})
    assert run.data() == {successor: [b"reserve-with-timeout 0"]}
    run.auto(**{successor: [Reserved(5, b"x")]})
    # Handed out at once: the proxy reads a held job's TTR only when it needs it.
    assert run.value() == Reserved(ids.encode(cluster.shards[successor].id, 5), b"x")
    # The owner was seen empty, the stray pair not yet: it stays a stray.
    assert cluster.strays == {(successor, TUBE)}


def test_a_library_wait_on_an_away_shard_lingers_and_spares_the_next_reserve_its_look() -> None:
    """The library has no sentinels: its own wait on the away shard stays armed
    (``AWAY_LINGER``), so a worker of one tube looks at the owner alone from its second
    reserve on, and cancels nothing."""
    from beanrouter.core.reserve import AWAY_LINGER, LINGER

    cluster, s, clock = make(3, failover=1)  # a library session
    s.linger = LINGER
    watch_only(s, [TUBE])
    owner, successor = cluster.preference(TUBE)
    run = Script(reserve(s, None))
    assert set(run.sends()) == {owner, successor}  # the first reserve looks at both
    run.auto(**{owner: [tube_stats(TUBE, ready=0)], successor: [tube_stats(TUBE, ready=0)]})
    sends = run.sends()
    waits = {n: send.link for n, send in sends.items()}
    assert set(waits) == {owner, successor}
    successor_replies = auto(sends[successor], TIMED_OUT)[:-1]  # its watches, not its reserve
    run.reply({waits[owner]: auto(sends[owner], Reserved(7, b"job")),
               waits[successor]: successor_replies})  # fmt: skip
    run.auto(**{owner: [job_stats(7, TUBE, 5, state="reserved")]})
    assert run.value() == Reserved(ids.encode(cluster.shards[owner].id, 7), b"job")
    assert list(s.lingering) == [waits[successor]]
    assert s.next_timer() == clock.t + AWAY_LINGER
    clock.t += LINGER * 2
    maintain = Script(s.maintain())  # nothing due yet: the away wait stays armed
    assert maintain.done and list(s.lingering) == [waits[successor]]
    s.held.clear()  # (the job was deleted)
    run = Script(reserve(s, None))
    run.reply({})  # the look at what the lingering wait caught: nothing
    # No choice (the owner alone needs a look, and a wait does it): the owner's wait only.
    assert list(run.sends()) == [owner] and run.data()[owner][-1] == b"reserve"
    assert set(run.now.wait) == {waits[successor]}
    assert cluster.metrics.wait_cancels == 0


def test_a_tube_whose_owner_is_down_is_not_covered_and_comes_back_when_it_is_up() -> None:
    cluster, _, owner, successor, calls = setup()
    assert cluster.wanted(successor) == {TUBE}
    calls.clear()
    for _ in range(cluster.config.server_failure_limit):
        cluster.note_failure(cluster.shards[owner], "test")
    # Its puts go to the successor now, where sessions look themselves: the sentinel lets go.
    assert cluster.wanted(successor) == frozenset()
    assert ("wanted", successor) in calls
    calls.clear()
    cluster.probed(cluster.shards[owner])
    assert cluster.wanted(successor) == {TUBE}
    assert ("wanted", successor) in calls
