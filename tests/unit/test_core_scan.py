"""The scan for jobs away from their tube's placed shards (``core/scan.py``, ``Cluster``),
scripted: no servers."""

from __future__ import annotations

from beanrouter.core import Cluster
from beanrouter.core.reserve import reserve
from beanrouter.core.scan import jobs_in, scan
from beanrouter.core.sentinel import sentinel
from beanrouter.core.session import Session
from beanrouter.protocol import NOT_FOUND, Ok, Reply, Watching, format_list

from .core_script import Script, make, shard_stats, watch_only
from .core_script import commands as lines

TUBE = "jobs"


def fresh(n: int = 3, failover: int = 1) -> tuple[Cluster, Session]:
    """A cluster whose sessions scan (``make`` turns scanning off for the other tests)."""
    cluster, s, _ = make(n, failover=failover)
    cluster.scanner = cluster.scanned = False
    return cluster, s


def stranger(cluster: Cluster, tube: str = TUBE) -> str:
    """A shard that no placement gives ``tube``."""
    return next(n for n in cluster.shards if n not in cluster.placed(tube))


def tube_jobs(ready: int = 0, delayed: int = 0, buried: int = 0, reserved: int = 0) -> Ok:
    return shard_stats(
        name=TUBE,
        current_jobs_urgent=0,
        current_jobs_ready=ready,
        current_jobs_reserved=reserved,
        current_jobs_delayed=delayed,
        current_jobs_buried=buried,
        total_jobs=9,
    )


def run_scan(
    cluster: Cluster, s: Session, listed: dict[str, list[str]], counts: dict[str, list[Reply]]
) -> Script:
    """Run a scan: each shard lists ``listed[name]``; ``counts[name]`` answers its stats-tubes."""
    run = Script(scan(s))
    assert set(run.data()) == set(cluster.shards)
    assert all(cmds == [b"list-tubes"] for cmds in run.data().values())
    run.answer({n: [Ok(format_list(listed.get(n, ["default"])))] for n in cluster.shards})
    while not run.done:
        run.answer({n: counts.get(n) or [tube_jobs()] * len(c) for n, c in run.data().items()})
    return run


def test_jobs_in_counts_every_state() -> None:
    assert jobs_in(tube_jobs(ready=1, delayed=2, buried=3, reserved=4).body) == 10
    assert jobs_in(tube_jobs().body) == 0


def test_a_tube_with_jobs_on_a_shard_placed_for_it_by_nothing_makes_that_shard_a_consumer() -> None:
    cluster, s = fresh()
    far = stranger(cluster)
    assert cluster.scan_due()
    run = Script(scan(s))
    listed = {n: ["default", TUBE] for n in cluster.shards}
    run.answer({n: [Ok(format_list(t))] for n, t in listed.items()})
    # Only the shard no placement gives the tube is asked about it (``default`` is placed on
    # one shard and failover on another: the third is asked about it too).
    assert {n: cmds for n, cmds in run.data().items()} == {
        n: [f"stats-tube {t}".encode() for t in cluster.scan_candidates(n, listed[n])]
        for n in cluster.shards
        if cluster.scan_candidates(n, listed[n])
    }
    assert f"stats-tube {TUBE}".encode() in run.data()[far]
    gen = cluster.generation
    answers = {
        n: [
            tube_jobs(delayed=2, buried=1) if c.endswith(TUBE.encode()) else tube_jobs()
            for c in cmds
        ]
        for n, cmds in run.data().items()
    }
    run.answer(answers)
    assert run.done and run.value() is None
    assert cluster.found == {far: {TUBE: 3}}
    assert cluster.consumer_shards(TUBE) == (*cluster.placed(TUBE), far)
    assert cluster.generation > gen
    assert not cluster.scan_due() and cluster.metrics.scans == 1


