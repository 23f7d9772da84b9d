"""Seeded property tests of the codec (plain ``random.Random``, fixed seeds, no extra dependency).

- any byte stream fed to ``CommandReader`` yields only events and sentinels, never an exception;
- chunking invariance: however a stream is cut into ``receive_data`` calls, the events are the
  same once each ``PutStarted`` is folded into the event that completes its put (see ``fold``);
- the events equal those of ``ProtC``, a line-for-line model of prot.c's input side (its buffer,
  scan_line_end, which_cmd, dispatch_cmd's parsing, fill_extra_data, _skip and the bit bucket)
  whose number parsing calls the C library's own strtoumax/strtol/strtoul;
- round trips: ``cmd.encode()`` read by ``CommandReader`` and ``reply.encode()`` read by
  ``ReplyReader`` give back equal events;
- memory: a megabyte without a line end never leaves more than two line windows buffered.
"""

from __future__ import annotations

import ctypes
import random
import sys
from collections.abc import Callable, Iterator

import pytest

from beanrouter.protocol import (
    BAD_FORMAT,
    BURIED,
    CLOSED,
    COMMAND_TYPES,
    DEADLINE_SOON,
    DELETED,
    DRAINING,
    EXPECTED_CRLF,
    INTERNAL_ERROR,
    JOB_TOO_BIG,
    KICKED,
    LINE_MAX,
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
    CommandReader,
    Delete,
    Event,
    Found,
    Ignore,
    Inserted,
    Kick,
    Kicked,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    Ok,
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
    Reply,
    ReplyReader,
    Reserve,
    Reserved,
    ReserveJob,
    ReserveWithTimeout,
    Sentinel,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Using,
    Watch,
    Watching,
)

NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
MAX_JOB_SIZES = [0, 4, 64, 65535]

BAD = Rejected(BAD_FORMAT)
UNKNOWN = Rejected(UNKNOWN_COMMAND)
PUT_BAD = Rejected(BAD_FORMAT, counted="cmd-put")
PAUSE_BAD = Rejected(BAD_FORMAT, counted="cmd-pause-tube")
TOO_BIG = Rejected(JOB_TOO_BIG, counted="cmd-put")
NO_CRLF = Rejected(EXPECTED_CRLF, counted="cmd-put", burns_id=True)


# -- random valid commands and replies ---------------------------------------------------------


def u32(rng: random.Random) -> int:
    return rng.choice([0, 1, 9, 10, 1023, 1024, U32_MAX - 1, U32_MAX, rng.randrange(U32_MAX)])


def u64(rng: random.Random) -> int:
    return rng.choice([0, 1, U32_MAX, U32_MAX + 1, U64_MAX, rng.randrange(U64_MAX)])


def tube(rng: random.Random) -> str:
    size = rng.choice([1, 2, 7, 199, 200, rng.randrange(1, 201)])
    first = rng.choice(NAME_CHARS.replace(b"-", b""))
    rest = bytes(rng.choice(NAME_CHARS) for _ in range(size - 1))
    return (bytes([first]) + rest).decode("ascii")


def body(rng: random.Random, limit: int = 300) -> bytes:
    size = rng.choice([0, 1, 2, rng.randrange(limit)])
    alphabet = b"\r\n\0 abcput0123456789\xff"
    return bytes(rng.choice(alphabet) for _ in range(size))


def random_command(rng: random.Random) -> Command:
    cls = rng.choice(COMMAND_TYPES)
    if cls is Put:
        return Put(u32(rng), u32(rng), u32(rng), body(rng))
    if cls in (Use, Watch, Ignore, StatsTube):
        return cls(tube(rng))
    if cls in (ReserveJob, Delete, Touch, Peek, KickJob, StatsJob):
        return cls(u64(rng))
    if cls is Release:
        return Release(u64(rng), u32(rng), u32(rng))
    if cls is Bury:
        return Bury(u64(rng), u32(rng))
    if cls is ReserveWithTimeout:
        timeout = rng.choice([0, 1, -1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31)])
        return ReserveWithTimeout(timeout)
    if cls is Kick:
        return Kick(u32(rng))
    if cls is PauseTube:
        return PauseTube(tube(rng), u32(rng))
    return cls()


