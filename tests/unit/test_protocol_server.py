"""CommandReader, the server-role parser: exact bytes in, exact events out.

Every expectation here is what beanstalkd 1.12's prot.c does with the same bytes (which_cmd,
read_u32/read_u64, read_tube_name, strtol/strtoul, scan_line_end on the 224-byte line buffer,
fill_extra_data and the bit bucket); the odd corners were checked on a real beanstalkd 1.12.
"""

from __future__ import annotations

import pytest

from beanrouter.protocol import (
    BAD_FORMAT,
    CLOSED,
    DEFAULT_MAX_JOB_SIZE,
    EXPECTED_CRLF,
    JOB_TOO_BIG,
    LINE_MAX,
    NEED_DATA,
    U32_MAX,
    U64_MAX,
    UNKNOWN_COMMAND,
    Bury,
    Command,
    CommandReader,
    Delete,
    Event,
    Ignore,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    PutStarted,
    Quit,
    Rejected,
    Release,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Watch,
)

BAD = Rejected(BAD_FORMAT)
UNKNOWN = Rejected(UNKNOWN_COMMAND)
PUT_BAD = Rejected(BAD_FORMAT, counted="cmd-put")
PAUSE_BAD = Rejected(BAD_FORMAT, counted="cmd-pause-tube")
TOO_BIG = Rejected(JOB_TOO_BIG, counted="cmd-put")
TOO_BIG_LATE = Rejected(JOB_TOO_BIG)
NO_CRLF = Rejected(EXPECTED_CRLF, counted="cmd-put", burns_id=True)
NO_CRLF_LATE = Rejected(EXPECTED_CRLF)

NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
NAME_200 = (NAME_CHARS[10:] * 4)[:200]
NAME_201 = NAME_200 + b"x"


def drain(reader: CommandReader) -> list[Event]:
    """Every event up to and including the first NEED_DATA or CLOSED."""
    out: list[Event] = []
    while True:
        event = reader.next_event()
        out.append(event)
        if event is NEED_DATA or event is CLOSED:
            return out


