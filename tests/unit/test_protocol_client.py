"""The client role: ReplyReader, commands' and replies' encode(), and the YAML bodies."""

from __future__ import annotations

import pytest

from beanrouter.protocol import (
    BAD_FORMAT,
    BURIED,
    CLOSED,
    DEADLINE_SOON,
    DELETED,
    DRAINING,
    EXPECTED_CRLF,
    INTERNAL_ERROR,
    JOB_TOO_BIG,
    KICKED,
    MAX_REPLY_LINE,
    NEED_DATA,
    NOT_FOUND,
    NOT_IGNORED,
    OUT_OF_MEMORY,
    PAUSED,
    RELEASED,
    TIMED_OUT,
    TOUCHED,
    U32_MAX,
    U64_MAX,
    UNKNOWN_COMMAND,
    Buried,
    Bury,
    Command,
    Delete,
    ErrorReply,
    Found,
    Ignore,
    Inserted,
    Kick,
    Kicked,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    LocalProtocolError,
    Ok,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    Quit,
    Release,
    RemoteProtocolError,
    Reply,
    ReplyReader,
    Reserve,
    Reserved,
    ReserveJob,
    ReserveWithTimeout,
    Sentinel,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Using,
    Watch,
    Watching,
    Word,
    encode_command,
    format_list,
    format_mapping,
    parse_list,
    parse_mapping,
)
from beanrouter.protocol import Stats as StatsCmd

WORD_REPLIES: list[Word] = [
    DELETED,
    RELEASED,
    TOUCHED,
    PAUSED,
    NOT_FOUND,
    NOT_IGNORED,
    DEADLINE_SOON,
    TIMED_OUT,
    BAD_FORMAT,
    UNKNOWN_COMMAND,
    EXPECTED_CRLF,
    JOB_TOO_BIG,
    DRAINING,
    OUT_OF_MEMORY,
    INTERNAL_ERROR,
]

REPLIES: list[tuple[Reply, bytes]] = [
    *[(w, w.word.encode() + b"\r\n") for w in WORD_REPLIES],
    (KICKED, b"KICKED\r\n"),
    (Kicked(0), b"KICKED 0\r\n"),
    (Kicked(17), b"KICKED 17\r\n"),
    (BURIED, b"BURIED\r\n"),
    (Buried(7), b"BURIED 7\r\n"),
    (Inserted(1), b"INSERTED 1\r\n"),
    (Inserted(U64_MAX), b"INSERTED 18446744073709551615\r\n"),
    (Using("default"), b"USING default\r\n"),
    (Using("a-b+c/d;e.f$g_h(i)"), b"USING a-b+c/d;e.f$g_h(i)\r\n"),
    (Watching(1), b"WATCHING 1\r\n"),
    (Reserved(5, b"hello"), b"RESERVED 5 5\r\nhello\r\n"),
    (Reserved(6, b""), b"RESERVED 6 0\r\n\r\n"),
    (Reserved(7, b"a\r\nb\r\n"), b"RESERVED 7 6\r\na\r\nb\r\n\r\n"),
    (Found(8, b"\0\xff"), b"FOUND 8 2\r\n\0\xff\r\n"),
    (Ok(b"---\n- default\n"), b"OK 14\r\n---\n- default\n\r\n"),
    (Ok(b""), b"OK 0\r\n\r\n"),
]
REPLY_IDS = [r[1][:20].decode("latin-1") for r in REPLIES]


def read_all(reader: ReplyReader) -> list[Reply | Sentinel]:
    out: list[Reply | Sentinel] = []
    while True:
        event = reader.next_event()
        out.append(event)
        if event is NEED_DATA or event is CLOSED:
            return out


def replies(data: bytes) -> list[Reply | Sentinel]:
    reader = ReplyReader()
    reader.receive_data(data)
    return read_all(reader)


def first_reply(data: bytes, *, max_body: int | None = None) -> Reply | Sentinel:
    reader = ReplyReader() if max_body is None else ReplyReader(max_body)
    reader.receive_data(data)
    return reader.next_event()