WORDS = [
    DELETED, RELEASED, TOUCHED, PAUSED, NOT_FOUND, NOT_IGNORED, DEADLINE_SOON, TIMED_OUT,
    BAD_FORMAT, UNKNOWN_COMMAND, EXPECTED_CRLF, JOB_TOO_BIG, DRAINING, OUT_OF_MEMORY,
    INTERNAL_ERROR, KICKED, BURIED,
]  # fmt: skip


def random_reply(rng: random.Random) -> Reply:
    kind = rng.randrange(9)
    if kind == 0:
        return Inserted(u64(rng))
    if kind == 1:
        return Buried(u64(rng))
    if kind == 2:
        return Using(tube(rng))
    if kind == 3:
        return Watching(u64(rng))
    if kind == 4:
        return Kicked(u32(rng))
    if kind == 5:
        return Reserved(u64(rng), body(rng, 2000))
    if kind == 6:
        return Found(u64(rng), body(rng, 2000))
    if kind == 7:
        return Ok(body(rng, 2000))
    return rng.choice(WORDS)


# -- random streams ----------------------------------------------------------------------------

JUNK = [
    b"\r", b"\n", b"\r\n", b"\r\r\n", b" ", b"  ", b"\0", b"\t", b"-", b"+", b"x", b"9",
    b"put ", b"put 0 0 1 ", b"stats", b"quit", b"pause-tube", b"reserve", b"peek", b"kick ",
    b"4294967296", b"18446744073709551616", b"9223372036854775808",
]  # fmt: skip


def valid_stream(rng: random.Random, count: int) -> bytes:
    return b"".join(random_command(rng).encode() for _ in range(count))


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        pos = rng.randrange(len(buf) + 1)
        op = rng.randrange(7)
        if op == 0:
            del buf[pos : pos + rng.randrange(1, 5)]
        elif op == 1:
            buf[pos:pos] = rng.choice(JUNK)
        elif op == 2 and pos < len(buf):
            buf[pos] = rng.randrange(256)
        elif op == 3:
            run = rng.choice([100, LINE_MAX - 3, LINE_MAX - 2, LINE_MAX - 1, LINE_MAX, 450])
            buf[pos:pos] = bytes([rng.choice(b"x 0\r")]) * run
        elif op == 4:
            buf[pos:pos] = buf[pos : pos + rng.randrange(1, 40)]
        elif op == 5:
            del buf[pos:]
        else:
            buf[pos:pos] = b"put 0 0 1 %d\r\n" % rng.choice([0, 1, 3, 5, 64, 65, 65536])
    return bytes(buf)


def random_bytes(rng: random.Random) -> bytes:
    size = rng.randrange(600)
    if rng.random() < 0.3:
        return rng.randbytes(size)
    alphabet = b"\r\n\r\n \0-+0123456789putsekiqrvdwlbjmyxz"
    return bytes(rng.choice(alphabet) for _ in range(size))


