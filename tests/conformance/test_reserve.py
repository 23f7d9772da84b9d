"""Reserving: order, blocking and waiting clients, DEADLINE_SOON, TTR expiry, disconnects,
half-closed connections.

Timing cases sleep whole seconds sparingly and allow at least 0.5 s of slack either way.
"""

from __future__ import annotations

import pytest

from beanrouter.core.ring import Placement

from .harness import (
    CLUSTER3,
    CLUSTERS,
    DEADLINE_SOON,
    DELETED,
    PAUSED,
    TIMED_OUT,
    USING_DEFAULT,
    Case,
    Conformance,
    case,
    closed,
    found,
    hangup,
    inserted,
    io,
    job_reply,
    put,
    quiet,
    recv,
    reserved,
    shutdown,
    sleep,
    stats_reply,
    tube_reply,
    waiting,
)

RESERVE = b"reserve\r\n"
RWT0 = b"reserve-with-timeout 0\r\n"

ORDER = [
    case("reserve-with-timeout-0-empty", io(RWT0, TIMED_OUT)),
    case(
        "reserve-priority-then-id",
        io(
            put(b"a", pri=5) + put(b"b", pri=1) + put(b"c", pri=5) + put(b"d", pri=1),
            inserted(1),
            inserted(2),
            inserted(3),
            inserted(4),
        ),
        io(
            RESERVE * 2 + RWT0 * 2,
            reserved(2, b"b"),
            reserved(4, b"d"),
            reserved(1, b"a"),
            reserved(3, b"c"),
        ),
        io(RWT0, TIMED_OUT),
    ),
    case(
        "reserve-across-watched-tubes",
        io(b"use t1\r\n" + put(b"t1", pri=2), b"USING t1\r\n", inserted(1)),
        io(b"use t2\r\n" + put(b"t2", pri=1), b"USING t2\r\n", inserted(2)),
        io(b"use default\r\n" + put(b"def", pri=2), USING_DEFAULT, inserted(3)),
        io(b"use t3\r\n" + put(b"t3", pri=0), b"USING t3\r\n", inserted(4)),
        io(b"watch t1\r\nwatch t2\r\n", b"WATCHING 2\r\n", b"WATCHING 3\r\n"),
        io(RESERVE, reserved(2, b"t2")),
        io(RESERVE, reserved(1, b"t1")),
        io(RESERVE, reserved(3, b"def")),
        io(RWT0, TIMED_OUT),
    ),
    case(
        "reserve-counters",
        io(RWT0 + b"reserve-with-timeout abc\r\n", TIMED_OUT, TIMED_OUT),
        io(put(b"x") + RESERVE, inserted(1), reserved(1, b"x")),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_reserved=1,
                cmd_put=1,
                cmd_reserve=1,
                cmd_reserve_with_timeout=2,
                cmd_stats=1,
                total_jobs=1,
                current_producers=1,
                current_workers=1,
            ),
        ),
        io(
            b"stats-tube default\r\n",
            tube_reply(current_jobs_reserved=1, total_jobs=1, current_using=1, current_watching=1),
        ),
    ),
]