def parse(data: bytes, *, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> list[Event]:
    """The events for ``data`` fed in one piece, without the final NEED_DATA."""
    reader = CommandReader(max_job_size)
    reader.receive_data(data)
    events = drain(reader)
    assert events[-1] is NEED_DATA
    return events[:-1]


def one(line: bytes) -> Event:
    """The single event for ``line`` + CRLF."""
    events = parse(line + b"\r\n")
    assert len(events) == 1, events
    return events[0]


# -- every command's valid forms --------------------------------------------------------------

VALID: list[tuple[bytes, Command]] = [
    (b"put 0 0 0 0\r\n", Put(0, 0, 0, b"")),
    (b"use default", Use("default")),
    (b"reserve", Reserve()),
    (b"reserve-with-timeout 0", ReserveWithTimeout(0)),
    (b"reserve-with-timeout 30", ReserveWithTimeout(30)),
    (b"reserve-job 7", ReserveJob(7)),
    (b"delete 1", Delete(1)),
    (b"release 1 2 3", Release(1, 2, 3)),
    (b"bury 4 5", Bury(4, 5)),
    (b"touch 9", Touch(9)),
    (b"watch foo", Watch("foo")),
    (b"ignore foo", Ignore("foo")),
    (b"peek 3", Peek(3)),
    (b"peek 0", Peek(0)),
    (b"peek-ready", PeekReady()),
    (b"peek-delayed", PeekDelayed()),
    (b"peek-buried", PeekBuried()),
    (b"kick 10", Kick(10)),
    (b"kick-job 11", KickJob(11)),
    (b"stats-job 12", StatsJob(12)),
    (b"stats-tube default", StatsTube("default")),
    (b"stats", Stats()),
    (b"list-tubes", ListTubes()),
    (b"list-tube-used", ListTubeUsed()),
    (b"list-tubes-watched", ListTubesWatched()),
    (b"pause-tube default 60", PauseTube("default", 60)),
    (b"quit", Quit()),
]


@pytest.mark.parametrize(("line", "expected"), VALID, ids=[v[0].decode() for v in VALID])
def test_valid_command(line: bytes, expected: Command) -> None:
    data = line if line.endswith(b"\r\n") else line + b"\r\n"
    if isinstance(expected, Put):
        data += expected.body + b"\r\n"
    assert parse(data) == [expected]


def test_valid_commands_pipelined() -> None:
    stream = b"".join(cmd.encode() for _, cmd in VALID)
    assert parse(stream) == [cmd for _, cmd in VALID]


def test_every_command_type_is_covered() -> None:
    from beanrouter.protocol import COMMAND_TYPES

    assert {type(cmd) for _, cmd in VALID} == set(COMMAND_TYPES)


# -- prefix matching (which_cmd) --------------------------------------------------------------

UNKNOWN_LINES = [
    b"",
    b" stats",
    b"STATS",
    b"Stats",
    b"QUIT",
    b"stat",
    b"list-tube",
    b"pause-tub",
    b"\tstats",
    b"\nstats",
    b"sta\nts",
    b"xyz",
    # verbs whose prefix ends in a space match nothing without it
    b"put",
    b"peek",
    b"delete",
    b"release",
    b"bury",
    b"kick",
    b"kick-job",
    b"touch",
    b"use",
    b"watch",
    b"ignore",
    b"peek\t1",
    b"kick\t3",
    b"use\tfoo",
    b"delete\t1",
    b"kick-jobs 1",
]


@pytest.mark.parametrize("line", UNKNOWN_LINES)
def test_unknown_command(line: bytes) -> None:
    assert one(line) == UNKNOWN


BARE: list[tuple[bytes, Command]] = [
    (b"reserve", Reserve()),
    (b"peek-ready", PeekReady()),
    (b"peek-delayed", PeekDelayed()),
    (b"peek-buried", PeekBuried()),
    (b"stats", Stats()),
    (b"list-tubes", ListTubes()),
    (b"list-tube-used", ListTubeUsed()),
    (b"list-tubes-watched", ListTubesWatched()),
]


@pytest.mark.parametrize(("word", "cmd"), BARE, ids=[b[0].decode() for b in BARE])
@pytest.mark.parametrize("tail", [b" ", b"x", b" x", b"\n", b"  ", b"1", b"-", b" 1"])
def test_bare_command_with_trailing_bytes(word: bytes, cmd: Command, tail: bytes) -> None:
    assert one(word) == cmd
    assert one(word + tail) == BAD


@pytest.mark.parametrize(
    "line",
    [
        # these fall through to a shorter bare prefix, which then rejects the extra bytes
        b"reserve-with-timeout",  # -> reserve
        b"reserve-with-timeout\t5",  # -> reserve
        b"reserve-job",  # -> reserve
        b"reserve-jobs 1",  # -> reserve
        b"stats-job",  # -> stats
        b"stats-tube",  # -> stats
        b"stats-jobx 1",  # -> stats
        b"stats-tube\tfoo",  # -> stats
        b"peek-readyx",
        b"peek-delayed ",
        b"list-tubes-watchedx",
        b"list-tube-usedx",
        b"list-tubesx",
        b"reservex",
        b"statsx",
        b"peek-ready ",
    ],
)
def test_prefix_falls_through_to_bare_command(line: bytes) -> None:
    assert one(line) == BAD


@pytest.mark.parametrize("line", [b"quit", b"quit ", b"quitxyz", b"quit\n", b"quit 1 2 3"])
def test_quit_is_a_prefix_match(line: bytes) -> None:
    assert one(line) == Quit()


def test_events_after_quit_are_still_parsed() -> None:
    # Closing is the server's business; the reader just reports what it read.
    assert parse(b"quit\r\nstats\r\n") == [Quit(), Stats()]


# -- job-id commands (read_u64 to the end of the line) -----------------------------------------

ID_COMMANDS: list[tuple[bytes, type[Peek | ReserveJob | Delete | Touch | KickJob | StatsJob]]] = [
    (b"peek", Peek),
    (b"reserve-job", ReserveJob),
    (b"delete", Delete),
    (b"touch", Touch),
    (b"kick-job", KickJob),
    (b"stats-job", StatsJob),
]

ID_GOOD: list[tuple[bytes, int]] = [
    (b"0", 0),
    (b"1", 1),
    (b"00042", 42),
    (b" 1", 1),
    (b"     1", 1),
    (b"4294967296", 4294967296),
    (b"18446744073709551615", U64_MAX),
    (b"000000000000000000000000000018446744073709551615", U64_MAX),
]
ID_BAD = [
    b"",
    b" ",
    b"+1",
    b"-1",
    b"-0",
    b"x",
    b"1x",
    b"1 ",
    b"1 2",
    b"\t1",
    b"1\t",
    b"1\n",
    b"\n1",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"0x10",
    b"1.0",
    b"1e3",
]


@pytest.mark.parametrize(("verb", "cls"), ID_COMMANDS, ids=[c[0].decode() for c in ID_COMMANDS])
def test_job_id_commands(
    verb: bytes, cls: type[Peek | ReserveJob | Delete | Touch | KickJob | StatsJob]
) -> None:
    for text, value in ID_GOOD:
        assert one(verb + b" " + text) == cls(value), text
    for text in ID_BAD:
        assert one(verb + b" " + text) == BAD, text


# -- release and bury -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"release 1 2 3", Release(1, 2, 3)),
        (b"release  1  2  3", Release(1, 2, 3)),
        (b"release 18446744073709551615 4294967295 4294967295", Release(U64_MAX, U32_MAX, U32_MAX)),
        (b"release 0 0 0", Release(0, 0, 0)),
        (b"release 18446744073709551616 0 0", BAD),
        (b"release 1 4294967296 0", BAD),
        (b"release 1 0 4294967296", BAD),
        (b"release 1 2", BAD),
        (b"release 1", BAD),
        (b"release ", BAD),
        (b"release 1 2 3 ", BAD),
        (b"release 1 2 3 4", BAD),
        (b"release 1 2 3x", BAD),
        (b"release 1 2x 3", BAD),
        (b"release 1x 2 3", BAD),
        (b"release +1 2 3", BAD),
        (b"release 1 -2 3", BAD),
        (b"release 1 2 +3", BAD),
        (b"release 1\t2 3", BAD),
        (b"release", UNKNOWN),
        (b"bury 1 2", Bury(1, 2)),
        (b"bury   1   2", Bury(1, 2)),
        (b"bury 18446744073709551615 4294967295", Bury(U64_MAX, U32_MAX)),
        (b"bury 1 4294967296", BAD),
        (b"bury 18446744073709551616 1", BAD),
        (b"bury 1", BAD),
        (b"bury 1 ", BAD),
        (b"bury 1 2 ", BAD),
        (b"bury 1 2 3", BAD),
        (b"bury -1 2", BAD),
        (b"bury 1 +2", BAD),
        (b"bury", UNKNOWN),
    ],
)
def test_release_and_bury(line: bytes, expected: Event) -> None:
    assert one(line) == expected


