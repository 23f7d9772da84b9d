"""Restarts with ``-b DIR``: the same sessions against beanstalkd and ours, killed -9 in between.

A restart case is a sequence of server lives on one binlog directory: each life is a ``Case``
run on a fresh server started with ``-b DIR``, then the server is killed with SIGKILL (a crash,
not a clean stop) and the next life starts on the same directory. Every life's transcript must
match the real beanstalkd's, after the usual normalisation (``age`` and ``time-left`` of
``stats-job`` are blanked: the two servers start up at different speeds); literal expectations
check the recovery rules themselves (reserved -> ready, buried stays buried in FIFO order,
delayed stays delayed, deleted jobs are gone, the next id follows the highest one).

Known, deliberate differences are tested on ours only, with the reference's answer shown:
- beanstalkd restores the buried FIFO in put order; ours keeps the bury order;
- beanstalkd reuses ids when a restart finds only empty files; ours never reuses an id;
- beanstalkd drops a job of the maximum size (-z) at replay (its size check counts the body's
  trailing CRLF); ours restores it.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.ports import free_port

from .harness import (
    BEANROUTER,
    BEANSTALKD,
    BURIED,
    DELETED,
    IMPLEMENTATIONS,
    KICKED,
    NOT_FOUND,
    RELEASED,
    SAME,
    SHARDED,
    Case,
    Entry,
    IdMap,
    Server,
    case,
    describe_diff,
    found,
    inserted,
    io,
    job_reply,
    list_reply,
    literal_mismatches,
    put,
    reserved,
    run_case,
    send,
    server_command,
    skip_if_sharded,
    sleep,
    tube_reply,
)

Lives = tuple[Case, ...]

USING = b"USING %s\r\n"


def lives(name: str, *steps_per_life: Sequence[object], loose: bool = True) -> Lives:
    """One Case per server life (``loose``: blank stats-job age and time-left)."""
    return tuple(
        case(f"{name}[life {i + 1}]", *steps, loose_job_times=loose)  # type: ignore[arg-type]
        for i, steps in enumerate(steps_per_life)
    )


def run_lives(
    impl: str, script: Lives, directory: str, ids: IdMap | None = None
) -> list[list[Entry]]:
    """Run each life on a fresh ``impl -b directory``, killing it with SIGKILL after (job ids
    mapped by ``ids`` across all lives)."""
    out = []
    for life in script:
        srv = Server(impl, ("-b", directory))
        try:
            out.append(run_case(srv, life, ids=ids))
        finally:
            srv.stop()  # SIGKILL
    return out


_reference: dict[str, list[list[Entry]]] = {}


def reference(name: str, script: Lives) -> list[list[Entry]]:
    if name not in _reference:
        with tempfile.TemporaryDirectory(prefix="binlog-ref-") as d:
            _reference[name] = run_lives(BEANSTALKD, script, d)
    return _reference[name]


def check(impl: str, name: str, script: Lives) -> list[list[Entry]]:
    """Run ``script`` on ``impl``; assert every life matches beanstalkd and its literals."""
    skip_if_sharded(impl, f"restart-{name}")
    expected = reference(name, script)
    if impl == BEANSTALKD:
        actual = expected
    else:
        ids = IdMap(e for life in expected for e in life) if impl in SHARDED else None
        with tempfile.TemporaryDirectory(prefix="binlog-") as d:
            actual = run_lives(impl, script, d, ids)
    problems = []
    for life, want, got in zip(script, expected, actual, strict=True):
        problems += [f"{life.name}: {p}" for p in literal_mismatches(life, got)]
        if got != want:
            problems.append(
                f"{life.name}: transcript differs from beanstalkd:\n" + describe_diff(want, got)
            )
    if problems:
        raise AssertionError(f"{impl} {name}:\n" + "\n".join(problems))
    return actual


# -- cases -----------------------------------------------------------------------------------

STATES = lives(
    "states",
    [
        io(
            put(b"ready", pri=5) + put(b"delayed", pri=6, delay=100) + put(b"c", pri=7),
            inserted(1),
            inserted(2),
            inserted(3),
        ),
        io(put(b"gone", pri=8), inserted(4)),
        io(b"reserve\r\n", reserved(1, b"ready")),
        io(b"bury 1 9\r\n", BURIED),
        io(b"reserve\r\n", reserved(3, b"c")),  # reserved at the crash
        io(b"delete 4\r\n", DELETED),
        io(put(b"e", pri=10, ttr=30), inserted(5)),
    ],
    [
        io(b"peek 1\r\n", found(1, b"ready")),
        io(b"peek 2\r\n", found(2, b"delayed")),
        io(b"peek 3\r\n", found(3, b"c")),
        io(b"peek 4\r\n", NOT_FOUND),
        io(
            b"stats-job 1\r\n",
            job_reply(
                id=1,
                state="buried",
                pri=9,
                age="X",
                ttr=10,
                file=1,
                reserves=1,
                buries=2,  # beanstalkd counts the replay as a bury (reproduced)
                time_left="X",
            ),
        ),
        io(
            b"stats-job 2\r\n",
            job_reply(
                id=2, state="delayed", pri=6, age="X", delay=100, ttr=10, time_left="X", file=1
            ),
        ),
        io(
            b"stats-job 3\r\n",
            job_reply(id=3, state="ready", pri=7, age="X", ttr=10, time_left="X", file=1),
        ),
        io(b"stats-job 5\r\n", SAME),
        io(
            b"stats-tube default\r\n",
            tube_reply(
                current_jobs_urgent=2,
                current_jobs_ready=2,
                current_jobs_delayed=1,
                current_jobs_buried=1,
                current_using=1,
                current_watching=1,
            ),
        ),
        io(b"list-tubes\r\n", list_reply("default")),
        io(b"stats\r\n", SAME),
        io(b"peek-ready\r\n", found(3, b"c")),
        io(b"peek-delayed\r\n", found(2, b"delayed")),
        io(b"peek-buried\r\n", found(1, b"ready")),
        io(put(b"next", pri=100), inserted(6)),
        io(b"reserve\r\n", reserved(3, b"c")),
        io(b"delete 3\r\n", DELETED),
    ],
    [
        io(b"peek 3\r\n", NOT_FOUND),
        io(b"peek 6\r\n", found(6, b"next")),
        io(b"stats\r\n", SAME),
        io(put(b"x"), inserted(7)),
    ],
)

BURIED_FIFO = lives(
    "buried-fifo",
    [
        io(put(b"a") + put(b"b") + put(b"c"), inserted(1), inserted(2), inserted(3)),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"bury 1 0\r\n", BURIED),
        io(b"reserve\r\n", reserved(2, b"b")),
        io(b"bury 2 0\r\n", BURIED),
        io(b"reserve\r\n", reserved(3, b"c")),
        io(b"bury 3 0\r\n", BURIED),
    ],
    [
        io(b"peek-buried\r\n", found(1, b"a")),
        io(b"kick 1\r\n", b"KICKED 1\r\n"),
        io(b"peek-buried\r\n", found(2, b"b")),
        io(b"stats-job 1\r\n", SAME),
    ],
    [
        io(b"peek-buried\r\n", found(2, b"b")),
        io(b"kick 5\r\n", b"KICKED 2\r\n"),
        io(b"stats-job 1\r\n", SAME),
        io(b"stats-job 3\r\n", SAME),
        io(b"reserve\r\n", reserved(1, b"a")),
    ],
)

TUBES = lives(
    "tubes",
    [
        io(b"use t1\r\n" + put(b"1"), USING % b"t1", inserted(1)),
        io(b"use t2\r\n" + put(b"2"), USING % b"t2", inserted(2)),
        io(b"use t3\r\n" + put(b"3") + put(b"4"), USING % b"t3", inserted(3), inserted(4)),
        io(b"use t4\r\n" + put(b"5"), USING % b"t4", inserted(5)),
        io(b"delete 1\r\n", DELETED),  # t1 goes at replay: the last tube moves into its slot
        io(b"delete 5\r\n", DELETED),
    ],
    [
        io(b"list-tubes\r\n", list_reply("default", "t3", "t2")),
        io(b"stats-tube t1\r\n", NOT_FOUND),
        io(b"stats-tube t3\r\n", SAME),
        io(b"stats-job 4\r\n", SAME),
        io(b"watch t3\r\n", b"WATCHING 2\r\n"),
        io(b"reserve\r\n", reserved(3, b"3")),
    ],
)

RELEASE_KICK = lives(
    "release-kick",
    [
        io(put(b"a") + put(b"b") + put(b"c", delay=100), inserted(1), inserted(2), inserted(3)),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"release 1 5 100\r\n", RELEASED),  # logged: delayed, pri 5
        io(b"reserve\r\n", reserved(2, b"b")),
        io(b"release 2 7 0\r\n", RELEASED),  # not logged: back to its put record
        io(b"kick-job 3\r\n", KICKED),  # logged: ready
        io(put(b"d", delay=100), inserted(4)),
        io(b"use default\r\nkick 1\r\n", b"USING default\r\n", b"KICKED 1\r\n"),  # kicks 1
    ],
    [
        io(
            b"stats-job 1\r\n",
            job_reply(
                id=1,
                state="ready",
                pri=5,
                age="X",
                delay=100,
                ttr=10,
                time_left="X",
                file=1,
                reserves=1,
                releases=1,
                kicks=1,
            ),
        ),
        io(
            b"stats-job 2\r\n",
            job_reply(id=2, state="ready", age="X", ttr=10, time_left="X", file=1),
        ),
        io(
            b"stats-job 3\r\n",
            job_reply(
                id=3, state="ready", age="X", delay=100, ttr=10, time_left="X", file=1, kicks=1
            ),
        ),
        io(b"stats-job 4\r\n", SAME),
        io(b"peek-delayed\r\n", found(4, b"d")),
    ],
)

RESERVED_READY = lives(
    "reserved-ready",
    [
        io(put(b"job", ttr=100), inserted(1)),
        io(b"reserve\r\n", reserved(1, b"job")),
        io(b"touch 1\r\n", b"TOUCHED\r\n"),
    ],
    [
        io(
            b"stats-job 1\r\n",
            job_reply(id=1, state="ready", age="X", ttr=100, time_left="X", file=1),
        ),
        io(b"reserve-with-timeout 0\r\n", reserved(1, b"job")),
        io(b"release 1 0 0\r\n", RELEASED),
    ],
)

BIG = bytes(range(256)) * 255 + b"x" * 253  # 65533 bytes: the largest beanstalkd restores

BODIES = lives(
    "bodies",
    [
        io(
            put(b"a\r\nb\x00c\r\n") + put(b"") + put(BIG),
            inserted(1),
            inserted(2),
            inserted(3),
        ),
    ],
    [
        io(b"peek 1\r\n", found(1, b"a\r\nb\x00c\r\n")),
        io(b"peek 2\r\n", found(2, b"")),
        io(b"peek 3\r\n", found(3, BIG)),
    ],
)

IDS = lives(
    "ids",
    [
        io(put(b"a") + put(b"b"), inserted(1), inserted(2)),
        io(b"delete 2\r\n", DELETED),
    ],
    [
        io(put(b"c"), inserted(3)),
        io(b"delete 1\r\ndelete 3\r\n", DELETED, DELETED),
    ],
    [io(put(b"d"), inserted(4)), io(b"stats\r\n", SAME)],
)

CASES = {
    "states": STATES,
    "buried-fifo": BURIED_FIFO,
    "tubes": TUBES,
    "release-kick": RELEASE_KICK,
    "reserved-ready": RESERVED_READY,
    "bodies": BODIES,
    "ids": IDS,
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_restart(impl: str, name: str) -> None:
    check(impl, name, CASES[name])


# -- delayed jobs keep their absolute deadline ------------------------------------------------

DEADLINE = lives(
    "deadline",
    [io(put(b"later", delay=20), inserted(1)), sleep(1.5)],
    [io(b"stats-job 1\r\n", SAME)],
    loose=False,
)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_delayed_job_keeps_its_deadline(impl: str) -> None:
    with tempfile.TemporaryDirectory(prefix="binlog-") as d:
        started = time.monotonic()
        transcript = run_lives(impl, DEADLINE, d)
        elapsed = time.monotonic() - started
    reply = transcript[1][0].replies[0]
    m = re.search(rb"\nstate: delayed\n.*\ntime-left: (\d+)\n", reply, re.S)
    assert m is not None, reply
    # 20 s from the put, minus the time both lives took (not 20 again: the deadline is absolute)
    assert 20 - elapsed - 1 <= int(m.group(1)) <= 20 - 1.5, (reply, elapsed)


# -- deliberate differences (ours only, the reference's answer shown) -------------------------

FIFO_ORDER = lives(
    "fifo-order",
    [
        io(put(b"a") + put(b"b"), inserted(1), inserted(2)),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"reserve\r\n", reserved(2, b"b")),
        io(b"bury 2 0\r\n", BURIED),  # bury order: 2, then 1
        io(b"bury 1 0\r\n", BURIED),
    ],
    [io(b"peek-buried\r\n", SAME)],
)


def test_buried_fifo_order_is_kept_not_put_order() -> None:
    ref = reference("fifo-order", FIFO_ORDER)
    assert ref[1][0].replies == (found(1, b"a"),)  # beanstalkd: put order
    with tempfile.TemporaryDirectory(prefix="binlog-") as d:
        ours = run_lives(BEANROUTER, FIFO_ORDER, d)
    assert ours[1][0].replies == (found(2, b"b"),)  # ours: bury order, as before the crash


REUSE = lives(
    "id-reuse",
    [io(put(b"a"), inserted(1)), io(b"delete 1\r\n", DELETED)],
    [io(b"stats-tube default\r\n", SAME)],  # a life that logs nothing
    [io(put(b"b"), SAME)],
)


def test_ids_are_never_reused_across_restarts() -> None:
    ref = reference("id-reuse", REUSE)
    assert ref[2][0].replies == (inserted(1),)  # beanstalkd: only empty files left, ids restart
    with tempfile.TemporaryDirectory(prefix="binlog-") as d:
        ours = run_lives(BEANROUTER, REUSE, d)
    assert ours[2][0].replies == (inserted(2),)


MAX_SIZE = lives(
    "max-size",
    [io(put(b"y" * 65535), inserted(1))],
    [io(b"peek 1\r\n", SAME)],
)


def test_job_of_the_maximum_size_survives() -> None:
    ref = reference("max-size", MAX_SIZE)
    assert ref[1][0].replies == (NOT_FOUND,)  # beanstalkd: "job 1 is too big", dropped
    with tempfile.TemporaryDirectory(prefix="binlog-") as d:
        ours = run_lives(BEANROUTER, MAX_SIZE, d)
    assert ours[1][0].replies == (found(1, b"y" * 65535),)


# -- the directory lock -------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_second_server_on_the_same_directory_exits(impl: str, tmp_path: Path) -> None:
    first = Server(impl, ("-b", str(tmp_path)))
    try:
        pid = first.pid  # started
        cmd = server_command(impl, free_port(), ("-b", str(tmp_path)))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    finally:
        first.stop()
    assert done.returncode == 10, done  # beanstalkd's status for "failed to lock wal dir"
    if impl == BEANROUTER:
        assert f"{tmp_path} is locked by another server (pid {pid})" in done.stderr


# -- the same against both, across many lives: a small random workload ------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_many_lives(impl: str) -> None:
    script = []
    next_id = 1
    for life in range(4):
        steps = [io(b"stats-tube default\r\n", SAME)]
        for _ in range(3):
            steps.append(io(put(b"job%d" % next_id), inserted(next_id)))
            next_id += 1
        steps.append(io(b"reserve\r\n", SAME))
        steps.append(send(b"delete %d\r\n" % (next_id - 3)))
        steps.append(io(b"peek-ready\r\n", SAME))
        script.append(steps)
        del life
    check(impl, "many-lives", lives("many-lives", *script))
