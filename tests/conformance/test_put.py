"""put: bodies, size limits (-z), EXPECTED_CRLF, BAD_FORMAT variants, drain mode."""

from __future__ import annotations

import pytest

from .harness import (
    BAD_FORMAT,
    DRAINING,
    EXPECTED_CRLF,
    JOB_TOO_BIG,
    NOT_FOUND,
    UNKNOWN_COMMAND,
    USING_DEFAULT,
    Case,
    Conformance,
    case,
    drain,
    found,
    inserted,
    io,
    job_reply,
    list_reply,
    put,
    quiet,
    reserved,
    stats_reply,
    tube_reply,
)

LTU = b"list-tube-used\r\n"
Z10 = ("-z", "10")

BODIES = [
    case(
        "put-basic",
        io(put(b"hello"), inserted(1)),
        io(b"peek 1\r\n", found(1, b"hello")),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=10)),
        io(b"reserve\r\n", reserved(1, b"hello")),
        io(put(b"world"), inserted(2)),
    ),
    case(
        "put-empty-body",
        io(b"put 0 0 1 0\r\n\r\n", inserted(1)),
        io(b"peek 1\r\n", b"FOUND 1 0\r\n\r\n"),
        io(b"reserve\r\n", b"RESERVED 1 0\r\n\r\n"),
    ),
    case(
        "put-body-with-crlf",
        io(b"put 0 0 1 4\r\na\r\nb\r\n", inserted(1)),
        io(b"reserve\r\n", b"RESERVED 1 4\r\na\r\nb\r\n"),
    ),
    case(
        "put-body-binary",
        io(put(bytes(range(256))), inserted(1)),
        io(b"peek 1\r\n", found(1, bytes(range(256)))),
    ),
    case(
        "put-body-looks-like-commands",
        io(put(b"quit\r\nstats"), inserted(1)),
        io(b"peek 1\r\n", found(1, b"quit\r\nstats")),
    ),
    case(
        "put-body-in-pieces",
        io(b"put 0 0 1 5\r\nhel"),
        quiet(0.1),
        io(b"lo\r"),
        quiet(0.1),
        io(b"\n", inserted(1)),
    ),
    case(
        "put-pipelined",
        io(put(b"a") + put(b"bb") + put(b"ccc"), inserted(1), inserted(2), inserted(3)),
        io(b"peek 3\r\n", found(3, b"ccc")),
    ),
    case(
        "put-leading-spaces-and-zeros",
        io(b"put  0  0  1  01\r\nx\r\n", inserted(1)),
        io(b"put 00 000 1 1\r\ny\r\n", inserted(2)),
    ),
    case(
        "put-ttr-0-becomes-1",
        io(b"put 0 0 0 1\r\nx\r\n", inserted(1)),
        io(b"stats-job 1\r\n", job_reply(id=1, ttr=1)),
    ),
    case(
        "put-u32-max-fields",
        io(b"put 4294967295 0 4294967295 1\r\nx\r\n", inserted(1)),
        io(b"stats-job 1\r\n", job_reply(id=1, pri=4294967295, ttr=4294967295)),
        io(b"put 0 4294967295 1 1\r\ny\r\n", inserted(2)),
        io(
            b"stats-job 2\r\n",
            job_reply(id=2, state="delayed", delay=4294967295, ttr=1, time_left=4294967294),
        ),
    ),
    case(
        "put-delayed",
        io(put(b"d", delay=5), inserted(1)),
        io(
            b"stats-job 1\r\n",
            job_reply(id=1, state="delayed", delay=5, ttr=10, time_left=4),
        ),
        io(b"peek-ready\r\n", NOT_FOUND),
        io(b"peek-delayed\r\n", found(1, b"d")),
        io(b"reserve-with-timeout 0\r\n", b"TIMED_OUT\r\n"),
    ),
    case(
        "put-urgent-threshold",
        io(put(b"a", pri=1023) + put(b"b", pri=1024), inserted(1), inserted(2)),
        io(
            b"stats-tube default\r\n",
            tube_reply(
                current_jobs_urgent=1,
                current_jobs_ready=2,
                total_jobs=2,
                current_using=1,
                current_watching=1,
            ),
        ),
    ),
    case(
        "put-into-used-tube",
        io(b"use foo\r\n", b"USING foo\r\n"),
        io(put(b"x"), inserted(1)),
        io(b"stats-job 1\r\n", job_reply(id=1, tube="foo", ttr=10)),
        io(b"list-tubes\r\n", list_reply("default", "foo")),
        io(b"use default\r\n", USING_DEFAULT),
        io(b"peek-ready\r\n", NOT_FOUND),
        io(b"peek 1\r\n", found(1, b"x")),
        io(b"reserve-with-timeout 0\r\n", b"TIMED_OUT\r\n"),
    ),
]