# -- reserve-with-timeout: strtol, then narrowed to a C int ------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"0", 0),
        (b"5", 5),
        (b"-1", -1),  # blocks forever in 1.12
        (b"-5", -5),
        (b"+7", 7),
        (b"  12", 12),
        (b" \t\v\f\n3", 3),  # strtol skips isspace(), not only ' '
        (b"5abc", 5),  # trailing bytes ignored
        (b"5 6", 5),
        (b"abc", 0),  # no digits: 0
        (b"", 0),
        (b"-", 0),
        (b"+", 0),
        (b"- 1", 0),
        (b"0x10", 0),
        (b"2147483647", 2147483647),
        (b"2147483648", -2147483648),  # long -> int truncation
        (b"4294967295", -1),
        (b"4294967296", 0),  # real server: TIMED_OUT at once
        (b"4294967301", 5),
        (b"-2147483649", 2147483647),
        (b"9223372036854775807", -1),
        (b"-9223372036854775808", 0),  # real server: TIMED_OUT at once
    ],
)
def test_reserve_with_timeout(arg: bytes, expected: int) -> None:
    assert one(b"reserve-with-timeout " + arg) == ReserveWithTimeout(expected)


@pytest.mark.parametrize(
    "arg", [b"9223372036854775808", b"-9223372036854775809", b"99999999999999999999999"]
)
def test_reserve_with_timeout_overflow(arg: bytes) -> None:
    assert one(b"reserve-with-timeout " + arg) == BAD  # strtol sets ERANGE


# -- kick: strtoul, then narrowed to a C unsigned int ------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"0", 0),
        (b"5", 5),
        (b"+3", 3),
        (b"  7", 7),
        (b"\t7", 7),
        (b"5x", 5),
        (b"5 ", 5),
        (b"5 6", 5),
        (b"-1", U32_MAX),  # kicks everything
        (b"-0", 0),
        (b"4294967295", U32_MAX),
        (b"4294967296", 0),
        (b"4294967297", 1),
        (b"18446744073709551615", U32_MAX),
        (b"-18446744073709551615", 1),
    ],
)
def test_kick(arg: bytes, expected: int) -> None:
    assert one(b"kick " + arg) == Kick(expected)


