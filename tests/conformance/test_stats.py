"""stats, stats-job, stats-tube: key order, values, and which replies count in cmd-*."""

from __future__ import annotations

import pytest

from .harness import (
    BAD_FORMAT,
    BURIED,
    DEADLINE_SOON,
    DELETED,
    KICKED,
    NOT_FOUND,
    NOT_IGNORED,
    PAUSED,
    RELEASED,
    TIMED_OUT,
    TOUCHED,
    UNKNOWN_COMMAND,
    USING_DEFAULT,
    Case,
    Conformance,
    case,
    found,
    hangup,
    inserted,
    io,
    job_reply,
    list_reply,
    put,
    reserved,
    stats_reply,
    tube_reply,
    waiting,
)

# Written out by hand (volatile values blanked), to check the helpers as well as the servers.
FRESH_STATS = (
    b"OK 888\r\n---\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 0\ncurrent-jobs-reserved: 0\n"
    b"current-jobs-delayed: 0\ncurrent-jobs-buried: 0\ncmd-put: 0\ncmd-peek: 0\n"
    b"cmd-peek-ready: 0\ncmd-peek-delayed: 0\ncmd-peek-buried: 0\ncmd-reserve: 0\n"
    b"cmd-reserve-with-timeout: 0\ncmd-delete: 0\ncmd-release: 0\ncmd-use: 0\ncmd-watch: 0\n"
    b"cmd-ignore: 0\ncmd-bury: 0\ncmd-kick: 0\ncmd-touch: 0\ncmd-stats: 1\ncmd-stats-job: 0\n"
    b"cmd-stats-tube: 0\ncmd-list-tubes: 0\ncmd-list-tube-used: 0\ncmd-list-tubes-watched: 0\n"
    b"cmd-pause-tube: 0\njob-timeouts: 0\ntotal-jobs: 0\nmax-job-size: 65535\ncurrent-tubes: 1\n"
    b"current-connections: 1\ncurrent-producers: 0\ncurrent-workers: 0\ncurrent-waiting: 0\n"
    b"total-connections: 2\npid: X\nversion: X\nrusage-utime: X\nrusage-stime: X\nuptime: X\n"
    b"binlog-oldest-index: 0\nbinlog-current-index: 0\nbinlog-records-migrated: 0\n"
    b"binlog-records-written: 0\nbinlog-max-size: 10485760\ndraining: false\nid: X\n"
    b"hostname: X\nos: X\nplatform: X\n\r\n"
)
BURIED_JOB_STATS = (
    b"OK 145\r\n---\nid: 1\ntube: default\nstate: buried\npri: 7\nage: 0\ndelay: 0\nttr: 10\n"
    b"time-left: 0\nfile: 0\nreserves: 2\ntimeouts: 0\nreleases: 1\nburies: 1\nkicks: 0\n\r\n"
)

