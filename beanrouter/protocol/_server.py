"""The server role: turn a client's byte stream into command events, exactly as beanstalkd 1.12.

``CommandReader`` is a pull parser. Feed it with ``receive_data(bytes)`` (``b""`` means the peer
closed its side) and call ``next_event()`` until it returns ``NEED_DATA`` (or ``CLOSED`` after the
peer's EOF). Events are ``Command`` instances, ``Rejected`` (bad input beanstalkd answers with an
error while keeping the connection) and ``PutStarted`` (a put line was accepted but its body has
not arrived yet: a real server counts the command and allocates the job id at that moment).

Line rules reproduced byte for byte (see docs/server.md):
- a line is found only when the *first* ``\\r`` in the line buffer is followed by ``\\n``;
- the line buffer holds 224 bytes: a longer line puts the reader in "skip to end of line" mode, in
  224-byte windows, and one ``BAD_FORMAT`` is answered when the end is found;
- a NUL byte in a line is ``BAD_FORMAT``; commands match by prefix in beanstalkd's order;
- ``JOB_TOO_BIG`` discards the declared body plus 2 bytes before it is answered;
- a body not followed by ``\\r\\n`` is ``EXPECTED_CRLF``, and reading resumes after the declared
  length.
Invariant: the reader buffers at most one pending window (224 bytes) of command data beyond the
body it is collecting, and never more than the declared body size plus 2, so a peer cannot grow
memory without bound through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from ._commands import (
    Bury,
    Command,
    Delete,
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
    Quit,
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
from ._record import Record, record
from ._replies import BAD_FORMAT, EXPECTED_CRLF, JOB_TOO_BIG, UNKNOWN_COMMAND, ErrorReply
from ._wire import (
    DEFAULT_MAX_JOB_SIZE,
    LINE_MAX,
    U32_MAX,
    U64_MAX,
    is_valid_tube_name,
    name_span,
    read_strtol_int,
    read_strtoul_uint,
    read_uint,
    read_uint_to_end,
)

__all__ = ["CLOSED", "NEED_DATA", "CommandReader", "PutStarted", "Rejected", "Sentinel"]


class Sentinel:
    """A named marker returned by ``next_event()``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_set = object.__setattr__  # the records are immutable: this sets their fields past that

NEED_DATA: Final = Sentinel("NEED_DATA")
CLOSED: Final = Sentinel("CLOSED")


@record(frozen=True)
class Rejected(Record):
    """Input the server answers with ``reply`` without running a command.

    ``counted`` names the ``cmd-*`` counter beanstalkd bumps anyway (a put whose numbers parsed,
    a pause-tube whose name is too long); ``burns_id`` says a job id was used up (EXPECTED_CRLF).
    """

    reply: ErrorReply
    counted: str | None
    burns_id: bool
    __slots__ = __match_args__ = ("reply", "counted", "burns_id")

    def __init__(
        self, reply: ErrorReply, counted: str | None = None, burns_id: bool = False
    ) -> None:
        _set(self, "reply", reply)
        _set(self, "counted", counted)
        _set(self, "burns_id", burns_id)


@record(frozen=True)
class PutStarted(Record):
    """A put line parsed and its body is still on the way.

    The server counts ``cmd-put`` now and, when ``allocates_id``, takes the job's id now (as
    beanstalkd does): the ``Put`` or ``Rejected`` that completes it carries no count of its own.
    """

    allocates_id: bool
    __slots__ = __match_args__ = ("allocates_id",)

    def __init__(self, allocates_id: bool) -> None:
        _set(self, "allocates_id", allocates_id)


Event = Command | Rejected | PutStarted | Sentinel

_R_BAD = Rejected(BAD_FORMAT)
_R_UNKNOWN = Rejected(UNKNOWN_COMMAND)

_WANT_COMMAND = 0
_WANT_ENDLINE = 1
_WANT_BODY = 2
_DISCARD = 3

_Handler = Callable[["CommandReader", bytes], "Command | Rejected | PutStarted | None"]


def _bare(cmd: Command, name: bytes) -> _Handler:
    n = len(name)

    def handle(reader: CommandReader, line: bytes) -> Command | Rejected:
        return cmd if len(line) == n else _R_BAD

    return handle


# Events the reader has already validated are built without running their __init__ checks
# again (an immutable record's __init__ plus its checks is most of a put's parsing time).
_new = object.__new__