# -- replies: encode() and ReplyReader ---------------------------------------------------------


@pytest.mark.parametrize(("reply", "wire"), REPLIES, ids=REPLY_IDS)
def test_reply_encode(reply: Reply, wire: bytes) -> None:
    assert reply.encode() == wire


@pytest.mark.parametrize(("reply", "wire"), REPLIES, ids=REPLY_IDS)
def test_reply_reader_reads_every_reply(reply: Reply, wire: bytes) -> None:
    assert replies(wire) == [reply, NEED_DATA]


@pytest.mark.parametrize(("reply", "wire"), REPLIES, ids=REPLY_IDS)
def test_reply_reader_split_at_every_byte(reply: Reply, wire: bytes) -> None:
    for cut in range(1, len(wire)):  # (receive_data(b"") would mean EOF)
        reader = ReplyReader()
        reader.receive_data(wire[:cut])
        head = read_all(reader)
        reader.receive_data(wire[cut:])
        tail = read_all(reader)
        events = [e for e in head + tail if e is not NEED_DATA]
        assert events == [reply], cut
        assert tail[-1] is NEED_DATA


def test_reply_reader_byte_by_byte_stream() -> None:
    stream = b"".join(wire for _, wire in REPLIES)
    reader = ReplyReader()
    got: list[Reply | Sentinel] = []
    for byte in stream:
        reader.receive_data(bytes([byte]))
        got.extend(e for e in read_all(reader) if e is not NEED_DATA)
    assert got == [reply for reply, _ in REPLIES]


def test_reply_reader_pipelined() -> None:
    stream = b"".join(wire for _, wire in REPLIES)
    assert replies(stream) == [*(reply for reply, _ in REPLIES), NEED_DATA]


def test_word_replies_are_the_singletons() -> None:
    for word in WORD_REPLIES:
        assert first_reply(word.encode()) is word
    assert isinstance(BAD_FORMAT, ErrorReply)
    assert BAD_FORMAT.error and not DELETED.error


def test_reserved_body_is_not_scanned_for_crlf() -> None:
    assert replies(b"RESERVED 1 7\r\nOK 3\r\n\r\r\nDELETED\r\n") == [
        Reserved(1, b"OK 3\r\n\r"),
        DELETED,
        NEED_DATA,
    ]


def test_large_numbers() -> None:
    assert first_reply(b"WATCHING 18446744073709551615\r\n") == Watching(U64_MAX)
    assert first_reply(b"RESERVED 18446744073709551615 1\r\nx\r\n") == Reserved(U64_MAX, b"x")
    assert first_reply(b"INSERTED 0001\r\n") == Inserted(1)


BAD_REPLIES = [
    b"\r\n",
    b"WHAT\r\n",
    b"deleted\r\n",
    b"DELETED \r\n",
    b"DELETED x\r\n",
    b" DELETED\r\n",
    b"DELETED\rX\r\n",
    b"NOT_FOUND 1\r\n",
    b"INSERTED\r\n",
    b"INSERTED \r\n",
    b"INSERTED x\r\n",
    b"INSERTED -1\r\n",
    b"INSERTED +1\r\n",
    b"INSERTED 1 2\r\n",
    b"INSERTED  1\r\n",
    b"INSERTED 1 \r\n",
    b"INSERTED 18446744073709551616\r\n",
    b"BURIED \r\n",
    b"BURIED x\r\n",
    b"BURIED 1 2\r\n",
    b"KICKED \r\n",
    b"KICKED -1\r\n",
    b"USING\r\n",
    b"USING \r\n",
    b"USING -x\r\n",
    b"USING a b\r\n",
    b"USING caf\xc3\xa9\r\n",
    b"USING " + b"a" * 201 + b"\r\n",
    b"WATCHING\r\n",
    b"WATCHING x\r\n",
    b"RESERVED\r\n",
    b"RESERVED 1\r\n",
    b"RESERVED x 1\r\n",
    b"RESERVED 1 x\r\n",
    b"RESERVED 1 2 3\r\n",
    b"RESERVED -1 2\r\n",
    b"RESERVED 18446744073709551616 1\r\n",
    b"FOUND 1\r\n",
    b"FOUND 1 -1\r\n",
    b"OK\r\n",
    b"OK \r\n",
    b"OK x\r\n",
    b"OK 1 2\r\n",
    b"OK 3\r\nabcde",  # body not followed by CRLF
    b"RESERVED 1 3\r\nabc\n\r",
    b"FOUND 1 0\r\nxx",
]