BLOCKING = [
    # A cluster's wait runs on every shard of the watched tubes; the waits the job did not come
    # from are cancelled by closing their links, which must not take the watched tubes (and
    # their pause state) away with them: on one beanstalkd they live while they are watched.
    case(
        "watched-tubes-outlive-a-wait-answered-elsewhere",
        io(
            b"watch a\r\nwatch b\r\nwatch c\r\nignore default\r\n",
            b"WATCHING 2\r\n",
            b"WATCHING 3\r\n",
            b"WATCHING 4\r\n",
            b"WATCHING 3\r\n",
            conn="b",
        ),
        io(b"reserve-with-timeout 5\r\n", conn="b"),
        waiting(1, b"a"),
        io(b"use a\r\n" + put(b"x"), b"USING a\r\n", inserted(1)),
        recv(reserved(1, b"x"), conn="b"),
        sleep(0.3),
        io(b"pause-tube b 100\r\n", PAUSED),
        io(b"pause-tube c 100\r\n", PAUSED),
        io(b"stats-tube c\r\n"),
        io(b"reserve-with-timeout 0\r\n", TIMED_OUT, conn="b"),
    ),
    case(
        "reserve-blocks-until-put",
        io(RESERVE, conn="b"),
        waiting(1),
        io(
            b"stats-tube default\r\n",
            tube_reply(current_using=3, current_watching=3, current_waiting=1),
        ),
        quiet(0.2, conn="b"),
        io(put(b"job"), inserted(1)),
        recv(reserved(1, b"job"), conn="b"),
        io(
            b"stats-tube default\r\n",
            tube_reply(
                current_jobs_reserved=1,
                total_jobs=1,
                current_using=3,
                current_watching=3,
            ),
        ),
    ),
    case(
        "reserve-blocked-waits-for-watched-tube",
        io(b"watch foo\r\nignore default\r\n", b"WATCHING 2\r\n", b"WATCHING 1\r\n", conn="b"),
        io(RESERVE, conn="b"),
        waiting(1, b"foo"),
        io(put(b"default-job"), inserted(1)),
        quiet(0.3, conn="b"),
        io(b"use foo\r\n" + put(b"foo-job"), b"USING foo\r\n", inserted(2)),
        recv(reserved(2, b"foo-job"), conn="b"),
    ),
    case(
        "reserve-with-timeout-times-out",
        io(b"reserve-with-timeout 1\r\n"),
        quiet(0.5),
        recv(TIMED_OUT, timeout=2.0),
    ),
    case(
        "reserve-with-timeout-gets-job",
        io(b"reserve-with-timeout 5\r\n", conn="b"),
        waiting(1),
        io(put(b"x"), inserted(1)),
        recv(reserved(1, b"x"), conn="b"),
    ),
    # strtol: -1 is a negative timeout, which means "wait forever" like reserve.
    case(
        "reserve-with-timeout-negative-blocks",
        io(b"reserve-with-timeout -1\r\n", conn="b"),
        waiting(1),
        # strtol gives a long; stored in an int, 2**32 - 1 becomes -1 and 2**31 becomes INT_MIN
        io(b"reserve-with-timeout 4294967295\r\n", conn="c"),
        waiting(2),
        io(b"reserve-with-timeout 2147483648\r\n", conn="d"),
        waiting(3),
        quiet(1.1, conn="b"),
        quiet(0.01, conn="c"),
        quiet(0.01, conn="d"),
        io(put(b"x") + put(b"y") + put(b"z"), inserted(1), inserted(2), inserted(3)),
        recv(reserved(1, b"x"), conn="b"),
        recv(reserved(2, b"y"), conn="c"),
        recv(reserved(3, b"z"), conn="d"),
    ),
    case(
        "reserve-blocked-gets-job-when-tube-unpauses",
        io(put(b"x"), inserted(1)),
        io(b"pause-tube default 1\r\n", PAUSED),
        io(b"reserve-with-timeout 5\r\n", conn="b"),
        quiet(0.4, conn="b"),
        recv(reserved(1, b"x"), conn="b", timeout=2.5),
    ),
    case(
        "waiting-clients-served-in-order",
        io(RESERVE, conn="b"),
        waiting(1),
        io(RESERVE, conn="c"),
        waiting(2),
        io(RESERVE, conn="d"),
        waiting(3),
        io(put(b"1") + put(b"2") + put(b"3"), inserted(1), inserted(2), inserted(3)),
        recv(reserved(1, b"1"), conn="b"),
        recv(reserved(2, b"2"), conn="c"),
        recv(reserved(3, b"3"), conn="d"),
    ),
    # Not strictly FIFO: beanstalkd takes waiters from an unordered set with a moving cursor
    # (ms_take), so with four waiters and no new waiters in between the 3rd and 4th swap.
    case(
        "waiting-clients-four-waiters-order",
        io(RESERVE, conn="b"),
        waiting(1),
        io(RESERVE, conn="c"),
        waiting(2),
        io(RESERVE, conn="d"),
        waiting(3),
        io(RESERVE, conn="e"),
        waiting(4),
        io(
            put(b"1") + put(b"2") + put(b"3") + put(b"4"),
            inserted(1),
            inserted(2),
            inserted(3),
            inserted(4),
        ),
        recv(reserved(1, b"1"), conn="b"),
        recv(reserved(2, b"2"), conn="c"),
        recv(reserved(4, b"4"), conn="d"),
        recv(reserved(3, b"3"), conn="e"),
    ),
]

# A tube in the last second of its pause reads ``pause-time-left: 0`` in ``stats-tube`` (whole
# seconds, truncated) while it is still paused; ``pause`` says it is (beanstalkd sets it to 0
# when the pause lifts). On cluster3 tube ``a`` lives on shard-0 (failover successor shard-1)
# and ``b`` on shard-2 (successor shard-0, the shard that holds the paused ``a``):
# ``test_pause_cases_span_shards`` checks it. The worker watches both before the pause, so the
# pause reaches ``a`` on its successor too. beanstalkd hands out ``b``'s job at once, and ``a``'s
# most urgent job first once the pause is over.
PAUSE_WORKER = io(
    b"watch a\r\nwatch b\r\nignore default\r\n",
    b"WATCHING 2\r\n",
    b"WATCHING 3\r\n",
    b"WATCHING 2\r\n",
    conn="b",
)
PAUSE_JOBS = io(
    b"use b\r\n" + put(b"b1", pri=5) + put(b"b2", pri=5) + b"use a\r\n" + put(b"a1", pri=0),
    b"USING b\r\n",
    inserted(1),
    inserted(2),
    b"USING a\r\n",
    inserted(3),
)