def test_a_later_scan_that_sees_none_drops_the_shard_again() -> None:
    cluster, s = fresh()
    far = stranger(cluster)
    run_scan(cluster, s, {far: [TUBE]}, {far: [tube_jobs(ready=4)]})
    assert far in cluster.consumer_shards(TUBE)
    run_scan(cluster, s, {far: [TUBE]}, {far: [tube_jobs()]})
    assert cluster.found == {} and far not in cluster.consumer_shards(TUBE)
    run_scan(cluster, s, {far: [TUBE]}, {far: [tube_jobs(reserved=1)]})  # held: still there
    assert far in cluster.consumer_shards(TUBE)
    run_scan(cluster, s, {far: ["default"]}, {})  # the tube is gone from the shard
    assert cluster.found == {}
    run_scan(cluster, s, {far: [TUBE]}, {far: [NOT_FOUND]})  # (gone between the two commands)
    assert cluster.found == {}


def test_a_shard_that_fails_keeps_what_was_found_there() -> None:
    from beanrouter.core.rounds import Failure, FailureKind

    cluster, s = fresh()
    far = stranger(cluster)
    run_scan(cluster, s, {far: [TUBE]}, {far: [tube_jobs(ready=4)]})
    run = Script(scan(s))
    down = Failure(FailureKind.CONNECT, "refused")
    run.answer({n: down if n == far else [Ok(format_list(["default"]))] for n in cluster.shards})
    while not run.done:
        run.answer({n: [tube_jobs()] * len(cmds) for n, cmds in run.data().items()})
    assert cluster.found == {far: {TUBE: 4}}


def test_a_sessions_first_reserve_scans_and_then_looks_at_the_shard_found() -> None:
    cluster, s = fresh()
    far = stranger(cluster)
    watch = Script(s.watch(TUBE))
    while not watch.done:
        watch.auto()
    run = Script(reserve(s, 0))
    assert all(lines(send.data) == [b"list-tubes"] for send in run.now.sends)
    run.answer({n: [Ok(format_list([TUBE] if n == far else ["default"]))] for n in cluster.shards})
    assert run.data()[far] == [f"stats-tube {TUBE}".encode()]
    run.answer({n: [tube_jobs(ready=n == far)] for n in run.data()})
    # The reserve looks at the tube's placed shards and at the one found.
    assert set(run.data()) == {*cluster.placed(TUBE), far}
    assert not cluster.scan_due()


def test_the_library_scans_again_once_due_and_the_proxy_never_inline() -> None:
    cluster, s = fresh()
    run_scan(cluster, s, {}, {})
    assert not cluster.scan_due()
    clock = cluster.clock
    clock.t += cluster.config.stray_scan_interval  # type: ignore[attr-defined]
    assert cluster.scan_due()
    cluster.scanner = True  # the proxy's background scan
    assert not cluster.scan_due()
    cluster.scanned = False  # ... except before its first scan has ended
    assert cluster.scan_due()


def test_a_shard_coming_back_and_a_reload_make_a_scan_due_at_once() -> None:
    cluster, s = fresh()
    run_scan(cluster, s, {}, {})
    due: list[int] = []
    cluster.on_scan_due = lambda: due.append(1)
    shard = next(iter(cluster.shards.values()))
    for _ in range(cluster.config.server_failure_limit):
        cluster.note_failure(shard, "test")
    assert not due
    cluster.note_success(shard)
    assert due == [1] and cluster.scan_due()
    run_scan(cluster, s, {}, {})
    cluster.reconfigure(cluster.config)
    assert due == [1, 1] and cluster.scan_due()