@pytest.mark.parametrize("wire", BAD_REPLIES)
def test_bad_reply_raises(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        replies(wire)


def test_reply_line_length_limit() -> None:
    line = b"INSERTED " + b"0" * (MAX_REPLY_LINE - 12) + b"1\r\n"
    assert len(line) == MAX_REPLY_LINE
    assert first_reply(line) == Inserted(1)
    with pytest.raises(RemoteProtocolError, match="too long"):
        first_reply(b"INSERTED 0" + line[9:])
    # an incomplete line just short of the limit waits; at the limit it raises
    assert first_reply(b"X" * (MAX_REPLY_LINE - 1)) is NEED_DATA
    with pytest.raises(RemoteProtocolError):
        first_reply(b"X" * MAX_REPLY_LINE)


def test_reply_line_too_long_when_fed_in_pieces() -> None:
    reader = ReplyReader()
    for _ in range(MAX_REPLY_LINE // 8 - 1):
        reader.receive_data(b"XXXXXXXX")
        assert reader.next_event() is NEED_DATA
    reader.receive_data(b"XXXXXXXX")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_reply_body_size_limit() -> None:
    assert first_reply(b"OK 10\r\n0123456789\r\n", max_body=10) == Ok(b"0123456789")
    for head in (b"OK 11\r\n", b"RESERVED 1 11\r\n", b"FOUND 1 11\r\n"):
        with pytest.raises(RemoteProtocolError, match="too large"):
            first_reply(head, max_body=10)  # raised on the header, before any body arrives
    with pytest.raises(RemoteProtocolError):
        first_reply(b"OK 99999999999999999999999\r\n")


def test_eof() -> None:
    reader = ReplyReader()
    reader.receive_data(b"DELETED\r\n")
    reader.receive_data(b"")
    assert read_all(reader) == [DELETED, CLOSED]
    assert reader.next_event() is CLOSED


@pytest.mark.parametrize(
    "partial", [b"DEL", b"DELETED\r", b"OK 3\r\n", b"OK 3\r\nabc", b"OK 3\r\nabc\r"]
)
def test_eof_in_the_middle_of_a_reply_raises(partial: bytes) -> None:
    reader = ReplyReader()
    reader.receive_data(partial)
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        reader.next_event()


def test_reader_compacts_its_buffer() -> None:
    reader = ReplyReader()
    body = b"x" * 70_000
    for _ in range(5):
        reader.receive_data(b"OK 70000\r\n" + body + b"\r\nDEL")
        assert reader.next_event() == Ok(body)
        assert reader.next_event() is NEED_DATA
        reader.receive_data(b"ETED\r\n")
        assert reader.next_event() is DELETED


# -- commands: encode() and validation ---------------------------------------------------------

COMMANDS: list[tuple[Command, bytes]] = [
    (Put(1, 2, 3, b"hello"), b"put 1 2 3 5\r\nhello\r\n"),
    (Put(0, 0, 0, b""), b"put 0 0 0 0\r\n\r\n"),
    (
        Put(U32_MAX, U32_MAX, U32_MAX, b"a\r\nb"),
        b"put 4294967295 4294967295 4294967295 4\r\na\r\nb\r\n",
    ),
    (Use("default"), b"use default\r\n"),
    (Watch("a-b"), b"watch a-b\r\n"),
    (Ignore("x"), b"ignore x\r\n"),
    (StatsTube("t"), b"stats-tube t\r\n"),
    (Reserve(), b"reserve\r\n"),
    (ReserveWithTimeout(0), b"reserve-with-timeout 0\r\n"),
    (ReserveWithTimeout(-1), b"reserve-with-timeout -1\r\n"),
    (ReserveWithTimeout(2**31 - 1), b"reserve-with-timeout 2147483647\r\n"),
    (ReserveJob(3), b"reserve-job 3\r\n"),
    (Delete(U64_MAX), b"delete 18446744073709551615\r\n"),
    (Release(1, 2, 3), b"release 1 2 3\r\n"),
    (Bury(1, 2), b"bury 1 2\r\n"),
    (Touch(4), b"touch 4\r\n"),
    (Peek(0), b"peek 0\r\n"),
    (PeekReady(), b"peek-ready\r\n"),
    (PeekDelayed(), b"peek-delayed\r\n"),
    (PeekBuried(), b"peek-buried\r\n"),
    (Kick(100), b"kick 100\r\n"),
    (KickJob(5), b"kick-job 5\r\n"),
    (StatsJob(6), b"stats-job 6\r\n"),
    (StatsCmd(), b"stats\r\n"),
    (ListTubes(), b"list-tubes\r\n"),
    (ListTubeUsed(), b"list-tube-used\r\n"),
    (ListTubesWatched(), b"list-tubes-watched\r\n"),
    (PauseTube("default", 10), b"pause-tube default 10\r\n"),
    (Quit(), b"quit\r\n"),
]


@pytest.mark.parametrize(("command", "wire"), COMMANDS, ids=[c[1][:20].decode() for c in COMMANDS])
def test_command_encode(command: Command, wire: bytes) -> None:
    assert command.encode() == wire
    assert encode_command(command) == wire


def test_commands_are_frozen_and_comparable() -> None:
    assert Put(1, 2, 3, b"x") == Put(1, 2, 3, b"x")
    assert Put(1, 2, 3, b"x") != Put(1, 2, 3, b"y")
    assert hash(Delete(1)) == hash(Delete(1))
    assert Delete(1) != Touch(1)  # type: ignore[comparison-overlap]
    with pytest.raises(AttributeError):
        Delete(1).id = 2  # type: ignore[misc]


BAD_TUBE_NAMES = ["", "-a", "a" * 201, "a b", " a", "a ", "caf\u00e9", "a!", "a\r\nb", "a\0"]


@pytest.mark.parametrize("name", BAD_TUBE_NAMES)
def test_bad_tube_names_are_refused(name: str) -> None:
    for cls in (Use, Watch, Ignore, StatsTube):
        with pytest.raises(LocalProtocolError):
            cls(name)
    with pytest.raises(LocalProtocolError):
        PauseTube(name, 1)


def test_longest_tube_name_is_accepted() -> None:
    assert Use("a" * 200).encode() == b"use " + b"a" * 200 + b"\r\n"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Put(-1, 0, 0, b""),
        lambda: Put(U32_MAX + 1, 0, 0, b""),
        lambda: Put(0, -1, 0, b""),
        lambda: Put(0, U32_MAX + 1, 0, b""),
        lambda: Put(0, 0, -1, b""),
        lambda: Put(0, 0, U32_MAX + 1, b""),
        lambda: Put(0, 0, 0, "text"),  # type: ignore[arg-type]
        lambda: Put(0, 0, 0, bytearray(b"x")),  # type: ignore[arg-type]
        lambda: Delete(-1),
        lambda: Delete(U64_MAX + 1),
        lambda: Peek(-1),
        lambda: Touch(U64_MAX + 1),
        lambda: ReserveJob(-1),
        lambda: KickJob(-1),
        lambda: StatsJob(U64_MAX + 1),
        lambda: Release(-1, 0, 0),
        lambda: Release(1, U32_MAX + 1, 0),
        lambda: Release(1, 0, -1),
        lambda: Bury(1, -1),
        lambda: Bury(U64_MAX + 1, 0),
        lambda: ReserveWithTimeout(2**31),
        lambda: ReserveWithTimeout(-(2**31) - 1),
        lambda: Kick(-1),
        lambda: Kick(U32_MAX + 1),
        lambda: PauseTube("a", -1),
        lambda: PauseTube("a", U32_MAX + 1),
    ],
)
def test_out_of_range_numbers_are_refused(build: object) -> None:
    assert callable(build)
    with pytest.raises(LocalProtocolError):
        build()