@pytest.mark.parametrize(
    "arg", [b"", b" ", b"x", b"-", b"+", b"- 1", b"18446744073709551616", b"-18446744073709551616"]
)
def test_kick_bad(arg: bytes) -> None:
    assert one(b"kick " + arg) == BAD


# -- tube names -------------------------------------------------------------------------------

TUBE_COMMANDS: list[tuple[bytes, type[Use | Watch | Ignore | StatsTube]]] = [
    (b"use", Use),
    (b"watch", Watch),
    (b"ignore", Ignore),
    (b"stats-tube", StatsTube),
]

GOOD_NAMES = [
    b"default",
    b"a",
    b"0",
    NAME_200,
    NAME_CHARS[:52],
    b"a-",
    b"a-b+c/d;e.f$g_h(i)j",
    b"+plus",
    b"(paren)",
    b"$",
    b"_",
    b"..",
    b"/",
]
BAD_NAMES = [
    b"",
    NAME_201,
    b"-a",
    b"-",
    b" foo",
    b"foo ",
    b"fo o",
    b"  foo",
    b"foo!",
    b"a*b",
    b"foo\n",
    b"\nfoo",
    b"\tfoo",
    b"caf\xc3\xa9",
    b"a,b",
    b"a:b",
    b"a\\b",
]


@pytest.mark.parametrize(("verb", "cls"), TUBE_COMMANDS, ids=[c[0].decode() for c in TUBE_COMMANDS])
def test_tube_name_commands(verb: bytes, cls: type[Use | Watch | Ignore | StatsTube]) -> None:
    for name in GOOD_NAMES:
        assert one(verb + b" " + name) == cls(name.decode()), name
    for name in BAD_NAMES:
        assert one(verb + b" " + name) == BAD, name


def test_every_byte_in_a_tube_name() -> None:
    for byte in range(256):
        if byte == 0x0D:
            continue  # a bare '\r' would stop the line from ending (tested below)
        name = b"a" + bytes([byte]) + b"b"
        expected = Use(name.decode()) if byte in NAME_CHARS else BAD
        assert one(b"use " + name) == expected, byte


# -- pause-tube: read_tube_name, read_duration, then the name check (counted) ------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"pause-tube foo 10", PauseTube("foo", 10)),
        (b"pause-tube foo 0", PauseTube("foo", 0)),
        (b"pause-tube foo 4294967295", PauseTube("foo", U32_MAX)),
        (b"pause-tube   foo   1", PauseTube("foo", 1)),  # spaces skipped before both fields
        (b"pause-tubefoo 1", PauseTube("foo", 1)),  # no space needed after the verb
        (b"pause-tube12 3", PauseTube("12", 3)),
        (b"pause-tube 12 3", PauseTube("12", 3)),
        (b"pause-tube " + NAME_200 + b" 5", PauseTube(NAME_200.decode(), 5)),
        (b"pause-tube a-b 5", PauseTube("a-b", 5)),
        # name parsed and delay parsed, then the name check fails: cmd-pause-tube is counted
        (b"pause-tube -foo 1", PAUSE_BAD),
        (b"pause-tube - 1", PAUSE_BAD),
        (b"pause-tube " + NAME_201 + b" 5", PAUSE_BAD),
        # these fail before the counter
        (b"pause-tube", BAD),
        (b"pause-tube ", BAD),
        (b"pause-tube foo", BAD),
        (b"pause-tube foo ", BAD),
        (b"pause-tube foo1", BAD),  # digits are name characters: no delay left
        (b"pause-tube 1", BAD),
        (b"pause-tube foo 1 ", BAD),
        (b"pause-tube foo 1 2", BAD),
        (b"pause-tube foo -1", BAD),
        (b"pause-tube foo +1", BAD),
        (b"pause-tube foo 4294967296", BAD),
        (b"pause-tube foo!x 1", BAD),
        (b"pause-tube !foo 1", BAD),
        (b"pause-tube\tfoo 1", BAD),
        (b"pause-tube foo\t1", BAD),
        (b"pause-tube foo 1x", BAD),
    ],
)
def test_pause_tube(line: bytes, expected: Event) -> None:
    assert one(line) == expected


