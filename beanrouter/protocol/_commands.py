"""Command events: what a client sends to a beanstalkd server.

Each command is an immutable, slotted record (``_record.Record``: what a frozen dataclass gives,
without its start-up cost) that validates its fields when built, knows the ``cmd-*`` stats counter
the server bumps for it (``stat``) and serialises itself with ``encode()``.
The server-role reader (``_server.py``) produces them; the client role (``_client.py``) sends them.
Tube names are ``str`` (ASCII by the protocol's name rules); job bodies are ``bytes``.
"""

from __future__ import annotations

from ._errors import LocalProtocolError
from ._record import Record, record
from ._wire import U32_MAX, U64_MAX, is_valid_tube_name

_set = object.__setattr__  # the records are immutable: __init__ sets their fields past that

TYPE_CHECKING = False  # ``typing`` costs start-up time; type checkers take this name as true
if TYPE_CHECKING:
    from typing import ClassVar

__all__ = [
    "COMMAND_TYPES",
    "Bury",
    "Command",
    "Delete",
    "Ignore",
    "Kick",
    "KickJob",
    "ListTubeUsed",
    "ListTubes",
    "ListTubesWatched",
    "PauseTube",
    "Peek",
    "PeekBuried",
    "PeekDelayed",
    "PeekReady",
    "Put",
    "Quit",
    "Release",
    "Reserve",
    "ReserveJob",
    "ReserveWithTimeout",
    "Stats",
    "StatsJob",
    "StatsTube",
    "Touch",
    "Use",
    "Watch",
    "encode_put",
    "may_wait",
]


def _u32(name: str, value: int) -> None:
    if not 0 <= value <= U32_MAX:
        raise LocalProtocolError(f"{name} must be in 0..{U32_MAX}, got {value}")


def _job_id(value: int) -> None:
    if not 0 <= value <= U64_MAX:
        raise LocalProtocolError(f"job id must be in 0..{U64_MAX}, got {value}")


def _tube(value: str) -> None:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    if not is_valid_tube_name(raw):
        raise LocalProtocolError(f"invalid tube name {value!r}")


class Command(Record):
    """Base class of all commands."""

    __slots__ = ()
    stat: ClassVar[str | None] = None
    """The server's ``cmd-*`` counter for this command (None: not counted)."""

    def encode(self) -> bytes:
        raise NotImplementedError


@record(frozen=True)
class Put(Command):
    priority: int
    delay: int
    ttr: int
    body: bytes
    __slots__ = __match_args__ = ("priority", "delay", "ttr", "body")
    stat: ClassVar[str | None] = "cmd-put"

    def __init__(self, priority: int, delay: int, ttr: int, body: bytes) -> None:
        _u32("priority", priority)
        _u32("delay", delay)
        _u32("ttr", ttr)
        if not isinstance(body, bytes):
            raise LocalProtocolError("put body must be bytes")
        _u32("body size", len(body))
        _set(self, "priority", priority)
        _set(self, "delay", delay)
        _set(self, "ttr", ttr)
        _set(self, "body", body)

    def encode(self) -> bytes:
        return b"put %d %d %d %d\r\n%b\r\n" % (
            self.priority,
            self.delay,
            self.ttr,
            len(self.body),
            self.body,
        )


def encode_put(priority: int, delay: int, ttr: int, body: bytes) -> bytes:
    """The bytes of ``Put(priority, delay, ttr, body)`` without building the event (a client's hot
    path); invalid arguments raise the same ``LocalProtocolError`` as ``Put``."""
    if (
        type(body) is not bytes
        or not 0 <= priority <= U32_MAX
        or not 0 <= delay <= U32_MAX
        or not 0 <= ttr <= U32_MAX
        or len(body) > U32_MAX
    ):
        return Put(priority, delay, ttr, body).encode()  # raises the precise error
    return b"put %d %d %d %d\r\n%b\r\n" % (priority, delay, ttr, len(body), body)


@record(frozen=True)
class _TubeCommand(Command):
    tube: str
    __slots__ = __match_args__ = ("tube",)
    verb: ClassVar[bytes] = b""

    def __init__(self, tube: str) -> None:
        _tube(tube)
        _set(self, "tube", tube)

    def encode(self) -> bytes:
        return self.verb + self.tube.encode("ascii") + b"\r\n"