def test_local_protocol_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="job id must be in"):
        Delete(-1)


def test_boundary_numbers_are_accepted() -> None:
    assert ReserveWithTimeout(-(2**31)).encode() == b"reserve-with-timeout -2147483648\r\n"
    assert Kick(U32_MAX).encode() == b"kick 4294967295\r\n"
    assert Release(U64_MAX, U32_MAX, U32_MAX).encode() == (
        b"release 18446744073709551615 4294967295 4294967295\r\n"
    )


# -- YAML bodies -------------------------------------------------------------------------------

# A real beanstalkd 1.12 `stats` body, byte for byte.
STATS_BODY = (
    b"---\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 1\ncurrent-jobs-reserved: 0\n"
    b"current-jobs-delayed: 0\ncurrent-jobs-buried: 0\ncmd-put: 3\ncmd-peek: 0\n"
    b"cmd-peek-ready: 0\ncmd-peek-delayed: 0\ncmd-peek-buried: 0\ncmd-reserve: 0\n"
    b"cmd-reserve-with-timeout: 3\ncmd-delete: 0\ncmd-release: 0\ncmd-use: 1\ncmd-watch: 0\n"
    b"cmd-ignore: 0\ncmd-bury: 0\ncmd-kick: 2\ncmd-touch: 0\ncmd-stats: 1\ncmd-stats-job: 0\n"
    b"cmd-stats-tube: 0\ncmd-list-tubes: 0\ncmd-list-tube-used: 2\ncmd-list-tubes-watched: 0\n"
    b"cmd-pause-tube: 0\njob-timeouts: 0\ntotal-jobs: 1\nmax-job-size: 65535\ncurrent-tubes: 2\n"
    b"current-connections: 1\ncurrent-producers: 0\ncurrent-workers: 0\ncurrent-waiting: 0\n"
    b'total-connections: 12\npid: 11860\nversion: "1.12"\nrusage-utime: 0.003320\n'
    b"rusage-stime: 0.000000\nuptime: 67\nbinlog-oldest-index: 0\nbinlog-current-index: 0\n"
    b"binlog-records-migrated: 0\nbinlog-records-written: 0\nbinlog-max-size: 10485760\n"
    b"draining: false\nid: f39cbd2983d74949\nhostname: vm\nos: #1 SMP PREEMPT_DYNAMIC @0\n"
    b"platform: x86_64\n"
)