def random_stream(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.25:
        return random_bytes(rng)
    stream = valid_stream(rng, rng.randrange(1, 12))
    return stream if roll < 0.35 else mutate(rng, stream)


# -- feeding -----------------------------------------------------------------------------------

EVENT_TYPES = (Command, Rejected, PutStarted)


def cuts(rng: random.Random, size: int, mode: str) -> Iterator[tuple[int, int]]:
    if mode == "whole":
        if size:  # (receive_data(b"") would mean EOF)
            yield 0, size
        return
    pos = 0
    while pos < size:
        step = 1 if mode == "bytes" else rng.choice([1, 2, 3, 7, 50, 223, 224, 225, 1000])
        yield pos, min(size, pos + step)
        pos += step


def feed(
    stream: bytes, max_job_size: int, mode: str = "whole", rng: random.Random | None = None
) -> list[Event]:
    """All events for ``stream`` then EOF, without the final CLOSED; checks the sentinels."""
    rng = rng or random.Random(0)
    reader = CommandReader(max_job_size)
    events: list[Event] = []

    def pull() -> None:
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                return
            assert event is not CLOSED, "CLOSED before EOF"
            assert isinstance(event, EVENT_TYPES), event
            events.append(event)

    for start, end in cuts(rng, len(stream), mode):
        reader.receive_data(stream[start:end])
        if mode != "lazy" or rng.random() < 0.3:
            pull()
    reader.receive_data(b"")
    while True:
        event = reader.next_event()
        assert event is not NEED_DATA, "NEED_DATA after EOF"
        if event is CLOSED:
            break
        assert isinstance(event, EVENT_TYPES), event
        events.append(event)
    assert reader.next_event() is CLOSED
    return events


def fold(events: list[Event]) -> list[Event]:
    """Fold each PutStarted into the event completing its put: the chunking-free sequence.

    A PutStarted means "counted (and an id allocated) now", so the completing event must not
    count again; folded, the pair reads as the single event a whole-stream feed gives. A
    PutStarted left at the end (EOF inside the body) stays.
    """
    out: list[Event] = []
    started: PutStarted | None = None
    for event in events:
        if started is None:
            if isinstance(event, PutStarted):
                started = event
            else:
                out.append(event)
            continue
        if started.allocates_id and isinstance(event, Put):
            out.append(event)
        elif started.allocates_id and event == Rejected(EXPECTED_CRLF):
            out.append(NO_CRLF)
        elif not started.allocates_id and event == Rejected(JOB_TOO_BIG):
            out.append(TOO_BIG)
        else:
            raise AssertionError(f"{started} completed by {event}")
        started = None
    if started is not None:
        out.append(started)
    return out


def streams(seed: int, count: int) -> Iterator[tuple[random.Random, bytes, int]]:
    rng = random.Random(seed)
    for _ in range(count):
        yield rng, random_stream(rng), rng.choice(MAX_JOB_SIZES)


# -- (a) never raises, (b) chunking invariance --------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_stream_parses_without_raising(seed: int) -> None:
    for rng, stream, max_job_size in streams(seed, 700):
        for mode in ("whole", "chunks", "lazy"):
            feed(stream, max_job_size, mode, rng)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_chunking_invariance(seed: int) -> None:
    for rng, stream, max_job_size in streams(seed, 500):
        whole = feed(stream, max_job_size)
        # Fed whole, a put only "starts" when its body is cut off by EOF.
        assert all(not isinstance(e, PutStarted) for e in whole[:-1]), whole
        assert fold(whole) == whole
        modes = ["chunks", "lazy"] + (["bytes"] if len(stream) < 400 else [])
        for mode in modes:
            assert fold(feed(stream, max_job_size, mode, rng)) == whole, (mode, stream)


# -- differential: prot.c's input side, transliterated ------------------------------------------

_LIBC: ctypes.CDLL | None = None
if sys.platform != "win32":  # the C library's strto* through ctypes, for the number fields
    _LIBC = ctypes.CDLL(None, use_errno=True)

_STRTO_ARGS = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]


def c_strto(
    name: str, restype: type[ctypes.c_long | ctypes.c_ulong | ctypes.c_uint64], text: bytes
) -> tuple[int, int, int]:
    """``name(text, &end, 10)`` from the C library: (value, end offset, errno)."""
    assert _LIBC is not None
    func = getattr(_LIBC, name)
    func.restype = restype
    func.argtypes = _STRTO_ARGS
    buf = ctypes.create_string_buffer(text)
    end = ctypes.c_void_p()
    ctypes.set_errno(0)
    value = func(ctypes.addressof(buf), ctypes.byref(end), 10)
    errno = ctypes.get_errno()
    assert end.value is not None
    return int(value), end.value - ctypes.addressof(buf), errno


def c_read_uint(s: bytes, pos: int, limit: int, to_end: bool) -> tuple[int, int] | None:
    """prot.c's read_u32/read_u64 (``to_end``: called with ``end == NULL``)."""
    while s[pos : pos + 1] == b" ":
        pos += 1
    if not s[pos : pos + 1].isdigit():
        return None
    value, used, errno = c_strto("strtoumax", ctypes.c_uint64, s[pos:])
    if used == 0 or errno:
        return None
    if to_end and pos + used != len(s):
        return None
    if value > limit:
        return None
    return value, pos + used


def c_strspn_name(s: bytes) -> int:
    n = 0
    while n < len(s) and s[n] in NAME_CHARS:
        n += 1
    return n


def c_is_valid_tube(name: bytes) -> bool:
    return 0 < len(name) <= 200 and c_strspn_name(name) == len(name) and name[0] != ord("-")