def _by_id(
    cls: type[Peek | ReserveJob | Delete | Touch | KickJob | StatsJob], verb: bytes
) -> _Handler:
    start = len(verb)

    def handle(reader: CommandReader, line: bytes) -> Command | Rejected:
        job_id = read_uint_to_end(line, start, U64_MAX)
        if job_id is None:
            return _R_BAD
        cmd = _new(cls)
        _set(cmd, "id", job_id)  # in range: read_uint_to_end checked it
        return cmd

    return handle


def _by_tube(cls: type[Use | Watch | Ignore | StatsTube], verb: bytes) -> _Handler:
    start = len(verb)

    def handle(reader: CommandReader, line: bytes) -> Command | Rejected:
        name = line[start:]
        if not is_valid_tube_name(name):
            return _R_BAD
        return cls(name.decode("ascii"))

    return handle


_PUT_FIELDS = re.compile(rb"put (\d+) (\d+) (\d+) (\d+)")
"""The common put line: four plain numbers, single spaces (``\\d`` is ASCII-only on bytes)."""


def _put(reader: CommandReader, line: bytes) -> Command | Rejected | PutStarted | None:
    m = _PUT_FIELDS.fullmatch(line)
    if m is not None:
        pri, delay, ttr, size = map(int, m.groups())
        if pri > U32_MAX or delay > U32_MAX or ttr > U32_MAX or size > U32_MAX:
            return _R_BAD
        if size <= reader.max_job_size:
            # The common case, in one step: the whole body and its CRLF are here already.
            buf = reader._buf
            pos = reader._pos
            end = pos + size
            if len(buf) >= end + 2 and buf[end] == 0x0D and buf[end + 1] == 0x0A:
                reader._pos = end + 2
                put = _new(Put)  # fields checked above; the body is bytes of size <= -z
                _set(put, "priority", pri)
                _set(put, "delay", delay)
                _set(put, "ttr", ttr)
                _set(put, "body", bytes(buf[pos:end]))
                return put
        garbage = False
    else:
        got = read_uint(line, 4, U32_MAX)
        if got is None:
            return _R_BAD
        pri, end = got
        got = read_uint(line, end, U32_MAX)
        if got is None:
            return _R_BAD
        delay, end = got
        got = read_uint(line, end, U32_MAX)
        if got is None:
            return _R_BAD
        ttr, end = got
        got = read_uint(line, end, U32_MAX)
        if got is None:
            return _R_BAD
        size, end = got
        garbage = end != len(line)
    return reader._start_put(pri, delay, ttr, size, garbage)


def _reserve_with_timeout(reader: CommandReader, line: bytes) -> Command | Rejected:
    timeout = read_strtol_int(line, 21)
    return _R_BAD if timeout is None else ReserveWithTimeout(timeout)


def _release(reader: CommandReader, line: bytes) -> Command | Rejected:
    got = read_uint(line, 8, U64_MAX)
    if got is None:
        return _R_BAD
    job_id, end = got
    got = read_uint(line, end, U32_MAX)
    if got is None:
        return _R_BAD
    pri, end = got
    delay = read_uint_to_end(line, end, U32_MAX)
    return _R_BAD if delay is None else Release(job_id, pri, delay)


def _bury(reader: CommandReader, line: bytes) -> Command | Rejected:
    got = read_uint(line, 5, U64_MAX)
    if got is None:
        return _R_BAD
    job_id, end = got
    pri = read_uint_to_end(line, end, U32_MAX)
    return _R_BAD if pri is None else Bury(job_id, pri)


def _kick(reader: CommandReader, line: bytes) -> Command | Rejected:
    bound = read_strtoul_uint(line, 5)
    return _R_BAD if bound is None else Kick(bound)


_R_PAUSE_BAD = Rejected(BAD_FORMAT, counted="cmd-pause-tube")


def _pause_tube(reader: CommandReader, line: bytes) -> Command | Rejected:
    start = 10
    n = len(line)
    while start < n and line[start] == 0x20:
        start += 1
    end = name_span(line, start)
    if end == start:
        return _R_BAD
    delay = read_uint_to_end(line, end, U32_MAX)
    if delay is None:
        return _R_BAD
    name = line[start:end]
    if not is_valid_tube_name(name):  # beanstalkd counts the command before this check
        return _R_PAUSE_BAD
    return PauseTube(name.decode("ascii"), delay)