# -- put --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"put 1 2 3 5", Put(1, 2, 3, b"hello")),
        (b"put  1  2  3  5", Put(1, 2, 3, b"hello")),
        (b"put 01 002 0003 00005", Put(1, 2, 3, b"hello")),
        (b"put 4294967295 4294967295 4294967295 5", Put(U32_MAX, U32_MAX, U32_MAX, b"hello")),
        (b"put 0 0 0 5", Put(0, 0, 0, b"hello")),  # ttr 0 is the server's business
    ],
)
def test_put(line: bytes, expected: Put) -> None:
    assert parse(line + b"\r\nhello\r\n") == [expected]


@pytest.mark.parametrize(
    "line",
    [
        b"put ",
        b"put 1",
        b"put 1 2",
        b"put 1 2 3",
        b"put 1 2 3 ",
        b"put +1 2 3 4",
        b"put -1 2 3 4",
        b"put 1 -2 3 4",
        b"put 1 2 -3 4",
        b"put 1 2 3 -4",
        b"put 1 2 3 +4",
        b"put 4294967296 0 0 1",
        b"put 0 4294967296 0 1",
        b"put 0 0 4294967296 1",
        b"put 0 0 0 4294967296",
        b"put 1x 2 3 4",
        b"put 1\t2 3 4",
        b"put 1 2 3 99999999999999999999",
    ],
)
def test_put_bad_numbers_are_not_counted(line: bytes) -> None:
    # The body is then read as command lines.
    assert parse(line + b"\r\nstats\r\n") == [BAD, Stats()]


@pytest.mark.parametrize("line", [b"put", b"put\t1 2 3 4", b"PUT 1 2 3 4", b" put 1 2 3 4"])
def test_put_unknown(line: bytes) -> None:
    assert parse(line + b"\r\nstats\r\n") == [UNKNOWN, Stats()]


@pytest.mark.parametrize(
    "line", [b"put 0 0 1 1 ", b"put 0 0 1 1 x", b"put 0 0 1 1x", b"put 0 0 1 1 2", b"put 0 0 1 1\n"]
)
def test_put_trailing_garbage_is_counted_and_body_read_as_commands(line: bytes) -> None:
    assert parse(line + b"\r\nx\r\nstats\r\n") == [PUT_BAD, UNKNOWN, Stats()]


def test_put_body_with_embedded_crlf() -> None:
    body = b"a\r\nb\r\n\r\nstats\r\n"
    assert parse(b"put 5 0 10 %d\r\n%b\r\nstats\r\n" % (len(body), body)) == [
        Put(5, 0, 10, body),
        Stats(),
    ]


def test_put_body_may_hold_any_byte() -> None:
    body = bytes(range(256)) * 3
    assert parse(b"put 0 0 1 768\r\n" + body + b"\r\n") == [Put(0, 0, 1, body)]


def test_put_with_nul_in_line_is_bad_format_and_body_is_read_as_commands() -> None:
    assert parse(b"put 0 0 1 5\0\r\nstats\r\n") == [BAD, Stats()]


def test_put_empty_body() -> None:
    assert parse(b"put 0 0 1 0\r\n\r\nstats\r\n") == [Put(0, 0, 1, b""), Stats()]


def test_put_max_job_size_boundary() -> None:
    body = b"z" * DEFAULT_MAX_JOB_SIZE
    assert parse(b"put 0 0 1 65535\r\n" + body + b"\r\n") == [Put(0, 0, 1, body)]
    big = b"z" * (DEFAULT_MAX_JOB_SIZE + 1)
    assert parse(b"put 0 0 1 65536\r\n" + big + b"\r\nstats\r\n") == [TOO_BIG, Stats()]


def test_put_custom_max_job_size() -> None:
    assert parse(b"put 0 0 1 3\r\nabc\r\n", max_job_size=3) == [Put(0, 0, 1, b"abc")]
    assert parse(b"put 0 0 1 4\r\nabcd\r\nstats\r\n", max_job_size=3) == [TOO_BIG, Stats()]


def test_job_too_big_discards_body_plus_two_whatever_it_holds() -> None:
    # The discarded 12 bytes look like commands; nothing is checked, not even the CRLF.
    data = b"put 0 0 1 10\r\nstats\r\nstaXYstats\r\n"
    assert parse(data, max_job_size=9) == [TOO_BIG, Stats()]


def test_job_too_big_beats_trailing_garbage() -> None:
    # size is checked before the end of the line: the garbage is ignored and the body discarded
    assert parse(b"put 0 0 1 11 x\r\n" + b"z" * 13 + b"stats\r\n", max_job_size=10) == [
        TOO_BIG,
        Stats(),
    ]
    assert parse(b"put 0 0 1 11x\r\n" + b"z" * 13 + b"stats\r\n", max_job_size=10) == [
        TOO_BIG,
        Stats(),
    ]