C_PREFIXES = [
    b"put ", b"peek ", b"peek-ready", b"peek-delayed", b"peek-buried", b"reserve-with-timeout ",
    b"reserve-job ", b"reserve", b"delete ", b"release ", b"bury ", b"kick ", b"kick-job ",
    b"touch ", b"stats-job ", b"stats-tube ", b"stats", b"use ", b"watch ", b"ignore ",
    b"list-tubes-watched", b"list-tube-used", b"list-tubes", b"quit", b"pause-tube",
]  # fmt: skip
C_BARE: dict[bytes, Callable[[], Command]] = {
    b"peek-ready": PeekReady, b"peek-delayed": PeekDelayed, b"peek-buried": PeekBuried,
    b"reserve": Reserve, b"stats": Stats, b"list-tubes": ListTubes,
    b"list-tube-used": ListTubeUsed, b"list-tubes-watched": ListTubesWatched,
}  # fmt: skip
C_BY_ID: dict[bytes, Callable[[int], Command]] = {
    b"peek ": Peek, b"reserve-job ": ReserveJob, b"delete ": Delete, b"kick-job ": KickJob,
    b"touch ": Touch, b"stats-job ": StatsJob,
}  # fmt: skip
C_BY_NAME: dict[bytes, Callable[[str], Command]] = {
    b"use ": Use, b"watch ": Watch, b"ignore ": Ignore, b"stats-tube ": StatsTube,
}  # fmt: skip

LINE_BUF_SIZE = 224
WANT_COMMAND, WANT_DATA, BITBUCKET, WANT_ENDLINE, CLOSE = range(5)