def _quit(reader: CommandReader, line: bytes) -> Command:
    return Quit()


# beanstalkd's which_cmd(): prefixes tried in this order.
_PREFIXES: tuple[tuple[bytes, _Handler], ...] = (
    (b"put ", _put),
    (b"peek ", _by_id(Peek, b"peek ")),
    (b"peek-ready", _bare(PeekReady(), b"peek-ready")),
    (b"peek-delayed", _bare(PeekDelayed(), b"peek-delayed")),
    (b"peek-buried", _bare(PeekBuried(), b"peek-buried")),
    (b"reserve-with-timeout ", _reserve_with_timeout),
    (b"reserve-job ", _by_id(ReserveJob, b"reserve-job ")),
    (b"reserve", _bare(Reserve(), b"reserve")),
    (b"delete ", _by_id(Delete, b"delete ")),
    (b"release ", _release),
    (b"bury ", _bury),
    (b"kick ", _kick),
    (b"kick-job ", _by_id(KickJob, b"kick-job ")),
    (b"touch ", _by_id(Touch, b"touch ")),
    (b"stats-job ", _by_id(StatsJob, b"stats-job ")),
    (b"stats-tube ", _by_tube(StatsTube, b"stats-tube ")),
    (b"stats", _bare(Stats(), b"stats")),
    (b"use ", _by_tube(Use, b"use ")),
    (b"watch ", _by_tube(Watch, b"watch ")),
    (b"ignore ", _by_tube(Ignore, b"ignore ")),
    (b"list-tubes-watched", _bare(ListTubesWatched(), b"list-tubes-watched")),
    (b"list-tube-used", _bare(ListTubeUsed(), b"list-tube-used")),
    (b"list-tubes", _bare(ListTubes(), b"list-tubes")),
    (b"quit", _quit),
    (b"pause-tube", _pause_tube),
)

# Fast path: the first word of a line that has a space selects the same handler the ordered
# prefix scan would, for every word listed here. A line without a space can only match the
# prefixes that do not end in a space (``peek`` alone is UNKNOWN_COMMAND, ``reserve-with-timeout``
# alone matches ``reserve``), so it has its own table.
_BY_WORD: dict[bytes, _Handler] = {p.rstrip(b" "): h for p, h in _PREFIXES}
_BY_LINE: dict[bytes, _Handler] = {p: h for p, h in _PREFIXES if not p.endswith(b" ")}


def _slow_lookup(line: bytes) -> _Handler | None:
    for prefix, handler in _PREFIXES:
        if line.startswith(prefix):
            return handler
    return None