@record(frozen=True)
class Use(_TubeCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-use"
    verb: ClassVar[bytes] = b"use "


@record(frozen=True)
class Watch(_TubeCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-watch"
    verb: ClassVar[bytes] = b"watch "


@record(frozen=True)
class Ignore(_TubeCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-ignore"
    verb: ClassVar[bytes] = b"ignore "


@record(frozen=True)
class StatsTube(_TubeCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-stats-tube"
    verb: ClassVar[bytes] = b"stats-tube "


@record(frozen=True)
class _JobCommand(Command):
    id: int
    __slots__ = __match_args__ = ("id",)
    verb: ClassVar[bytes] = b""

    def __init__(self, id: int) -> None:
        _job_id(id)
        _set(self, "id", id)

    def encode(self) -> bytes:
        return b"%b%d\r\n" % (self.verb, self.id)


@record(frozen=True)
class ReserveJob(_JobCommand):
    __slots__ = ()
    verb: ClassVar[bytes] = b"reserve-job "


@record(frozen=True)
class Delete(_JobCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-delete"
    verb: ClassVar[bytes] = b"delete "


@record(frozen=True)
class Touch(_JobCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-touch"
    verb: ClassVar[bytes] = b"touch "


@record(frozen=True)
class Peek(_JobCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-peek"
    verb: ClassVar[bytes] = b"peek "


@record(frozen=True)
class KickJob(_JobCommand):
    __slots__ = ()
    # beanstalkd counts kick-job in op_ct but prints no stats key for it.
    verb: ClassVar[bytes] = b"kick-job "


@record(frozen=True)
class StatsJob(_JobCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-stats-job"
    verb: ClassVar[bytes] = b"stats-job "


@record(frozen=True)
class Release(Command):
    id: int
    priority: int
    delay: int
    __slots__ = __match_args__ = ("id", "priority", "delay")
    stat: ClassVar[str | None] = "cmd-release"

    def __init__(self, id: int, priority: int, delay: int) -> None:
        _job_id(id)
        _u32("priority", priority)
        _u32("delay", delay)
        _set(self, "id", id)
        _set(self, "priority", priority)
        _set(self, "delay", delay)

    def encode(self) -> bytes:
        return b"release %d %d %d\r\n" % (self.id, self.priority, self.delay)


@record(frozen=True)
class Bury(Command):
    id: int
    priority: int
    __slots__ = __match_args__ = ("id", "priority")
    stat: ClassVar[str | None] = "cmd-bury"

    def __init__(self, id: int, priority: int) -> None:
        _job_id(id)
        _u32("priority", priority)
        _set(self, "id", id)
        _set(self, "priority", priority)

    def encode(self) -> bytes:
        return b"bury %d %d\r\n" % (self.id, self.priority)


@record(frozen=True)
class ReserveWithTimeout(Command):
    """``timeout`` in seconds; 0 answers at once, a negative value blocks forever (as 1.12 does)."""

    timeout: int
    __slots__ = __match_args__ = ("timeout",)
    stat: ClassVar[str | None] = "cmd-reserve-with-timeout"

    def __init__(self, timeout: int) -> None:
        if not -(2**31) <= timeout < 2**31:
            raise LocalProtocolError(f"timeout must fit a C int, got {timeout}")
        _set(self, "timeout", timeout)

    def encode(self) -> bytes:
        return b"reserve-with-timeout %d\r\n" % self.timeout


@record(frozen=True)
class Kick(Command):
    bound: int
    __slots__ = __match_args__ = ("bound",)
    stat: ClassVar[str | None] = "cmd-kick"

    def __init__(self, bound: int) -> None:
        _u32("kick bound", bound)
        _set(self, "bound", bound)

    def encode(self) -> bytes:
        return b"kick %d\r\n" % self.bound


@record(frozen=True)
class PauseTube(Command):
    tube: str
    delay: int
    __slots__ = __match_args__ = ("tube", "delay")
    stat: ClassVar[str | None] = "cmd-pause-tube"

    def __init__(self, tube: str, delay: int) -> None:
        _tube(tube)
        _u32("delay", delay)
        _set(self, "tube", tube)
        _set(self, "delay", delay)

    def encode(self) -> bytes:
        return b"pause-tube %b %d\r\n" % (self.tube.encode("ascii"), self.delay)


@record(frozen=True)
class _BareCommand(Command):
    __slots__ = ()
    line: ClassVar[bytes] = b""

    def encode(self) -> bytes:
        return self.line


@record(frozen=True)
class Reserve(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-reserve"
    line: ClassVar[bytes] = b"reserve\r\n"


@record(frozen=True)
class PeekReady(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-peek-ready"
    line: ClassVar[bytes] = b"peek-ready\r\n"


@record(frozen=True)
class PeekDelayed(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-peek-delayed"
    line: ClassVar[bytes] = b"peek-delayed\r\n"


@record(frozen=True)
class PeekBuried(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-peek-buried"
    line: ClassVar[bytes] = b"peek-buried\r\n"


@record(frozen=True)
class Stats(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-stats"
    line: ClassVar[bytes] = b"stats\r\n"


@record(frozen=True)
class ListTubes(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-list-tubes"
    line: ClassVar[bytes] = b"list-tubes\r\n"


@record(frozen=True)
class ListTubeUsed(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-list-tube-used"
    line: ClassVar[bytes] = b"list-tube-used\r\n"


@record(frozen=True)
class ListTubesWatched(_BareCommand):
    __slots__ = ()
    stat: ClassVar[str | None] = "cmd-list-tubes-watched"
    line: ClassVar[bytes] = b"list-tubes-watched\r\n"


@record(frozen=True)
class Quit(_BareCommand):
    __slots__ = ()
    line: ClassVar[bytes] = b"quit\r\n"


COMMAND_TYPES: tuple[type[Command], ...] = (
    Put, Use, Reserve, ReserveWithTimeout, ReserveJob, Delete, Release, Bury, Touch, Watch,
    Ignore, Peek, PeekReady, PeekDelayed, PeekBuried, Kick, KickJob, StatsJob, StatsTube, Stats,
    ListTubes, ListTubeUsed, ListTubesWatched, PauseTube, Quit,
)  # fmt: skip


def may_wait(cmd: Command) -> bool:
    """``cmd`` is a reserve that may wait: ``reserve``, or ``reserve-with-timeout`` other than 0
    (a negative timeout waits forever, as with beanstalkd)."""
    return type(cmd) is Reserve or (isinstance(cmd, ReserveWithTimeout) and cmd.timeout != 0)