class ProtC:
    """prot.c 1.12's reading of one connection, as semantic events (folded form).

    ``cmd`` is ``c->cmd[0:cmd_read]``; each read(2) returns as much as was asked for. Replies
    are sent at once, so the connection is back in STATE_WANT_COMMAND right after them.
    """

    def __init__(self, stream: bytes, max_job_size: int) -> None:
        self.stream = stream
        self.taken = 0
        self.max_job_size = max_job_size
        self.cmd = bytearray()
        self.cmd_len = 0
        self.state = WANT_COMMAND
        self.in_job: tuple[int, int, int, int] | None = None  # pri, delay, ttr, body_size+2
        self.body = bytearray()
        self.in_job_read = 0
        self.events: list[Event] = []

    def read(self, n: int) -> bytes:
        data = self.stream[self.taken : self.taken + n]
        self.taken += len(data)
        return data

    def run(self) -> list[Event]:
        while self.state != CLOSE:
            self.conn_process_io()
            while self.state == WANT_COMMAND and self.cmd:
                self.cmd_len = self.scan_line_end()
                if not self.cmd_len:
                    break
                self.dispatch_cmd()
                self.fill_extra_data()
        # EOF inside a put's body: it was counted (and took an id) when its line was read
        if self.in_job is not None:
            self.events.append(PutStarted(allocates_id=True))
        elif self.in_job_read:
            self.events.append(PutStarted(allocates_id=False))
        return self.events

    def scan_line_end(self) -> int:
        match = self.cmd.find(b"\r", 0, len(self.cmd) - 1)
        if match < 0 or self.cmd[match + 1] != ord("\n"):
            return 0
        return match + 2

    def conn_process_io(self) -> None:
        if self.state in (WANT_COMMAND, WANT_ENDLINE):
            data = self.read(LINE_BUF_SIZE - len(self.cmd))
            if not data:
                self.state = CLOSE
                return
            self.cmd += data
            self.cmd_len = self.scan_line_end()
            if self.state == WANT_ENDLINE and self.cmd_len:
                self.events.append(BAD)
                self.state = WANT_COMMAND
                self.fill_extra_data()
            elif not self.cmd_len and len(self.cmd) == LINE_BUF_SIZE:
                self.cmd.clear()
                self.state = WANT_ENDLINE
        elif self.state == BITBUCKET:
            data = self.read(min(self.in_job_read, 16384))
            if not data:
                self.state = CLOSE
                return
            self.in_job_read -= len(data)
            if self.in_job_read == 0:
                self.events.append(TOO_BIG)
                self.state = WANT_COMMAND
        else:
            assert self.in_job is not None
            data = self.read(self.in_job[3] - self.in_job_read)
            if not data:
                self.state = CLOSE
                return
            self.body += data
            self.in_job_read += len(data)
            self.maybe_enqueue_incoming_job()

    def fill_extra_data(self) -> None:
        if not self.cmd_len:
            return
        extra = len(self.cmd) - self.cmd_len
        job_data_bytes = 0
        if self.in_job is not None:
            job_data_bytes = min(extra, self.in_job[3])
            self.body = self.cmd[self.cmd_len : self.cmd_len + job_data_bytes]
            self.in_job_read = job_data_bytes
        elif self.in_job_read:
            job_data_bytes = min(extra, self.in_job_read)
            self.in_job_read -= job_data_bytes
        del self.cmd[: self.cmd_len + job_data_bytes]
        self.cmd_len = 0

    def skip(self, n: int) -> None:
        self.in_job = None
        self.in_job_read = n
        self.fill_extra_data()
        if self.in_job_read == 0:
            self.events.append(TOO_BIG)
        else:
            self.state = BITBUCKET

    def maybe_enqueue_incoming_job(self) -> None:
        assert self.in_job is not None
        pri, delay, ttr, size = self.in_job
        if self.in_job_read != size:
            self.state = WANT_DATA
            return
        self.in_job = None
        self.in_job_read = 0
        self.state = WANT_COMMAND
        if self.body[size - 2 : size] != b"\r\n":
            self.events.append(NO_CRLF)
        else:
            self.events.append(Put(pri, delay, ttr, bytes(self.body[: size - 2])))

    def dispatch_cmd(self) -> None:
        line = bytes(self.cmd[: self.cmd_len - 2])
        if b"\0" in line:
            self.events.append(BAD)
            return
        verb = next((p for p in C_PREFIXES if line.startswith(p)), None)
        event = self.parse(verb, line)
        if event is not None:
            self.events.append(event)

    def parse(self, verb: bytes | None, line: bytes) -> Event | None:
        if verb is None:
            return UNKNOWN
        if verb in C_BARE:
            return C_BARE[verb]() if len(line) == len(verb) else BAD
        if verb in C_BY_ID:
            got = c_read_uint(line, len(verb), U64_MAX, to_end=True)
            return BAD if got is None else C_BY_ID[verb](got[0])
        if verb in C_BY_NAME:
            name = line[len(verb) :]
            return C_BY_NAME[verb](name.decode()) if c_is_valid_tube(name) else BAD
        if verb == b"quit":
            self.state = CLOSE
            return Quit()
        if verb == b"reserve-with-timeout ":
            value, _, errno = c_strto("strtol", ctypes.c_long, line[len(verb) :])
            return BAD if errno else ReserveWithTimeout(ctypes.c_int(value).value)
        if verb == b"kick ":
            value, used, errno = c_strto("strtoul", ctypes.c_ulong, line[len(verb) :])
            return BAD if used == 0 or errno else Kick(ctypes.c_uint(value).value)
        if verb == b"release ":
            a = c_read_uint(line, len(verb), U64_MAX, to_end=False)
            b = a and c_read_uint(line, a[1], U32_MAX, to_end=False)
            c = b and c_read_uint(line, b[1], U32_MAX, to_end=True)
            return Release(a[0], b[0], c[0]) if a and b and c else BAD
        if verb == b"bury ":
            a = c_read_uint(line, len(verb), U64_MAX, to_end=False)
            b = a and c_read_uint(line, a[1], U32_MAX, to_end=True)
            return Bury(a[0], b[0]) if a and b else BAD
        if verb == b"pause-tube":
            start = len(verb)
            while line[start : start + 1] == b" ":
                start += 1
            end = start + c_strspn_name(line[start:])
            delay = c_read_uint(line, end, U32_MAX, to_end=True) if end > start else None
            if delay is None:
                return BAD
            name = line[start:end]
            return PauseTube(name.decode(), delay[0]) if c_is_valid_tube(name) else PAUSE_BAD
        assert verb == b"put "
        return self.put(line)

    def put(self, line: bytes) -> Event | None:
        fields: list[int] = []
        pos = 4
        for _ in range(4):
            got = c_read_uint(line, pos, U32_MAX, to_end=False)
            if got is None:
                return BAD
            fields.append(got[0])
            pos = got[1]
        pri, delay, ttr, size = fields
        if size > self.max_job_size:
            self.skip(size + 2)  # JOB_TOO_BIG now or when the bit bucket is full
            return None
        if pos != len(line):
            return PUT_BAD
        self.in_job = (pri, delay, ttr, size + 2)
        self.body = bytearray()
        self.fill_extra_data()
        self.maybe_enqueue_incoming_job()  # INSERTED/EXPECTED_CRLF now or when the body is in
        return None


