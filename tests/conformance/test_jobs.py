"""Job commands: delete, release, bury, kick, kick-job, touch, peek*, reserve-job."""

from __future__ import annotations

import pytest

from .harness import (
    BURIED,
    DELETED,
    KICKED,
    NOT_FOUND,
    RELEASED,
    TIMED_OUT,
    TOUCHED,
    Case,
    Conformance,
    case,
    found,
    inserted,
    io,
    job_reply,
    put,
    reserved,
    sleep,
    stats_reply,
)

THREE = put(b"one") + put(b"two") + put(b"three")
PUT3 = io(THREE, inserted(1), inserted(2), inserted(3))

DELETE = [
    case(
        "delete-ready",
        io(put(b"a"), inserted(1)),
        io(b"delete 1\r\n", DELETED),
        io(b"delete 1\r\n", NOT_FOUND),
        io(b"peek 1\r\n", NOT_FOUND),
        io(b"delete 0\r\n", NOT_FOUND),
    ),
    case(
        "delete-own-reserved",
        io(put(b"a"), inserted(1)),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"delete 1\r\n", DELETED),
    ),
    case(
        "delete-other-connections-reserved",
        io(put(b"a"), inserted(1)),
        io(b"reserve\r\n", reserved(1, b"a"), conn="b"),
        io(b"delete 1\r\n", NOT_FOUND),
        io(b"release 1 0 0\r\n", NOT_FOUND),
        io(b"bury 1 0\r\n", NOT_FOUND),
        io(b"touch 1\r\n", NOT_FOUND),
        io(b"kick-job 1\r\n", NOT_FOUND),
        io(b"reserve-job 1\r\n", NOT_FOUND),
        io(b"delete 1\r\n", DELETED, conn="b"),
    ),
    case(
        "delete-buried-and-delayed",
        io(put(b"a") + put(b"b", delay=100), inserted(1), inserted(2)),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"bury 1 0\r\n", BURIED),
        io(b"delete 1\r\n", DELETED, conn="b"),
        io(b"delete 2\r\n", DELETED, conn="b"),
        io(
            b"stats\r\n",
            stats_reply(
                cmd_put=2,
                cmd_reserve=1,
                cmd_bury=1,
                cmd_delete=2,
                cmd_stats=1,
                total_jobs=2,
                current_producers=1,
                current_workers=1,
                current_connections=2,
                total_connections=3,
            ),
        ),
        io(
            b"stats-tube default\r\n",
            b"OK 265\r\n---\nname: default\ncurrent-jobs-urgent: 0\n"
            b"current-jobs-ready: 0\ncurrent-jobs-reserved: 0\ncurrent-jobs-delayed: 0\n"
            b"current-jobs-buried: 0\ntotal-jobs: 2\ncurrent-using: 2\ncurrent-watching: 2\n"
            b"current-waiting: 0\ncmd-delete: 2\ncmd-pause-tube: 0\npause: 0\n"
            b"pause-time-left: 0\n\r\n",
        ),
    ),
]

RELEASE = [
    case(
        "release-own",
        io(put(b"a", pri=5), inserted(1)),
        io(b"release 1 0 0\r\n", NOT_FOUND),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"release 1 7 0\r\n", RELEASED),
        io(b"release 1 7 0\r\n", NOT_FOUND),
        io(b"stats-job 1\r\n", job_reply(id=1, pri=7, ttr=10, reserves=1, releases=1)),
    ),
    case(
        "release-with-delay",
        io(put(b"a"), inserted(1)),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"release 1 3 20\r\n", RELEASED),
        io(
            b"stats-job 1\r\n",
            job_reply(
                id=1,
                state="delayed",
                pri=3,
                delay=20,
                ttr=10,
                time_left=19,
                reserves=1,
                releases=1,
            ),
        ),
        io(b"peek-ready\r\n", NOT_FOUND),
        io(b"peek-delayed\r\n", found(1, b"a")),
        io(b"reserve-with-timeout 0\r\n", TIMED_OUT),
    ),
    case(
        "release-keeps-original-order-by-priority",
        PUT3,
        io(b"reserve\r\nreserve\r\n", reserved(1, b"one"), reserved(2, b"two")),
        io(b"release 1 1 0\r\n", RELEASED),
        io(b"release 2 0 0\r\n", RELEASED),
        io(b"peek-ready\r\n", found(2, b"two")),
        io(
            b"reserve\r\nreserve\r\nreserve\r\n",
            reserved(2, b"two"),
            reserved(3, b"three"),
            reserved(1, b"one"),
        ),
    ),
]

