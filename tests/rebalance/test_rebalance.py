"""``beanrouter rebalance`` against real shards (beanstalkd and the bundled server): jobs keep
their state, priority, TTR, body and remaining delay; reserved jobs are left and reported;
``--drain``, ``--dry-run``, ``--json`` and the exit statuses."""

from __future__ import annotations

import signal
import time

import greenstalk

from beanrouter.core.ring import Placement
from tests.ports import free_port

from .conftest import Env


def setup_away_jobs(cluster: Env, tube: str, on: str) -> dict[bytes, tuple[str, int, int]]:
    """Ready, delayed and buried jobs of ``tube`` on shard ``on``: body -> (state, pri, ttr)."""
    expected: dict[bytes, tuple[str, int, int]] = {}
    with cluster.client(on, tube) as c:
        for i, (pri, ttr) in enumerate([(10, 60), (0, 1), (2**32 - 1, 300)]):
            body = b"ready-%d" % i
            c.put(body, priority=pri, ttr=ttr)
            expected[body] = ("ready", pri, ttr)
        for i, delay in enumerate((30, 90)):
            body = b"delayed-%d \x00\xff\r\n" % i
            c.put(body, priority=5 + i, delay=delay, ttr=7)
            expected[body] = ("delayed", 5 + i, 7)
        for i in range(2):
            body = b"buried-%d" % i
            job = c.reserve_job(c.put(body, priority=1000, ttr=9))
            c.bury(job, priority=77 + i)
            expected[body] = ("buried", 77 + i, 9)
    return expected