def test_job_too_big_at_u32_max() -> None:
    reader = CommandReader()
    reader.receive_data(b"put 0 0 1 4294967295\r\n")
    assert drain(reader) == [PutStarted(allocates_id=False), NEED_DATA]
    reader.receive_data(b"x" * 100_000)
    assert drain(reader) == [NEED_DATA]
    assert reader.buffered == 0  # the bit bucket does not buffer


def test_job_too_big_waits_for_the_discard() -> None:
    reader = CommandReader(max_job_size=10)
    reader.receive_data(b"put 0 0 1 100\r\n" + b"x" * 40)
    assert drain(reader) == [PutStarted(allocates_id=False), NEED_DATA]
    assert reader.buffered == 0
    reader.receive_data(b"y" * 61)
    assert drain(reader) == [NEED_DATA]
    assert reader.buffered == 0
    reader.receive_data(b"z" + b"stats\r\n")
    assert drain(reader) == [TOO_BIG_LATE, Stats(), NEED_DATA]


def test_job_too_big_several_receives_before_next_event() -> None:
    reader = CommandReader(max_job_size=2)
    reader.receive_data(b"put 0 0 1 3\r\n")
    assert drain(reader) == [PutStarted(allocates_id=False), NEED_DATA]
    reader.receive_data(b"abc")
    reader.receive_data(b"\r\nst")
    reader.receive_data(b"ats\r\n")
    assert drain(reader) == [TOO_BIG_LATE, Stats(), NEED_DATA]


@pytest.mark.parametrize(
    ("data", "after"),
    [
        # declared 1 byte: "a" is the body, "bc" is not CRLF
        (b"put 0 0 1 1\r\nabc", []),
        # reading resumes right after the declared length: "stats" is a command
        (b"put 0 0 1 1\r\nabcstats\r\n", [Stats()]),
        # body longer than declared: the rest of it starts the next line
        (b"put 0 0 1 3\r\nabcde\r\n", [UNKNOWN]),
        (b"put 0 0 1 3\r\nabcde\r\nstats\r\n", [UNKNOWN, Stats()]),
        # body shorter than declared: the next command is eaten into the body
        (b"put 0 0 1 5\r\nabc\r\nstats\r\n", [UNKNOWN]),
        (b"put 0 0 1 0\r\nxx\r\n", [UNKNOWN]),
        (b"put 0 0 1 2\r\nab\n\r\n", []),  # trailer "\n\r", then a lone '\n'
        (b"put 0 0 1 2\r\nab\n\r\nstats\r\n", [UNKNOWN]),
        # the trailer is "\r\r": the '\n' after it starts the next line
        (b"put 0 0 1 2\r\nab\r\r\n", []),
        (b"put 0 0 1 2\r\nab\r\r\nstats\r\n", [UNKNOWN]),
    ],
)
def test_expected_crlf(data: bytes, after: list[Event]) -> None:
    assert parse(data) == [NO_CRLF, *after]


# -- PutStarted: the put line parsed, the body has not arrived --------------------------------


def test_put_started_then_body() -> None:
    reader = CommandReader()
    reader.receive_data(b"put 1 2 3 5\r\nhel")
    assert drain(reader) == [PutStarted(allocates_id=True), NEED_DATA]
    assert reader.buffered == 3
    reader.receive_data(b"lo\r")
    assert drain(reader) == [NEED_DATA]
    reader.receive_data(b"\nstats\r\n")
    assert drain(reader) == [Put(1, 2, 3, b"hello"), Stats(), NEED_DATA]


def test_put_started_when_only_the_line_arrived() -> None:
    reader = CommandReader()
    reader.receive_data(b"put 0 0 1 0\r\n")
    assert drain(reader) == [PutStarted(allocates_id=True), NEED_DATA]
    reader.receive_data(b"\r\n")
    assert drain(reader) == [Put(0, 0, 1, b""), NEED_DATA]


def test_put_started_then_expected_crlf_is_not_counted_again() -> None:
    reader = CommandReader()
    reader.receive_data(b"put 0 0 1 1\r\na")
    assert drain(reader) == [PutStarted(allocates_id=True), NEED_DATA]
    reader.receive_data(b"bcstats\r\n")
    assert drain(reader) == [NO_CRLF_LATE, Stats(), NEED_DATA]