def prot_c(stream: bytes, max_job_size: int) -> list[Event]:
    return ProtC(stream, max_job_size).run()


def until_quit(events: list[Event]) -> list[Event]:
    """prot.c stops reading at ``quit``; the reader reports what follows, the server drops it."""
    for i, event in enumerate(events):
        if isinstance(event, Quit):
            return events[: i + 1]
    return events


needs_libc = pytest.mark.skipif(_LIBC is None, reason="needs the C library through ctypes")


@needs_libc
def test_c_model_sanity() -> None:
    # a few of the unit tests' corners, through the model
    assert prot_c(b"peek\r\nreserve-with-timeout\r\nkick -1\r\n", 10) == [
        UNKNOWN,
        BAD,
        Kick(U32_MAX),
    ]
    assert prot_c(b"x" * 223 + b"\r\nstats\r\nstats\r\n", 10) == [BAD, Stats()]
    assert prot_c(b"put 0 0 1 11 x\r\n" + b"z" * 13 + b"stats\r\n", 10) == [TOO_BIG, Stats()]
    assert prot_c(b"put 0 0 1 1\r\nabcstats\r\n", 10) == [NO_CRLF, Stats()]
    assert prot_c(b"put 0 0 1 5\r\nab", 10) == [PutStarted(allocates_id=True)]
    assert prot_c(b"put 0 0 1 50\r\nab", 10) == [PutStarted(allocates_id=False)]
    assert prot_c(b"reserve-with-timeout 4294967301\r\n", 10) == [ReserveWithTimeout(5)]


@needs_libc
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_reader_matches_prot_c(seed: int) -> None:
    for rng, stream, max_job_size in streams(seed, 700):
        expected = prot_c(stream, max_job_size)
        mode = rng.choice(["whole", "chunks", "lazy"])
        assert until_quit(fold(feed(stream, max_job_size, mode, rng))) == expected, stream


@needs_libc
def test_reader_matches_prot_c_on_number_fields() -> None:
    rng = random.Random(31)
    numbers = [
        b"0", b"1", b"+1", b"-1", b"-0", b" 1", b"  1", b"\t1", b"\n1", b"1 ", b"1x", b"x", b"",
        b"4294967295", b"4294967296", b"18446744073709551615", b"18446744073709551616",
        b"2147483647", b"2147483648", b"-2147483649", b"9223372036854775807",
        b"9223372036854775808", b"-9223372036854775808", b"-9223372036854775809",
        b"-18446744073709551615", b"00000000000000000000000000001", b"0x1f", b"1e3", b"- 1",
    ]  # fmt: skip
    templates = [
        b"put %s 0 1 0", b"put 0 %s 1 0", b"put 0 0 %s 0", b"put 0 0 1 %s", b"peek %s",
        b"delete %s", b"release %s 0 0", b"release 1 %s 0", b"release 1 0 %s", b"bury %s 1",
        b"bury 1 %s", b"kick %s", b"reserve-with-timeout %s", b"pause-tube t %s",
        b"pause-tube %s 1", b"kick-job %s", b"touch %s", b"stats-job %s", b"reserve-job %s",
    ]  # fmt: skip
    for template in templates:
        for number in numbers:
            line = template % number + b"\r\n\r\n"
            assert fold(feed(line, 100)) == prot_c(line, 100), line
    for _ in range(2000):
        template = rng.choice(templates)
        number = b"".join(rng.choice(numbers) for _ in range(rng.randrange(1, 3)))
        line = template % number + b"\r\n\r\n"
        assert fold(feed(line, 100)) == prot_c(line, 100), line


# -- (c) round trips ---------------------------------------------------------------------------


def test_command_round_trip() -> None:
    rng = random.Random(41)
    for _ in range(3000):
        cmd = random_command(rng)
        reader = CommandReader()
        reader.receive_data(cmd.encode())
        assert reader.next_event() == cmd
        assert reader.next_event() is NEED_DATA
        assert reader.buffered == 0