def test_a_tube_found_wakes_its_waiting_sessions_and_the_sentinel_covers_it() -> None:
    cluster, s = fresh()
    cluster.sentinels = True
    calls: list[tuple[str, ...]] = []
    cluster.on_wanted = lambda shard: calls.append(("wanted", shard))
    cluster.on_uncovered = lambda shard, tube: calls.append(("uncovered", shard, tube))
    watch_only(s, [TUBE])
    far = stranger(cluster)
    assert cluster.wanted(far) == frozenset()
    calls.clear()
    run_scan(cluster, Session(cluster, counted=False), {far: [TUBE]}, {far: [tube_jobs(ready=1)]})
    assert ("uncovered", far, TUBE) in calls and ("wanted", far) in calls
    assert cluster.wanted(far) == {TUBE}
    own = Session(cluster, linger=0.0, counted=False)
    arm = Script(sentinel(own, cluster.shards[far]))
    (send,) = arm.now.sends
    assert lines(send.data) == [f"watch {TUBE}".encode(), b"ignore default", b"reserve"]
    arm.reply({send.link: [Watching(2), Watching(1)]})
    assert cluster.covered[far] == {TUBE}


def test_a_reserve_waiting_when_a_tube_is_found_looks_again_with_that_shard() -> None:
    cluster, s = fresh(failover=0)
    cluster.sentinels = True
    watch_only(s, [TUBE])
    run_scan(cluster, Session(cluster, counted=False), {}, {})
    far = stranger(cluster)
    run = Script(reserve(s, 10))
    (owner,) = cluster.placed(TUBE)
    assert set(run.data()) == {owner}
    (send,) = run.now.sends
    assert lines(send.data)[-1] == b"reserve-with-timeout 10"
    run.reply({send.link: [Watching(2), Watching(1)]})  # the watches answered; the wait is out
    assert run.now.wait and not run.now.sends
    run_scan(cluster, Session(cluster, counted=False), {far: [TUBE]}, {far: [tube_jobs(ready=1)]})
    run.reply({})  # the shell ends the wait round (the nudge): the wait is cancelled
    assert run.now.cancel == [send.link]
    run.reply({})
    assert not run.done and send.link.closed
    assert far in run.data()  # it looks again, there too


def test_a_draining_shard_takes_no_puts_and_its_tubes_consumers_still_look_there() -> None:
    from beanrouter.router.config import config_from_servers

    lines = [f"127.0.0.1:{11300 + i} s{i} id={i}" for i in range(3)]
    full = Cluster(config_from_servers(lines, failover=1))
    tube = next(t for t in (f"t{i}" for i in range(1000)) if full.owner(t) == "s1")
    drained = Cluster(config_from_servers([*lines[:1], lines[1] + " drain=true", lines[2]]))
    assert "s1" not in drained.preference(tube)
    target = drained.put_target(tube)
    assert target is not None and target.name != "s1"
    assert "s1" in drained.placed(tube) and "s1" in drained.consumer_shards(tube)
    assert drained.scan_candidates("s1", [tube]) == []  # (not away: placed there)


def test_route_says_which_owner_a_reload_moved_a_tube_from_and_where_jobs_sit_away() -> None:
    from beanrouter.proxy.backend import CoreBackend
    from beanrouter.router.config import config_from_servers

    lines = [f"127.0.0.1:{11300 + i} s{i} id={i}" for i in range(4)]
    backend = CoreBackend(config_from_servers(lines[:3]))
    cluster = backend.cluster
    tubes = [f"t{i}" for i in range(200)]
    before = {t: cluster.owner(t) for t in tubes}
    assert all(backend.route(t)["moved_by_reload"] is None for t in tubes)
    cluster.reconfigure(config_from_servers(lines))
    moved = [t for t in tubes if cluster.owner(t) != before[t]]
    assert moved and all(cluster.owner(t) == "s3" for t in moved)
    for t in tubes:
        assert backend.route(t)["moved_by_reload"] == (before[t] if t in moved else None)
    cluster.note_scan("s3", {moved[0]: 0})
    far = next(n for n in cluster.shards if n not in cluster.placed(moved[0]))
    cluster.note_scan(far, {moved[0]: 5})
    assert backend.route(moved[0])["jobs_away"] == {far: 5}