def test_moves_every_state_and_leaves_reserved(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    expected = setup_away_jobs(cluster, tube, "s1")
    holder = cluster.client("s1", tube)
    held = holder.reserve_job(holder.put(b"held", priority=3, ttr=120))
    assert held.body == b"held"
    config = str(cluster.config())
    try:
        code, report = cluster.run_json("--config", config)
        assert code == 1, report
        assert report["moved_total"] == len(expected)
        assert report["left"] == [
            {"shard": "s1", "tube": tube, "jobs": 1, "reasons": {"reserved": 1}}
        ]
        assert report["moves"][0]["states"] == {"buried": 2, "delayed": 2, "ready": 3}
        assert report["by_shard"] == {"s0": {"in": 7, "out": 0}, "s1": {"in": 0, "out": 7}}
        moved = {j.body: j for j in cluster.jobs("s0", tube)}
        assert set(moved) == set(expected)
        with cluster.client("s0", tube) as c:  # documented: the mover reserved and buried it
            st = c.stats_job(moved[b"buried-0"].id)
            assert (st["reserves"], st["buries"]) == (1, 1)
        for body, (state, pri, ttr) in expected.items():
            job = moved[body]
            assert (job.state, job.pri, job.ttr) == (state, pri, ttr), body
        # the remaining delay is kept, within a second or two (whole seconds, time passes)
        assert 27 <= moved[b"delayed-0 \x00\xff\r\n"].time_left <= 30
        assert 87 <= moved[b"delayed-1 \x00\xff\r\n"].time_left <= 90
        assert [j.body for j in cluster.jobs("s1", tube)] == [b"held"]
    finally:
        holder.close()  # the held job is ready again
    code, out, _ = cluster.run("--config", config)
    assert code == 0, out
    assert "moved 1 job" in out
    assert cluster.jobs("s1", tube) == []
    assert len(cluster.jobs("s0", tube)) == len(expected) + 1
    # idempotent: nothing left to do
    code, report = cluster.run_json("--config", config)
    assert (code, report["moved_total"], report["left"]) == (0, 0, [])


def test_metrics_file(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        c.put(b"m")
    path = cluster.tmp / "rebalance.prom"
    code, _, err = cluster.run("--config", str(cluster.config()), "--metrics-file", str(path))
    assert code == 0, err
    text = path.read_text()
    label = f'{{source="s1",target="s0",tube="{tube}",state="ready"}}'
    assert f"beanrouter_rebalance_jobs_moved_total{label} 1" in text
    assert "beanrouter_rebalance_exit_code 0" in text


def test_dry_run_moves_nothing(cluster: Env) -> None:
    tube = cluster.tube_on("s2")
    expected = setup_away_jobs(cluster, tube, "s0")
    code, report = cluster.run_json("--config", str(cluster.config()), "--dry-run")
    assert code == 1
    assert report["dry_run"] is True
    assert report["moved_total"] == len(expected)
    assert cluster.counts("s0", tube) == {"ready": 3, "delayed": 2, "buried": 2, "reserved": 0}
    assert cluster.jobs("s2") == []
    code, out, _ = cluster.run("--config", str(cluster.config()), "--dry-run")
    assert "would move 7 jobs" in out


def test_jobs_on_their_owner_stay(cluster: Env) -> None:
    tubes = {name: cluster.tube_on(name, prefix="home") for name in cluster.shards}
    for name, tube in tubes.items():
        with cluster.client(name, tube) as c:
            c.put(b"x")
    code, report = cluster.run_json("--config", str(cluster.config()))
    assert (code, report["moved_total"]) == (0, 0)


def test_drain_marked_in_config(cluster: Env) -> None:
    # tubes the full ring gives to s2, and a few others, all with jobs on s2
    tubes = [cluster.tube_on("s2", prefix=p) for p in ("a", "b", "c")] + ["default"]
    for tube in tubes:
        with cluster.client("s2", tube) as c:
            c.put(b"job of " + tube.encode(), delay=0)
            c.put(b"later " + tube.encode(), delay=60)
    config = str(cluster.config(drain=("s2",)))
    code, report = cluster.run_json("--config", config)
    assert code == 0, report
    assert report["draining"] == ["s2"]
    assert report["moved_total"] == 2 * len(tubes)
    placement = cluster.placement(("s2",))
    for tube in tubes:
        assert cluster.counts("s2", tube)["ready"] == 0
        owner = placement.owner(tube)
        assert owner != "s2"
        assert cluster.counts(owner, tube)["ready"] == 1
        assert cluster.counts(owner, tube)["delayed"] == 1


def test_drain_option(cluster: Env) -> None:
    tube = cluster.tube_on("s1")
    with cluster.client("s1", tube) as c:
        c.put(b"on its owner, until s1 drains")
    code, out, _ = cluster.run("--config", str(cluster.config()), "--drain", "s1")
    assert code == 0, out
    assert "not marked 'drain: true'" in out
    assert cluster.counts("s1", tube)["ready"] == 0
    assert cluster.counts(cluster.placement(("s1",)).owner(tube), tube)["ready"] == 1


def test_usage_errors_exit_2(cluster: Env) -> None:
    code, _, err = cluster.run("--config", str(cluster.config()), "--drain", "nope")
    assert code == 2 and "nope" in err
    bad = cluster.tmp / "bad.yaml"
    bad.write_text("servers:\n  - 127.0.0.1:0 x\n")
    code, _, err = cluster.run("--config", str(bad))
    assert code == 2 and "port" in err
    code, _, err = cluster.run("--config", str(cluster.tmp / "missing.yaml"))
    assert code == 2


def test_unreachable_shard_exit_3(cluster: Env) -> None:
    with_dead = Placement([(n, 1) for n in (*cluster.shards, "dead")])
    movable = next(f"m{i}" for i in range(1000) if with_dead.owner(f"m{i}") == "s0")
    blocked = next(f"b{i}" for i in range(1000) if with_dead.owner(f"b{i}") == "dead")
    with cluster.client("s1", movable) as c:
        c.put(b"movable")
        c.use(blocked)
        c.put(b"its owner is down")
    dead = f"127.0.0.1:{free_port()} dead id=9"
    config = str(cluster.config(extra=(dead,)))
    code, report = cluster.run_json("--config", config)
    assert code == 3
    assert "dead" in report["unreachable"]
    assert report["moved_total"] == 1  # what could be moved was moved
    assert cluster.counts("s0", movable)["ready"] == 1
    assert report["left"] == [
        {"shard": "s1", "tube": blocked, "jobs": 1, "reasons": {"owner-unreachable": 1}}
    ]


def test_short_delays_are_moved_once_ready(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        c.put(b"soon", delay=1, priority=9, ttr=33)
    code, report = cluster.run_json("--config", str(cluster.config()))
    assert code == 0, report
    (job,) = cluster.jobs("s0", tube)
    assert (job.body, job.state, job.pri, job.ttr) == (b"soon", "ready", 9, 33)


def test_paused_tube_is_moved(cluster: Env) -> None:
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        c.put(b"paused")
        c.pause_tube(tube, 3600)
    code, report = cluster.run_json("--config", str(cluster.config()))
    assert (code, report["moved_total"]) == (0, 1), report
    assert cluster.counts("s1", tube)["ready"] == 0


def test_check_config_against(cluster: Env) -> None:
    old_shards = ("s0", "s1")
    old = cluster.config(only=old_shards)
    new = cluster.config()
    old_place, new_place = cluster.placement(only=old_shards), cluster.placement()
    moving = next(f"q{i}" for i in range(1000) if new_place.owner(f"q{i}") == "s2")
    staying = next(
        f"k{i}" for i in range(1000)
        if old_place.owner(f"k{i}") == new_place.owner(f"k{i}")
    )  # fmt: skip
    with cluster.client(old_place.owner(moving), moving) as c:
        for _ in range(3):
            c.put(b"x")
    with cluster.client(new_place.owner(staying), staying) as c:
        c.put(b"y")
    code, out, err = cluster.command("check-config", str(new), "--against", str(old))
    assert code == 0, err
    assert f"tube {moving!r}: {old_place.owner(moving)} -> s2" in out
    assert f"tube {staying!r}" not in out.split("against", 1)[1]
    assert f"tube {moving!r} (owner s2): 3 on {old_place.owner(moving)}" in out
    assert "shard s2 is new" in out
    code, out, _ = cluster.command(
        "check-config", str(new), "--against", str(old), "--offline", "--tube", moving
    )
    assert code == 0
    assert f"tube {moving!r}: {old_place.owner(moving)} -> s2" in out
    assert "jobs away" not in out


def test_journal_is_exclusive(cluster: Env) -> None:
    import fcntl
    import os

    path = cluster.tmp / "held.journal"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, err = cluster.run("--config", str(cluster.config()), journal=str(path))
        assert code == 2 and "another rebalance" in err
    finally:
        os.close(fd)


def test_moved_job_is_a_new_job(cluster: Env) -> None:
    """A moved job has a new id and its counters start again (documented)."""
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        c.put(b"counted")
        job = c.reserve(timeout=1)
        c.release(job)
        assert c.stats_job(job)["reserves"] == 1
    assert cluster.run("--config", str(cluster.config()))[0] == 0
    (moved,) = cluster.jobs("s0", tube)
    with cluster.client("s0", tube) as c:
        st = c.stats_job(moved.id)
    assert (st["reserves"], st["releases"]) == (0, 0)
    assert greenstalk  # imported for the fixtures' client type


def test_owner_refusing_puts_leaves_the_job(cluster: Env) -> None:
    """An owner in beanstalkd's drain mode answers puts DRAINING: nothing is copied, the original
    stays ready where it is, and no move is left open."""
    tube = cluster.tube_on("s0")
    with cluster.client("s1", tube) as c:
        c.put(b"stays", priority=4)
    proc = cluster.shards["s0"].proc
    assert proc is not None
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with cluster.client("s0") as c:
            if c.stats()["draining"] == "true":
                break
        time.sleep(0.02)
    code, report = cluster.run_json("--config", str(cluster.config()))
    assert code == 1, report
    assert report["moved_total"] == 0
    assert any("DRAINING" in note for note in report["notes"]), report["notes"]
    assert report["left"] == [{"shard": "s1", "tube": tube, "jobs": 1, "reasons": {"remaining": 1}}]
    (job,) = cluster.jobs("s1", tube)
    assert (job.body, job.state, job.pri) == (b"stays", "ready", 4)
    code, report = cluster.run_json("--config", str(cluster.config()))
    assert report["recovered"] == []  # the refused move was closed in the journal