def test_command_round_trip_pipelined_and_chunked() -> None:
    rng = random.Random(42)
    for _ in range(100):
        commands = [random_command(rng) for _ in range(rng.randrange(1, 40))]
        stream = b"".join(c.encode() for c in commands)
        got = fold(feed(stream, 65535, rng.choice(["whole", "chunks", "lazy"]), rng))
        assert got == commands


def test_longest_lines_round_trip() -> None:
    name = "a" * 200
    for cmd in (PauseTube(name, U32_MAX), StatsTube(name), Release(U64_MAX, U32_MAX, U32_MAX)):
        assert len(cmd.encode()) <= LINE_MAX
        assert fold(feed(cmd.encode(), 0)) == [cmd]
    assert len(PauseTube(name, U32_MAX).encode()) == LINE_MAX


def test_biggest_put_round_trips() -> None:
    cmd = Put(U32_MAX, U32_MAX, U32_MAX, random.Random(43).randbytes(65535))
    assert fold(feed(cmd.encode(), 65535, "chunks", random.Random(44))) == [cmd]


def test_reply_round_trip() -> None:
    rng = random.Random(51)
    for _ in range(3000):
        reply = random_reply(rng)
        reader = ReplyReader()
        reader.receive_data(reply.encode())
        assert reader.next_event() == reply
        assert reader.next_event() is NEED_DATA


def test_reply_round_trip_chunked() -> None:
    rng = random.Random(52)
    for _ in range(100):
        expected = [random_reply(rng) for _ in range(rng.randrange(1, 30))]
        stream = b"".join(r.encode() for r in expected)
        reader = ReplyReader()
        got: list[Reply | Sentinel] = []
        for start, end in cuts(rng, len(stream), "chunks"):
            reader.receive_data(stream[start:end])
            while (event := reader.next_event()) is not NEED_DATA:
                got.append(event)
        reader.receive_data(b"")
        assert reader.next_event() is CLOSED
        assert got == expected


def test_reply_reader_only_raises_remote_protocol_error() -> None:
    from beanrouter.protocol import RemoteProtocolError

    rng = random.Random(53)
    for _ in range(2000):
        stream = b"".join(random_reply(rng).encode() for _ in range(rng.randrange(1, 4)))
        stream = mutate(rng, stream) if rng.random() < 0.8 else random_bytes(rng)
        reader = ReplyReader(max_body=1000)
        try:
            for start, end in cuts(rng, len(stream), "chunks"):
                reader.receive_data(stream[start:end])
                while reader.next_event() is not NEED_DATA:
                    pass
            reader.receive_data(b"")
            while reader.next_event() is not CLOSED:
                pass
        except RemoteProtocolError:
            pass


# -- (d) memory bound --------------------------------------------------------------------------


@pytest.mark.parametrize("filler", [b"x", b"\r", b"mixed"])
def test_megabyte_without_crlf_stays_bounded(filler: bytes) -> None:
    rng = random.Random(61)
    reader = CommandReader()
    fed = 0
    while fed < 1 << 20:
        size = rng.choice([1, 100, 223, 224, 225, 1000, 8192])
        if filler == b"mixed":
            chunk = bytes(rng.choice(b"\rabc \0") for _ in range(size))  # no '\n' at all
        else:
            chunk = filler * size
        reader.receive_data(chunk)
        fed += size
        while (event := reader.next_event()) is not NEED_DATA:
            pytest.fail(f"unexpected {event}")
        assert reader.buffered < 2 * LINE_MAX
    if filler == b"x":
        reader.receive_data(b"\r\nstats\r\n")
        assert [reader.next_event() for _ in range(3)] == [BAD, Stats(), NEED_DATA]


def test_megabyte_discarded_by_job_too_big_is_not_buffered() -> None:
    reader = CommandReader(max_job_size=10)
    reader.receive_data(b"put 0 0 1 2000000\r\n")
    assert reader.next_event() == PutStarted(allocates_id=False)
    rng = random.Random(62)
    for _ in range(1000):
        reader.receive_data(rng.randbytes(1024))
        assert reader.next_event() is NEED_DATA
        assert reader.buffered == 0