PAUSES = [
    case(
        "reserve-skips-tube-in-last-second-of-pause",
        PAUSE_WORKER,
        PAUSE_JOBS,
        io(b"pause-tube a 1\r\n", PAUSED),
        io(RWT0, reserved(1, b"b1"), conn="b"),
        io(RWT0, reserved(2, b"b2"), conn="b"),
        io(RWT0, TIMED_OUT, conn="b"),
        sleep(1.2),
        io(RWT0, reserved(3, b"a1"), conn="b"),
    ),
    case(
        "reserve-waiting-skips-tube-in-last-second-of-pause",
        PAUSE_WORKER,
        PAUSE_JOBS,
        io(b"pause-tube a 1\r\n", PAUSED),
        # the job ready elsewhere, at once (not a's job when the pause lifts)
        io(b"reserve-with-timeout 1\r\n", reserved(1, b"b1"), conn="b", timeout=0.5),
        sleep(1.2),
        # the pause is over: priority order across the shards again (a1 before the older b2)
        io(b"reserve-with-timeout 1\r\n", reserved(3, b"a1"), conn="b"),
        io(b"reserve-with-timeout 1\r\n", reserved(2, b"b2"), conn="b"),
        io(RWT0, TIMED_OUT, conn="b"),
    ),
    case(
        "reserve-pause-lifted-most-urgent-first",
        PAUSE_WORKER,
        PAUSE_JOBS,
        io(b"pause-tube a 1\r\n", PAUSED),
        sleep(1.2),
        io(
            b"stats-tube a\r\n",
            tube_reply(
                "a",
                current_jobs_urgent=1,
                current_jobs_ready=1,
                total_jobs=1,
                current_watching=1,
                current_using=1,
                cmd_pause_tube=1,
            ),
        ),
        io(RWT0, reserved(3, b"a1"), conn="b"),
        io(RWT0, reserved(1, b"b1"), conn="b"),
    ),
]

# beanstalkd 1.12 bug: a connection's timer is dropped if it fires in the same microsecond as
# the job's deadline (conn_timeout tests `deadline_at >= now` and does not reschedule), and then
# the reserved job never times out until that connection does something. So after sleeping past
# a TTR, the cases first send a harmless command on the reserving connection: that reschedules
# its timer, and beanstalkd expires the job before it even writes the reply. A correct server
# has the job back in ready by then anyway.
POKE_A = io(b"list-tube-used\r\n", USING_DEFAULT)
POKE_B = io(b"list-tube-used\r\n", USING_DEFAULT, conn="b")

DEADLINES = [
    case(
        "deadline-soon-immediate",
        io(put(b"x", ttr=1), inserted(1)),
        io(RESERVE, reserved(1, b"x")),
        io(RESERVE, DEADLINE_SOON),
        io(RWT0, DEADLINE_SOON),
        io(b"reserve-with-timeout 10\r\n", DEADLINE_SOON),
        # reserve-job never answers DEADLINE_SOON
        io(put(b"y"), inserted(2)),
        io(b"reserve-job 2\r\n", reserved(2, b"y")),
        # a ready job beats DEADLINE_SOON
        io(put(b"z"), inserted(3)),
        io(RESERVE, reserved(3, b"z")),
        io(b"stats-job 1\r\n", job_reply(id=1, state="reserved", ttr=1, reserves=1)),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_reserved=3,
                cmd_put=3,
                cmd_reserve=3,
                cmd_reserve_with_timeout=2,
                cmd_stats_job=1,
                cmd_stats=1,
                total_jobs=3,
                current_producers=1,
                current_workers=1,
            ),
        ),
    ),
    case(
        "deadline-soon-while-blocked",
        io(put(b"x", ttr=2), inserted(1)),
        io(RESERVE, reserved(1, b"x")),
        io(RESERVE),
        quiet(0.5),
        recv(DEADLINE_SOON, timeout=2.0),
        # the job stays reserved until its TTR is over
        io(b"stats-job 1\r\n", job_reply(id=1, state="reserved", age=1, ttr=2, reserves=1)),
        sleep(1.4),
        POKE_A,
        io(b"stats-job 1\r\n", job_reply(id=1, age=2, ttr=2, reserves=1, timeouts=1)),
    ),
    case(
        "ttr-expiry-returns-job",
        io(put(b"x", ttr=1), inserted(1)),
        io(RESERVE, reserved(1, b"x"), conn="b"),
        sleep(1.4),
        POKE_B,
        io(b"peek-ready\r\n", found(1, b"x")),
        io(b"stats-job 1\r\n", job_reply(id=1, age=1, ttr=1, reserves=1, timeouts=1)),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_urgent=1,
                current_jobs_ready=1,
                cmd_put=1,
                cmd_reserve=1,
                cmd_peek_ready=1,
                cmd_stats_job=1,
                cmd_stats=1,
                cmd_list_tube_used=1,
                job_timeouts=1,
                total_jobs=1,
                current_connections=2,
                total_connections=3,
                current_producers=1,
                current_workers=1,
            ),
        ),
        # b no longer holds it
        io(b"release 1 0 0\r\n", b"NOT_FOUND\r\n", conn="b"),
        io(b"touch 1\r\n", b"NOT_FOUND\r\n", conn="b"),
        io(RESERVE, reserved(1, b"x"), conn="b"),
        io(b"delete 1\r\n", DELETED, conn="b"),
    ),
]