def test_put_line_split_does_not_start_the_put() -> None:
    reader = CommandReader()
    reader.receive_data(b"put 0 0 1 2\r")
    assert drain(reader) == [NEED_DATA]
    reader.receive_data(b"\nab\r\n")
    assert drain(reader) == [Put(0, 0, 1, b"ab"), NEED_DATA]


def test_put_started_byte_by_byte() -> None:
    reader = CommandReader()
    events: list[Event] = []
    for byte in b"put 0 0 1 3\r\nabc\r\nstats\r\n":
        reader.receive_data(bytes([byte]))
        events.extend(e for e in drain(reader) if e is not NEED_DATA)
    assert events == [PutStarted(allocates_id=True), Put(0, 0, 1, b"abc"), Stats()]


def test_bad_put_lines_never_start_a_put() -> None:
    reader = CommandReader()
    reader.receive_data(b"put 0 0 1 1 x\r\n")
    assert drain(reader) == [PUT_BAD, NEED_DATA]


# -- NUL bytes, empty lines, bare '\n' and '\r' ------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [b"\0", b"stats\0", b"\0stats", b"st\0ats", b"xyz\0", b"peek 1\0", b"use fo\0o", b"quit\0"],
)
def test_nul_in_line_is_bad_format_before_anything_else(line: bytes) -> None:
    assert one(line) == BAD


def test_empty_lines() -> None:
    assert parse(b"\r\n\r\nstats\r\n\r\n") == [UNKNOWN, UNKNOWN, Stats(), UNKNOWN]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\n\r\n", [UNKNOWN]),
        (b"stats\n\r\n", [BAD]),
        (b"\nstats\r\n", [UNKNOWN]),
        (b"stats\nstats\r\n", [BAD]),
        (b"use foo\n\r\n", [BAD]),
        (b"peek 1\n\r\n", [BAD]),
        (b"quit\n\r\n", [Quit()]),
        (b"\n\n\n\r\nstats\r\n", [UNKNOWN, Stats()]),
    ],
)
def test_bare_lf_is_part_of_the_line(data: bytes, expected: list[Event]) -> None:
    assert parse(data) == expected


def test_bare_cr_before_crlf_hides_the_line_end() -> None:
    # Only the first '\r' in the line buffer counts: "stats\r\r\n" never ends, so the reader
    # waits for the 224-byte window to fill, discards it, and answers BAD_FORMAT at the next
    # CRLF, which may be in the middle of a later command (real server: BAD_FORMAT + 8 OKs).
    reader = CommandReader()
    reader.receive_data(b"stats\r\r\n")
    assert drain(reader) == [NEED_DATA]
    reader.receive_data(b"stats\r\n" * 40)
    # window 1 = 8 + 30*7 + 6 bytes ("stats\r" of the 31st); the 32nd ends the long line
    assert drain(reader) == [BAD] + [Stats()] * 8 + [NEED_DATA]


def test_bare_cr_mid_line() -> None:
    reader = CommandReader()
    reader.receive_data(b"a\rb\r\nstats\r\n")
    assert drain(reader) == [NEED_DATA]
    assert reader.buffered == 12


def test_cr_as_last_byte_of_a_partial_window_is_not_decided_yet() -> None:
    reader = CommandReader()
    reader.receive_data(b"stats\r")
    assert drain(reader) == [NEED_DATA]
    reader.receive_data(b"\n")
    assert drain(reader) == [Stats(), NEED_DATA]


# -- the 224-byte line buffer ------------------------------------------------------------------


def padded_peek(total: int) -> bytes:
    """``peek 0…01\\r\\n`` exactly ``total`` bytes long."""
    return b"peek " + b"0" * (total - 8) + b"1\r\n"


def test_line_of_exactly_224_bytes_is_parsed() -> None:
    line = padded_peek(LINE_MAX)
    assert len(line) == 224
    assert parse(line + b"stats\r\n") == [Peek(1), Stats()]


def test_line_of_225_bytes_swallows_the_next_line() -> None:
    # The window holds 223 bytes + '\r'; the '\n' starts the next window, so the long line
    # ends at the *next* CRLF (real server: one BAD_FORMAT, then one reply).
    line = padded_peek(LINE_MAX + 1)
    assert parse(line + b"stats\r\nstats\r\n") == [BAD, Stats()]


def test_line_of_226_bytes_ends_in_its_second_window() -> None:
    line = padded_peek(LINE_MAX + 2)
    assert parse(line + b"stats\r\n") == [BAD, Stats()]