SIZES = [
    case(
        "job-too-big-discards-body",
        io(b"put 0 0 1 11\r\n" + b"x" * 11 + b"\r\n", JOB_TOO_BIG),
        io(LTU, USING_DEFAULT),
        # no id was used up
        io(put(b"0123456789"), inserted(1)),
        flags=Z10,
    ),
    case(
        "job-too-big-with-trailing-garbage",
        io(b"put 0 0 1 11 garbage\r\n" + b"x" * 11 + b"\r\n", JOB_TOO_BIG),
        io(LTU, USING_DEFAULT),
        flags=Z10,
        shared=True,
    ),
    case(
        "job-too-big-discards-exactly-n-plus-2",
        io(b"put 0 0 1 11\r\n" + b"y" * 13 + LTU, JOB_TOO_BIG, USING_DEFAULT),
        flags=Z10,
        shared=True,
    ),
    case(
        "job-too-big-body-containing-commands",
        io(b"put 0 0 1 20\r\nlist-tube-used\r\nabcd\r\n" + LTU, JOB_TOO_BIG, USING_DEFAULT),
        flags=Z10,
        shared=True,
    ),
    # The reply is sent only after the whole body has been thrown away.
    case(
        "job-too-big-waits-for-body",
        io(b"put 0 0 1 11\r\n"),
        quiet(0.2),
        io(b"x" * 12),
        quiet(0.1),
        io(b"\n", JOB_TOO_BIG),
        io(LTU, USING_DEFAULT),
        flags=Z10,
        shared=True,
    ),
    case(
        "z-0-allows-only-empty-bodies",
        io(b"put 0 0 1 0\r\n\r\n", inserted(1)),
        io(b"put 0 0 1 1\r\nx\r\n", JOB_TOO_BIG),
        flags=("-z", "0"),
    ),
    case(
        "default-max-job-size",
        io(b"put 0 0 1 65535\r\n" + b"a" * 65535 + b"\r\n", inserted(1)),
        io(b"put 0 0 1 65536\r\n" + b"b" * 65536 + b"\r\n", JOB_TOO_BIG),
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_urgent=1,
                current_jobs_ready=1,
                cmd_put=2,
                cmd_stats=1,
                total_jobs=1,
                current_producers=1,
            ),
        ),
    ),
    case(
        "z-flag-shows-in-stats",
        io(b"stats\r\n", stats_reply(cmd_stats=1, max_job_size=100)),
        flags=("-z", "100"),
    ),
    case(
        "z-flag-clamped-to-1gib",
        io(b"stats\r\n", stats_reply(cmd_stats=1, max_job_size=1073741824)),
        flags=("-z", "2000000000"),
    ),
]

CRLF = [
    case(
        "expected-crlf-uses-up-an-id",
        io(b"put 0 0 1 1\r\nabc", EXPECTED_CRLF),
        io(put(b"x"), inserted(2)),
        io(b"peek 1\r\n", NOT_FOUND),
    ),
    case(
        "expected-crlf-then-next-line",
        io(b"put 0 0 1 1\r\nab\n" + LTU, EXPECTED_CRLF, USING_DEFAULT),
    ),
    # The declared length ends the body; the real "\r\n" after it is an empty command line.
    case(
        "expected-crlf-body-longer-than-declared",
        io(b"put 0 0 1 1\r\nabc\r\n", EXPECTED_CRLF, UNKNOWN_COMMAND),
        io(put(b"z"), inserted(2)),
    ),
    case(
        "expected-crlf-leftover-newline-joins-next-line",
        io(b"put 0 0 1 2\r\nab\n\r\n" + LTU, EXPECTED_CRLF, UNKNOWN_COMMAND),
    ),
    case(
        "expected-crlf-body-shorter-than-declared",
        io(b"put 0 0 1 5\r\nab\r\n" + b"list\r\n", EXPECTED_CRLF, UNKNOWN_COMMAND),
    ),
]