DISCONNECT = [
    case(
        "disconnect-releases-reserved-jobs",
        io(put(b"x") + put(b"y"), inserted(1), inserted(2)),
        io(RESERVE + RESERVE, reserved(1, b"x"), reserved(2, b"y"), conn="b"),
        hangup("b"),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=10, reserves=1)),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_urgent=2,
                current_jobs_ready=2,
                cmd_put=2,
                cmd_reserve=2,
                cmd_stats_job=1,
                cmd_stats=1,
                total_jobs=2,
                current_producers=1,
                total_connections=3,
            ),
        ),
        io(RESERVE, reserved(1, b"x")),
    ),
    case(
        "quit-releases-reserved-jobs",
        io(put(b"x"), inserted(1)),
        io(RESERVE, reserved(1, b"x"), conn="b"),
        io(b"quit\r\n", conn="b"),
        closed(conn="b"),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=10, reserves=1)),
    ),
    case(
        "disconnect-hands-job-to-waiting-client",
        io(put(b"x"), inserted(1)),
        io(RESERVE, reserved(1, b"x"), conn="b"),
        io(RESERVE, conn="c"),
        waiting(1),
        hangup("b"),
        recv(reserved(1, b"x"), conn="c"),
    ),
    case(
        "disconnect-while-waiting",
        io(RESERVE, conn="b"),
        waiting(1),
        hangup("b"),
        waiting(0),
        io(put(b"x"), inserted(1)),
        io(RESERVE, reserved(1, b"x")),
    ),
]

# A client that half-closes (shutdown(SHUT_WR)) while blocked in a reserve gets TIMED_OUT at
# once (beanstalkd sees EPOLLRDHUP), even for a plain `reserve`; then the server still answers
# any pipelined commands and closes. Not in the spec page.
HALF_CLOSE = [
    case(
        "half-close-reserve-with-timeout",
        io(b"reserve-with-timeout 10\r\n"),
        shutdown(),
        recv(TIMED_OUT, timeout=1.5),
        closed(),
    ),
    case(
        "half-close-plain-reserve",
        io(RESERVE),
        quiet(0.2),
        shutdown(),
        recv(TIMED_OUT, timeout=1.5),
        closed(),
    ),
    case(
        "half-close-then-pipelined-commands-answered",
        io(b"reserve-with-timeout 10\r\nlist-tube-used\r\n"),
        shutdown(),
        recv(TIMED_OUT, USING_DEFAULT, timeout=1.5),
        closed(),
    ),
    case(
        "half-close-with-ready-job",
        io(put(b"x"), inserted(1)),
        io(b"reserve-with-timeout 10\r\n", conn="b"),
        shutdown("b"),
        recv(reserved(1, b"x"), conn="b"),
        closed("b"),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=10, reserves=1)),
    ),
    case(
        "half-close-idle-answers-then-closes",
        io(put(b"x") + b"list-tube-used\r\n"),
        shutdown(),
        recv(inserted(1), USING_DEFAULT),
        closed(),
    ),
    case(
        "half-close-incomplete-body",
        io(b"put 0 0 1 5\r\nab", conn="b"),
        shutdown("b"),
        closed("b"),
        io(b"peek 1\r\n", b"NOT_FOUND\r\n"),
        # the job id was taken when the put line parsed, so the abandoned body used up id 1
        io(put(b"x"), inserted(2)),
    ),
]

CASES = ORDER + BLOCKING + PAUSES + DEADLINES + DISCONNECT + HALF_CLOSE


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_reserve(conformance: Conformance, c: Case) -> None:
    conformance.check(c)


def test_pause_cases_span_shards() -> None:
    """The ``PAUSES`` cases run over shards on cluster3 (its names and failover): ``a`` and ``b``
    have different owners, and ``b``'s failover successor is ``a``'s owner."""
    placement = Placement([(f"shard-{i}", 1) for i in range(CLUSTERS[CLUSTER3])])
    a, b = placement.preference("a"), placement.preference("b")
    assert len(a) == len(b) == 2
    assert a[0] != b[0]
    assert b[1] == a[0]