BURY = [
    case(
        "bury-fifo-and-kick",
        PUT3,
        io(
            b"reserve\r\nreserve\r\nreserve\r\n",
            reserved(1, b"one"),
            reserved(2, b"two"),
            reserved(3, b"three"),
        ),
        io(b"bury 2 9\r\n", BURIED),
        io(b"bury 1 9\r\n", BURIED),
        io(b"bury 3 1\r\n", BURIED),
        io(b"bury 3 1\r\n", NOT_FOUND),
        io(b"peek-buried\r\n", found(2, b"two")),
        io(b"kick 1\r\n", b"KICKED 1\r\n"),
        io(b"peek-buried\r\n", found(1, b"one")),
        io(b"stats-job 2\r\n", job_reply(id=2, pri=9, ttr=10, reserves=1, buries=1, kicks=1)),
        io(b"kick 10\r\n", b"KICKED 2\r\n"),
        io(b"kick 10\r\n", b"KICKED 0\r\n"),
        io(b"peek-buried\r\n", NOT_FOUND),
        io(b"reserve\r\n", reserved(3, b"three")),
    ),
    case(
        "bury-not-reserved",
        io(put(b"a"), inserted(1)),
        io(b"bury 1 0\r\n", NOT_FOUND),
        io(b"bury 99 0\r\n", NOT_FOUND),
    ),
    case(
        "kick-prefers-buried-over-delayed",
        io(put(b"d", delay=100) + put(b"b"), inserted(1), inserted(2)),
        io(b"reserve\r\n", reserved(2, b"b")),
        io(b"bury 2 0\r\n", BURIED),
        io(b"kick 5\r\n", b"KICKED 1\r\n"),
        io(b"stats-job 1\r\n", job_reply(id=1, state="delayed", delay=100, ttr=10, time_left=99)),
        io(b"kick 5\r\n", b"KICKED 1\r\n"),
        io(b"stats-job 1\r\n", job_reply(id=1, delay=100, ttr=10, kicks=1)),
        io(b"kick 5\r\n", b"KICKED 0\r\n"),
    ),
    case(
        "kick-delayed-in-deadline-order",
        io(
            put(b"x", delay=300) + put(b"y", delay=100) + put(b"z", delay=200),
            inserted(1),
            inserted(2),
            inserted(3),
        ),
        io(b"peek-delayed\r\n", found(2, b"y")),
        io(b"kick 2\r\n", b"KICKED 2\r\n"),
        io(b"peek-delayed\r\n", found(1, b"x")),
        io(b"peek-ready\r\n", found(2, b"y")),
    ),
    case(
        "kick-minus-one-kicks-all",
        io(put(b"a", delay=100) + put(b"b", delay=100), inserted(1), inserted(2)),
        io(b"kick -1\r\n", b"KICKED 2\r\n"),
    ),
    case(
        "kick-only-used-tube",
        io(b"use foo\r\n", b"USING foo\r\n"),
        io(put(b"a", delay=100), inserted(1)),
        io(b"use default\r\n", b"USING default\r\n"),
        io(b"kick 10\r\n", b"KICKED 0\r\n"),
        io(b"peek-delayed\r\n", NOT_FOUND),
        # kick-job works on any tube
        io(b"kick-job 1\r\n", KICKED),
        io(b"stats-job 1\r\n", job_reply(id=1, tube="foo", delay=100, ttr=10, kicks=1)),
    ),
    case(
        "kick-job-states",
        io(put(b"a") + put(b"b", delay=100) + put(b"c"), inserted(1), inserted(2), inserted(3)),
        io(b"kick-job 1\r\n", NOT_FOUND),  # ready
        io(b"kick-job 2\r\n", KICKED),  # delayed
        io(b"kick-job 2\r\n", NOT_FOUND),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"kick-job 1\r\n", NOT_FOUND),  # reserved
        io(b"bury 1 0\r\n", BURIED),
        io(b"kick-job 1\r\n", KICKED),  # buried
        io(b"kick-job 99\r\n", NOT_FOUND),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=10, reserves=1, buries=1, kicks=1)),
    ),
]