STATS_JOB_BODY = (
    b"---\nid: 1\ntube: 123\nstate: ready\npri: 0\nage: 5\ndelay: 0\nttr: 60\ntime-left: 0\n"
    b"file: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n"
)


def test_format_mapping_exact_bytes() -> None:
    body = format_mapping(
        {"name": "default", "current-jobs-ready": 3, "draining": False, "pause": 0}
    )
    assert body == b"---\nname: default\ncurrent-jobs-ready: 3\ndraining: false\npause: 0\n"
    assert format_mapping({"version": "1.12", "draining": True}) == (
        b'---\nversion: "1.12"\ndraining: true\n'
    )
    assert format_mapping({"rusage-utime": 0.00332, "rusage-stime": 12.5}) == (
        b"---\nrusage-utime: 0.003320\nrusage-stime: 12.500000\n"
    )
    assert format_mapping({}) == b"---\n"


def test_format_list_exact_bytes() -> None:
    assert format_list(["default"]) == b"---\n- default\n"
    assert format_list(["default", "a-b", "x"]) == b"---\n- default\n- a-b\n- x\n"
    assert format_list([]) == b"---\n"
    assert Ok(format_list(["default"])).encode() == b"OK 14\r\n---\n- default\n\r\n"


def test_parse_real_stats_body() -> None:
    stats = parse_mapping(STATS_BODY)
    assert len(stats) == 51
    assert list(stats)[:2] == ["current-jobs-urgent", "current-jobs-ready"]
    assert stats["cmd-put"] == 3
    assert stats["version"] == "1.12"
    assert stats["rusage-utime"] == pytest.approx(0.00332)
    assert stats["draining"] is False
    assert stats["id"] == "f39cbd2983d74949"
    assert stats["hostname"] == "vm"
    assert stats["os"] == "#1 SMP PREEMPT_DYNAMIC @0"
    assert format_mapping(stats) == STATS_BODY