BAD = [
    case("put-missing-bytes", io(b"put 0 0 1\r\n", BAD_FORMAT), shared=True),
    case("put-no-fields", io(b"put \r\n", BAD_FORMAT), shared=True),
    # Trailing garbage: BAD_FORMAT, and the body is then read as a command line.
    case(
        "put-trailing-space", io(b"put 0 0 1 1 \r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND), shared=True
    ),
    case(
        "put-trailing-letter",
        io(b"put 0 0 1 1x\r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND),
        shared=True,
    ),
    case(
        "put-five-fields", io(b"put 0 0 1 1 2\r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND), shared=True
    ),
    case(
        "put-bad-format-body-is-a-command",
        io(b"put 0 0 1 14 \r\nlist-tube-used\r\n", BAD_FORMAT, USING_DEFAULT),
        shared=True,
    ),
    case("put-minus-pri", io(b"put -1 0 1 1\r\n", BAD_FORMAT), shared=True),
    case("put-plus-pri", io(b"put +1 0 1 1\r\n", BAD_FORMAT), shared=True),
    case("put-minus-bytes", io(b"put 0 0 1 -1\r\n", BAD_FORMAT), shared=True),
    case("put-pri-overflow", io(b"put 4294967296 0 1 1\r\n", BAD_FORMAT), shared=True),
    case("put-delay-overflow", io(b"put 0 4294967296 1 1\r\n", BAD_FORMAT), shared=True),
    case("put-ttr-overflow", io(b"put 0 0 4294967296 1\r\n", BAD_FORMAT), shared=True),
    case("put-bytes-overflow", io(b"put 0 0 1 4294967296\r\n", BAD_FORMAT), shared=True),
    case("put-tab-separator", io(b"put 0\t0 1 1\r\n", BAD_FORMAT), shared=True),
    case("put-letters", io(b"put a b c d\r\n", BAD_FORMAT), shared=True),
    case(
        "put-then-ids-unaffected-by-bad-format",
        io(b"put 0 0 1\r\n", BAD_FORMAT),
        io(b"put 0 0 1 1 \r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND),
        io(put(b"ok"), inserted(1)),
    ),
    # cmd-put counts a put once its four numbers parse, whatever happens next.
    case(
        "put-cmd-put-counter",
        io(b"put 0 0 1\r\n", BAD_FORMAT),  # not counted
        io(b"put 0 0 1 1 \r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND),  # counted
        io(b"put 0 0 1 11 x\r\n" + b"z" * 13, JOB_TOO_BIG),  # counted
        io(b"put 0 0 1 1\r\nabc", EXPECTED_CRLF),  # counted, uses up id 1
        io(put(b"ok"), inserted(2)),  # counted
        io(
            b"stats\r\n",
            stats_reply(
                current_jobs_urgent=1,
                current_jobs_ready=1,
                cmd_put=4,
                cmd_stats=1,
                total_jobs=1,
                max_job_size=10,
                current_producers=1,
            ),
        ),
        flags=Z10,
    ),
    case(
        "put-rejected-is-not-a-producer",
        io(b"put 0 0 1 1 \r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND),
        io(b"put 0 0 1 11\r\n" + b"z" * 13, JOB_TOO_BIG),
        io(b"stats\r\n", stats_reply(cmd_put=2, cmd_stats=1, max_job_size=10)),
        flags=Z10,
    ),
    case(
        "put-expected-crlf-is-a-producer",
        io(b"put 0 0 1 1\r\nabc", EXPECTED_CRLF),
        io(b"stats\r\n", stats_reply(cmd_put=1, cmd_stats=1, current_producers=1)),
    ),
]

DRAIN = [
    case(
        "drain-mode",
        io(put(b"a"), inserted(1)),
        drain(),
        io(put(b"b"), DRAINING),
        # EXPECTED_CRLF is checked before drain mode
        io(b"put 0 0 1 1\r\nabc", EXPECTED_CRLF),
        io(b"put 0 0 1 1 \r\nx\r\n", BAD_FORMAT, UNKNOWN_COMMAND),
        io(put(b"c"), DRAINING),
        io(b"reserve\r\n", reserved(1, b"a")),
        io(b"delete 1\r\n", b"DELETED\r\n"),
        io(
            b"stats\r\n",
            stats_reply(
                cmd_put=5,
                cmd_reserve=1,
                cmd_delete=1,
                cmd_stats=1,
                total_jobs=1,
                current_producers=1,
                current_workers=1,
                draining="true",
            ),
        ),
    ),
    case(
        "drain-mode-job-too-big",
        drain(),
        io(b"put 0 0 1 11\r\n" + b"x" * 13, JOB_TOO_BIG),
        flags=Z10,
    ),
]

CASES = BODIES + SIZES + CRLF + BAD + DRAIN


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_put(conformance: Conformance, c: Case) -> None:
    conformance.check(c)