FORMAT = [
    case("stats-fresh", io(b"stats\r\n", FRESH_STATS)),
    case("stats-fresh-helper", io(b"stats\r\n", stats_reply(cmd_stats=1))),
    case(
        "stats-job-buried",
        io(put(b"x", pri=3), inserted(1)),
        io(b"reserve\r\nrelease 1 5 0\r\n", reserved(1, b"x"), RELEASED),
        io(b"reserve\r\nbury 1 7\r\n", reserved(1, b"x"), BURIED),
        io(b"stats-job 1\r\n", BURIED_JOB_STATS),
        io(b"kick 1\r\n", b"KICKED 1\r\n"),
        io(
            b"stats-job 1\r\n",
            job_reply(id=1, pri=7, ttr=10, reserves=2, releases=1, buries=1, kicks=1),
        ),
        io(b"stats-job 2\r\n", NOT_FOUND),
    ),
    case(
        "stats-job-of-job-reserved-elsewhere",
        io(b"use other\r\n" + put(b"x", ttr=60), b"USING other\r\n", inserted(1)),
        io(b"watch other\r\nreserve\r\n", b"WATCHING 2\r\n", reserved(1, b"x"), conn="b"),
        io(
            b"stats-job 1\r\n",
            job_reply(id=1, tube="other", state="reserved", ttr=60, time_left=59, reserves=1),
        ),
    ),
    case(
        "stats-tube-all-states",
        io(b"use t\r\n", b"USING t\r\n"),
        io(
            put(b"u", pri=1)
            + put(b"n", pri=2000)
            + put(b"r", pri=5)
            + put(b"b", pri=6)
            + put(b"d", pri=7, delay=100),
            inserted(1),
            inserted(2),
            inserted(3),
            inserted(4),
            inserted(5),
        ),
        io(b"watch t\r\nignore default\r\n", b"WATCHING 2\r\n", b"WATCHING 1\r\n", conn="b"),
        io(b"reserve\r\nreserve\r\n", reserved(1, b"u"), reserved(3, b"r"), conn="b"),
        io(b"bury 3 0\r\n", BURIED, conn="b"),
        io(b"delete 1\r\n", DELETED, conn="b"),
        io(b"reserve\r\n", reserved(4, b"b"), conn="b"),
        io(b"watch t\r\n", b"WATCHING 2\r\n", conn="c"),
        # paused, so a client can wait on it while it holds a ready job
        io(b"pause-tube t 100\r\n", PAUSED),
        io(b"watch t\r\nignore default\r\n", b"WATCHING 2\r\n", b"WATCHING 1\r\n", conn="e"),
        io(b"reserve\r\n", conn="e"),
        waiting(1, b"t"),
        io(
            b"stats-tube t\r\n",
            tube_reply(
                "t",
                current_jobs_urgent=0,
                current_jobs_ready=1,
                current_jobs_reserved=1,
                current_jobs_delayed=1,
                current_jobs_buried=1,
                total_jobs=5,
                current_using=1,
                current_watching=3,
                current_waiting=1,
                cmd_delete=1,
                cmd_pause_tube=1,
                pause=100,
                pause_time_left=99,
            ),
        ),
        # urgent counts ready jobs only
        io(b"kick 1\r\n", b"KICKED 1\r\n"),
        io(
            b"stats-tube t\r\n",
            tube_reply(
                "t",
                current_jobs_urgent=1,
                current_jobs_ready=2,
                current_jobs_reserved=1,
                current_jobs_delayed=1,
                total_jobs=5,
                current_using=1,
                current_watching=3,
                current_waiting=1,
                cmd_delete=1,
                cmd_pause_tube=1,
                pause=100,
                pause_time_left=99,
            ),
        ),
    ),
]