def test_parse_stats_job_keeps_tube_names_as_strings() -> None:
    stats = parse_mapping(STATS_JOB_BODY)
    assert stats["tube"] == "123"
    assert stats["id"] == 1
    assert stats["state"] == "ready"
    assert format_mapping(stats) == STATS_JOB_BODY


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("-3", -3),
        ("18446744073709551615", U64_MAX),
        ("0.500000", 0.5),
        ("true", True),
        ("false", False),
        ('"1.12"', "1.12"),
        ("x86_64", "x86_64"),
        ("0123456789012345", "0123456789012345"),  # a stats id with a leading zero
        ("\u00b2", "\u00b2"),  # a non-ASCII digit is not a number
        ("1.2.3", "1.2.3"),
        (".5", ".5"),
        ("", ""),
    ],
)
def test_parse_mapping_values(raw: str, value: object) -> None:
    parsed = parse_mapping(f"---\nkey: {raw}\n".encode())
    assert parsed == {"key": value}
    assert type(parsed["key"]) is type(value)


def test_parse_mapping_round_trips_awkward_strings() -> None:
    body = "---\nos: a\x1cb\x85c\u2028d: e\nhostname: 007\n".encode()
    stats = parse_mapping(body)
    assert stats == {"os": "a\x1cb\x85c\u2028d: e", "hostname": "007"}
    assert format_mapping(stats) == body


def test_parse_mapping_empty_value_forms() -> None:
    assert parse_mapping(b"---\nhostname: \n") == {"hostname": ""}
    assert parse_mapping(b"---\nkey:\n") == {"key": ""}


@pytest.mark.parametrize(
    "body", [b"", b"--\n", b"a: 1\n", b"---\nno colon\n", b"---\n\xff: 1\n", b"---\na: 1\n\nb: 2\n"]
)
def test_parse_mapping_rejects(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_mapping(body)


def test_parse_list() -> None:
    assert parse_list(b"---\n- default\n- foo\n") == ["default", "foo"]
    assert parse_list(b"---\n") == []
    names = ["default", "a-b", "(x)", "123"]
    assert parse_list(format_list(names)) == names


@pytest.mark.parametrize("body", [b"", b"- default\n", b"---\ndefault\n", b"---\n-default\n"])
def test_parse_list_rejects(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_list(body)


def test_encode_put_matches_the_event() -> None:
    from beanrouter.protocol import Put, encode_put

    for args in [(0, 0, 0, b""), (2**32 - 1, 5, 120, b"a\r\nb"), (1024, 0, 1, b"x" * 1000)]:
        assert encode_put(*args) == Put(*args).encode()
    for bad in [(-1, 0, 0, b""), (0, 2**32, 0, b""), (0, 0, 2**32, b"")]:
        with pytest.raises(LocalProtocolError):
            encode_put(*bad)
    with pytest.raises(LocalProtocolError):
        encode_put(0, 0, 0, "text")  # type: ignore[arg-type]