class CommandReader:
    """Incremental parser of the client → server direction (the server's side of a connection)."""

    __slots__ = (
        "_buf",
        "_eof",
        "_need",
        "_pending_put",
        "_pending_started",
        "_pos",
        "_state",
        "max_job_size",
    )

    def __init__(self, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> None:
        self.max_job_size = max_job_size
        self._buf = bytearray()
        self._pos = 0
        self._state = _WANT_COMMAND
        self._need = 0  # body bytes + 2 still expected (_WANT_BODY) or to discard (_DISCARD)
        self._pending_put: tuple[int, int, int] = (0, 0, 0)
        self._pending_started = False
        self._eof = False

    @property
    def they_closed(self) -> bool:
        """True once ``receive_data(b"")`` was called."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | memoryview) -> None:
        """Add bytes from the peer (copied: a reused receive buffer may be passed); ``b""`` marks
        the end of its stream."""
        if not data:
            self._eof = True
            return
        buf = self._buf
        if self._pos:
            if self._pos == len(buf):
                buf.clear()
                self._pos = 0
            elif self._pos > 65536:
                del buf[: self._pos]
                self._pos = 0
        if self._state == _DISCARD and self._pos == len(buf):
            # Bit bucket: drop what we can straight away instead of buffering it.
            drop = min(self._need, len(data))
            self._need -= drop
            data = data[drop:]
        buf += data

    def next_event(self) -> Event:
        """The next event, ``NEED_DATA``, or ``CLOSED`` (peer's EOF, nothing complete left)."""
        while True:
            state = self._state
            if state == _WANT_COMMAND:
                event = self._next_command()
            elif state == _WANT_BODY:
                event = self._next_body()
            elif state == _DISCARD:
                event = self._discard()
            else:
                event = self._skip_line()
            if event is not None:
                return event

    # -- states ---------------------------------------------------------------------------------

    def _no_data(self) -> Sentinel:
        return CLOSED if self._eof else NEED_DATA

    def _find_line_end(self) -> int:
        """Index of the ``\\r`` ending the line in the current window, -1 if none (yet), -2 if the
        window is full without one (beanstalkd's scan_line_end on its 224-byte buffer)."""
        buf = self._buf
        pos = self._pos
        window = min(len(buf) - pos, LINE_MAX)
        if window < 2:
            return -1
        cr = buf.find(b"\r", pos, pos + window - 1)
        if cr >= 0 and buf[cr + 1] == 0x0A:
            return cr
        return -2 if window == LINE_MAX else -1

    def _next_command(self) -> Command | Rejected | PutStarted | Sentinel | None:
        buf = self._buf
        pos = self._pos
        window = len(buf) - pos  # (``_find_line_end``, inlined: every command goes through here)
        if window > LINE_MAX:
            window = LINE_MAX
        cr = buf.find(b"\r", pos, pos + window - 1) if window >= 2 else -1
        if cr < 0 or buf[cr + 1] != 0x0A:
            if window == LINE_MAX:
                self._pos += LINE_MAX
                self._state = _WANT_ENDLINE
                return None
            return self._no_data()
        line = bytes(buf[pos:cr])
        self._pos = cr + 2
        if b"\0" in line:
            return _R_BAD
        sp = line.find(b" ")
        handler = _BY_LINE.get(line) if sp < 0 else _BY_WORD.get(line[:sp])
        if handler is None:
            handler = _slow_lookup(line)
            if handler is None:
                return _R_UNKNOWN
        return handler(self, line)

    def _skip_line(self) -> Rejected | Sentinel | None:
        cr = self._find_line_end()
        if cr == -2:
            self._pos += LINE_MAX
            return None
        if cr == -1:
            return self._no_data()
        self._pos = cr + 2
        self._state = _WANT_COMMAND
        return _R_BAD

    def _start_put(
        self, pri: int, delay: int, ttr: int, size: int, garbage: bool
    ) -> Put | Rejected | PutStarted | None:
        if size > self.max_job_size:
            self._state = _DISCARD
            self._need = size + 2
            self._pending_started = False
            discarded = self._discard()
            if discarded is JOB_TOO_BIG_R:
                return discarded
            self._pending_started = True
            return PutStarted(allocates_id=False)
        if garbage:
            return Rejected(BAD_FORMAT, counted="cmd-put")
        self._state = _WANT_BODY
        self._need = size + 2
        self._pending_put = (pri, delay, ttr)
        self._pending_started = False
        event = self._next_body()
        if isinstance(event, Sentinel):
            self._pending_started = True
            return PutStarted(allocates_id=True)
        return event

    def _next_body(self) -> Put | Rejected | Sentinel:
        need = self._need
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < need:
            return self._no_data()
        end = pos + need - 2
        self._pos = pos + need
        self._state = _WANT_COMMAND
        started = self._pending_started
        self._pending_started = False
        if buf[end] != 0x0D or buf[end + 1] != 0x0A:
            if started:
                return Rejected(EXPECTED_CRLF)
            return Rejected(EXPECTED_CRLF, counted="cmd-put", burns_id=True)
        pri, delay, ttr = self._pending_put
        put = _new(Put)  # fields checked at the put line, and the body is bytes of size <= -z
        _set(put, "priority", pri)
        _set(put, "delay", delay)
        _set(put, "ttr", ttr)
        _set(put, "body", bytes(buf[pos:end]))
        return put

    def _discard(self) -> Rejected | Sentinel:
        avail = len(self._buf) - self._pos
        drop = min(avail, self._need)
        self._pos += drop
        self._need -= drop
        if self._need:
            return self._no_data()
        self._state = _WANT_COMMAND
        if self._pending_started:
            self._pending_started = False
            return JOB_TOO_BIG_LATE
        return JOB_TOO_BIG_R


JOB_TOO_BIG_R = Rejected(JOB_TOO_BIG, counted="cmd-put")
JOB_TOO_BIG_LATE = Rejected(JOB_TOO_BIG)