@pytest.mark.parametrize("windows", [1, 2, 5])
def test_long_line_window_boundaries(windows: int) -> None:
    # A CRLF whose '\r' is the 224th byte of a window is not seen, in every window.
    fits = b"x" * (LINE_MAX * windows + LINE_MAX - 2) + b"\r\n"
    assert parse(fits + b"stats\r\n") == [BAD, Stats()]
    straddles = b"x" * (LINE_MAX * windows + LINE_MAX - 1) + b"\r\n"
    assert parse(straddles + b"stats\r\nstats\r\n") == [BAD, Stats()]
    empty_window = b"x" * (LINE_MAX * windows) + b"\r\n"
    assert parse(empty_window + b"stats\r\n") == [BAD, Stats()]


def test_long_line_then_put_body_is_a_command() -> None:
    data = b"put 0 0 1 5 " + b" " * 300 + b"\r\nhello\r\n"
    assert parse(data) == [BAD, UNKNOWN]


def test_long_line_is_one_bad_format_however_long() -> None:
    reader = CommandReader()
    for _ in range(1000):
        reader.receive_data(b"y" * 1000)
        assert drain(reader) == [NEED_DATA]
        assert reader.buffered < LINE_MAX
    reader.receive_data(b"\r\nstats\r\n")
    assert drain(reader) == [BAD, Stats(), NEED_DATA]


def test_partial_line_is_buffered_until_the_window_is_full() -> None:
    reader = CommandReader()
    reader.receive_data(b"x" * (LINE_MAX - 1))
    assert drain(reader) == [NEED_DATA]
    assert reader.buffered == LINE_MAX - 1
    reader.receive_data(b"x")
    assert drain(reader) == [NEED_DATA]
    assert reader.buffered == 0


# -- EOF --------------------------------------------------------------------------------------


def drain_eof(data: bytes, *, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> list[Event]:
    reader = CommandReader(max_job_size)
    reader.receive_data(data)
    reader.receive_data(b"")
    assert reader.they_closed
    events = drain(reader)
    assert events[-1] is CLOSED
    assert reader.next_event() is CLOSED  # and stays closed
    return events[:-1]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", []),
        (b"stats\r\nstats\r\n", [Stats(), Stats()]),
        (b"stats\r\nsta", [Stats()]),
        (b"stats\r\nstats\r", [Stats()]),
        (b"stats\r\r\n", []),
        (b"put 0 0 1 5\r\nhel", [PutStarted(allocates_id=True)]),
        (b"put 0 0 1 5\r\nhello\r", [PutStarted(allocates_id=True)]),
        (b"put 0 0 1 5\r\nhello\r\n", [Put(0, 0, 1, b"hello")]),
        (b"put 0 0 1 1\r\nabc", [NO_CRLF]),
        (b"put 0 0 1 1 x\r\n", [PUT_BAD]),
        (b"put 0 0 1 9\r\n123", [PutStarted(allocates_id=False)]),
        (b"put 0 0 1 9\r\n" + b"1" * 11, [TOO_BIG]),
        (b"x" * 500, []),
        (b"x" * 500 + b"\r\n", [BAD]),
        (b"quit\r\n", [Quit()]),
    ],
)
def test_eof_closes_after_all_complete_events(data: bytes, expected: list[Event]) -> None:
    assert drain_eof(data, max_job_size=8) == expected


def test_eof_before_next_event_is_called() -> None:
    reader = CommandReader()
    reader.receive_data(b"stats\r\n")
    reader.receive_data(b"")
    assert reader.next_event() == Stats()
    assert reader.next_event() is CLOSED


def test_not_closed_without_eof() -> None:
    reader = CommandReader()
    assert not reader.they_closed
    assert reader.next_event() is NEED_DATA
    assert reader.buffered == 0


# -- counters ---------------------------------------------------------------------------------


def test_command_stat_names() -> None:
    stats = {type(cmd): cmd.stat for _, cmd in VALID}
    assert stats[Put] == "cmd-put"
    assert stats[ReserveWithTimeout] == "cmd-reserve-with-timeout"
    assert stats[ListTubesWatched] == "cmd-list-tubes-watched"
    assert stats[PauseTube] == "cmd-pause-tube"
    assert stats[ReserveJob] is None  # counted in op_ct, printed nowhere
    assert stats[KickJob] is None
    assert stats[Quit] is None
    for cls, stat in stats.items():
        if stat is not None:
            assert stat.startswith("cmd-"), cls