# Which replies count in the cmd-* counters: a command counts once its arguments parse, so
# NOT_FOUND, TIMED_OUT, DEADLINE_SOON and NOT_IGNORED count, BAD_FORMAT and UNKNOWN_COMMAND do
# not (except pause-tube, see test_tubes, and put's JOB_TOO_BIG / trailing garbage, see test_put).
COUNTERS = [
    case(
        "stats-every-command-once",
        io(put(b"a") + put(b"b", delay=100), inserted(1), inserted(2)),
        io(b"peek 1\r\n", found(1, b"a")),
        io(b"peek-ready\r\n", found(1, b"a")),
        io(b"peek-delayed\r\n", found(2, b"b")),
        io(b"peek-buried\r\n", NOT_FOUND),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"release 1 0 0\r\n", RELEASED),
        io(b"reserve-with-timeout 0\r\n", reserved(1, b"a")),
        io(b"touch 1\r\n", TOUCHED),
        io(b"bury 1 0\r\n", BURIED),
        io(b"kick 1\r\n", b"KICKED 1\r\n"),
        io(b"kick-job 2\r\n", KICKED),
        io(b"reserve-job 2\r\n", reserved(2, b"b")),
        io(b"delete 2\r\n", DELETED),
        io(b"use foo\r\n", b"USING foo\r\n"),
        io(b"watch foo\r\n", b"WATCHING 2\r\n"),
        io(b"ignore foo\r\n", b"WATCHING 1\r\n"),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=10, reserves=2, releases=1, buries=1, kicks=1)),
        io(b"stats-tube foo\r\n", tube_reply("foo", current_using=1)),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"list-tube-used\r\n", b"USING foo\r\n"),
        io(b"list-tubes-watched\r\n", list_reply("default")),
        io(b"pause-tube foo 0\r\n", PAUSED),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_urgent=1,
                current_jobs_ready=1,
                cmd_put=2,
                cmd_peek=1,
                cmd_peek_ready=1,
                cmd_peek_delayed=1,
                cmd_peek_buried=1,
                cmd_reserve=1,
                cmd_reserve_with_timeout=1,
                cmd_delete=1,
                cmd_release=1,
                cmd_use=1,
                cmd_watch=1,
                cmd_ignore=1,
                cmd_bury=1,
                cmd_kick=1,
                cmd_touch=1,
                cmd_stats=1,
                cmd_stats_job=1,
                cmd_stats_tube=1,
                cmd_list_tubes=1,
                cmd_list_tube_used=1,
                cmd_list_tubes_watched=1,
                cmd_pause_tube=1,
                total_jobs=2,
                current_tubes=2,
                current_producers=1,
                current_workers=1,
            ),
        ),
    ),
    case(
        "stats-not-found-counts",
        io(
            b"peek 9\r\ndelete 9\r\nrelease 9 0 0\r\nbury 9 0\r\ntouch 9\r\nstats-job 9\r\n"
            b"stats-tube nope\r\nkick-job 9\r\nreserve-job 9\r\npeek-ready\r\npeek-delayed\r\n"
            b"peek-buried\r\npause-tube nope 1\r\n",
            *(NOT_FOUND,) * 13,
        ),
        io(b"reserve-with-timeout 0\r\nignore default\r\n", TIMED_OUT, NOT_IGNORED),
        io(
            b"stats\r\n",
            stats_reply(
                cmd_peek=1,
                cmd_peek_ready=1,
                cmd_peek_delayed=1,
                cmd_peek_buried=1,
                cmd_reserve_with_timeout=1,
                cmd_delete=1,
                cmd_release=1,
                cmd_ignore=1,
                cmd_bury=1,
                cmd_touch=1,
                cmd_stats=1,
                cmd_stats_job=1,
                cmd_stats_tube=1,
                cmd_pause_tube=1,
                current_workers=1,
            ),
        ),
    ),
    case(
        "stats-bad-format-does-not-count",
        io(
            b"peek x\r\npeek-ready \r\npeek-delayed \r\npeek-buried \r\nreserve \r\n"
            b"reserve-with-timeout 99999999999999999999\r\nreserve-job x\r\ndelete x\r\n"
            b"release 1 x 0\r\nbury 1\r\nkick x\r\nkick-job x\r\ntouch x\r\nstats \r\n"
            b"stats-job x\r\nstats-tube -x\r\nuse -x\r\nwatch -x\r\nignore -x\r\n"
            b"list-tubes \r\nlist-tube-used \r\nlist-tubes-watched \r\npause-tube x\r\n"
            b"put 0 0 1\r\n",
            *(BAD_FORMAT,) * 24,
        ),
        io(b"\r\nSTATS\r\nfoo\r\n", UNKNOWN_COMMAND, UNKNOWN_COMMAND, UNKNOWN_COMMAND),
        io(b"stats\r\n", stats_reply(cmd_stats=1)),
    ),
    case(
        "stats-deadline-soon-counts",
        io(put(b"x", ttr=1) + b"reserve\r\n", inserted(1), reserved(1, b"x")),
        io(b"reserve\r\nreserve-with-timeout 5\r\n", DEADLINE_SOON, DEADLINE_SOON),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_reserved=1,
                cmd_put=1,
                cmd_reserve=2,
                cmd_reserve_with_timeout=1,
                cmd_stats=1,
                total_jobs=1,
                current_producers=1,
                current_workers=1,
            ),
        ),
    ),
    case(
        "stats-connections",
        io(put(b"x"), inserted(1), conn="p"),
        io(b"reserve-with-timeout 0\r\n", reserved(1, b"x"), conn="w"),
        # reserve-job makes a worker only when it reserves something
        io(b"reserve-job 1\r\n", NOT_FOUND, conn="j"),
        io(b"list-tube-used\r\n", USING_DEFAULT, conn="i"),
        io(b"reserve\r\n", conn="r"),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_reserved=1,
                cmd_put=1,
                cmd_reserve=1,
                cmd_reserve_with_timeout=1,
                cmd_list_tube_used=1,
                cmd_stats=1,
                total_jobs=1,
                current_connections=6,
                current_producers=1,
                current_workers=2,
                current_waiting=1,
                total_connections=7,
            ),
        ),
        hangup("p"),
        hangup("w"),
        hangup("r"),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_urgent=1,
                current_jobs_ready=1,
                cmd_put=1,
                cmd_reserve=1,
                cmd_reserve_with_timeout=1,
                cmd_list_tube_used=1,
                cmd_stats=2,
                total_jobs=1,
                current_connections=3,
                total_connections=7,
            ),
        ),
    ),
]

CASES = FORMAT + COUNTERS


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_stats(conformance: Conformance, c: Case) -> None:
    conformance.check(c)