TOUCH = [
    case(
        "touch",
        io(put(b"a"), inserted(1)),
        io(b"touch 1\r\n", NOT_FOUND),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"touch 1\r\n", TOUCHED),
        io(b"touch 2\r\n", NOT_FOUND),
        io(b"touch 1\r\n", NOT_FOUND, conn="b"),
    ),
    case(
        "touch-restarts-ttr",
        io(put(b"a", ttr=3), inserted(1)),
        io(b"reserve\r\n", reserved(1, b"a")),
        sleep(1.1),
        io(
            b"stats-job 1\r\n",
            job_reply(id=1, state="reserved", age=1, ttr=3, time_left=1, reserves=1),
        ),
        io(b"touch 1\r\n", TOUCHED),
        io(
            b"stats-job 1\r\n",
            job_reply(id=1, state="reserved", age=1, ttr=3, time_left=2, reserves=1),
        ),
    ),
]

PEEK = [
    case(
        "peek-any-state-any-tube",
        io(b"use foo\r\n", b"USING foo\r\n"),
        io(put(b"r") + put(b"d", delay=100) + put(b"x"), inserted(1), inserted(2), inserted(3)),
        io(b"watch foo\r\n", b"WATCHING 2\r\n", conn="b"),
        io(b"reserve\r\n", reserved(1, b"r"), conn="b"),
        io(b"use default\r\n", b"USING default\r\n"),
        io(b"peek 1\r\n", found(1, b"r")),
        io(b"peek 2\r\n", found(2, b"d")),
        io(b"peek 3\r\n", found(3, b"x")),
        io(b"peek-ready\r\npeek-delayed\r\npeek-buried\r\n", NOT_FOUND, NOT_FOUND, NOT_FOUND),
    ),
    case(
        "peek-ready-lowest-priority-then-id",
        io(
            put(b"a", pri=5) + put(b"b", pri=3) + put(b"c", pri=3) + put(b"d", pri=4),
            inserted(1),
            inserted(2),
            inserted(3),
            inserted(4),
        ),
        io(b"peek-ready\r\n", found(2, b"b")),
        io(b"delete 2\r\n", DELETED),
        io(b"peek-ready\r\n", found(3, b"c")),
    ),
    case(
        "peek-delayed-earliest-deadline",
        io(
            put(b"a", delay=50) + put(b"b", delay=20) + put(b"c", delay=20),
            inserted(1),
            inserted(2),
            inserted(3),
        ),
        io(b"peek-delayed\r\n", found(2, b"b")),
    ),
    case(
        "peek-empty",
        io(
            b"peek-ready\r\npeek-delayed\r\npeek-buried\r\npeek 1\r\n",
            NOT_FOUND,
            NOT_FOUND,
            NOT_FOUND,
            NOT_FOUND,
        ),
    ),
]

RESERVE_JOB = [
    case(
        "reserve-job-states",
        io(b"use other\r\n", b"USING other\r\n"),
        io(put(b"a") + put(b"b", delay=100) + put(b"c"), inserted(1), inserted(2), inserted(3)),
        # other is not watched: reserve-job ignores the watch list
        io(b"reserve-job 1\r\n", reserved(1, b"a")),
        io(b"reserve-job 2\r\n", reserved(2, b"b")),
        io(b"reserve-job 1\r\n", NOT_FOUND),
        io(b"bury 2 0\r\n", BURIED),
        io(b"reserve-job 2\r\n", reserved(2, b"b")),
        io(b"reserve-job 99\r\n", NOT_FOUND),
        io(b"reserve-job 0\r\n", NOT_FOUND),
        io(
            b"stats-job 2\r\n",
            job_reply(
                id=2,
                tube="other",
                state="reserved",
                delay=100,
                ttr=10,
                time_left=9,
                reserves=2,
                buries=1,
            ),
        ),
        # reserve-job has no cmd-* counter
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_ready=1,
                current_jobs_urgent=1,
                current_jobs_reserved=2,
                cmd_put=3,
                cmd_use=1,
                cmd_bury=1,
                cmd_stats=1,
                cmd_stats_job=1,
                total_jobs=3,
                current_tubes=2,
                current_producers=1,
                current_workers=1,
            ),
        ),
    ),
]

CASES = DELETE + RELEASE + BURY + TOUCH + PEEK + RESERVE_JOB


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_jobs(conformance: Conformance, c: Case) -> None:
    conformance.check(c)
