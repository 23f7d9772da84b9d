"""Command events: what a client sends to a beanstalkd server.

Each command is a frozen, slotted dataclass that validates its fields when built, knows the
``cmd-*`` stats counter the server bumps for it (``stat``) and serialises itself with ``encode()``.
The server-role reader (``_server.py``) produces them; the client role (``_client.py``) sends them.
Tube names are ``str`` (ASCII by the protocol's name rules); job bodies are ``bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ._errors import LocalProtocolError
from ._wire import U32_MAX, U64_MAX, is_valid_tube_name

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


class Command:
    """Base class of all commands."""

    __slots__ = ()
    stat: ClassVar[str | None] = None
    """The server's ``cmd-*`` counter for this command (None: not counted)."""

    def encode(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Put(Command):
    priority: int
    delay: int
    ttr: int
    body: bytes
    stat: ClassVar[str | None] = "cmd-put"

    def __post_init__(self) -> None:
        _u32("priority", self.priority)
        _u32("delay", self.delay)
        _u32("ttr", self.ttr)
        if not isinstance(self.body, bytes):
            raise LocalProtocolError("put body must be bytes")
        _u32("body size", len(self.body))

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


@dataclass(frozen=True, slots=True)
class _TubeCommand(Command):
    tube: str
    verb: ClassVar[bytes] = b""

    def __post_init__(self) -> None:
        _tube(self.tube)

    def encode(self) -> bytes:
        return self.verb + self.tube.encode("ascii") + b"\r\n"


@dataclass(frozen=True, slots=True)
class Use(_TubeCommand):
    stat: ClassVar[str | None] = "cmd-use"
    verb: ClassVar[bytes] = b"use "


@dataclass(frozen=True, slots=True)
class Watch(_TubeCommand):
    stat: ClassVar[str | None] = "cmd-watch"
    verb: ClassVar[bytes] = b"watch "


@dataclass(frozen=True, slots=True)
class Ignore(_TubeCommand):
    stat: ClassVar[str | None] = "cmd-ignore"
    verb: ClassVar[bytes] = b"ignore "


@dataclass(frozen=True, slots=True)
class StatsTube(_TubeCommand):
    stat: ClassVar[str | None] = "cmd-stats-tube"
    verb: ClassVar[bytes] = b"stats-tube "


@dataclass(frozen=True, slots=True)
class _JobCommand(Command):
    id: int
    verb: ClassVar[bytes] = b""

    def __post_init__(self) -> None:
        _job_id(self.id)

    def encode(self) -> bytes:
        return b"%b%d\r\n" % (self.verb, self.id)


@dataclass(frozen=True, slots=True)
class ReserveJob(_JobCommand):
    verb: ClassVar[bytes] = b"reserve-job "


@dataclass(frozen=True, slots=True)
class Delete(_JobCommand):
    stat: ClassVar[str | None] = "cmd-delete"
    verb: ClassVar[bytes] = b"delete "


@dataclass(frozen=True, slots=True)
class Touch(_JobCommand):
    stat: ClassVar[str | None] = "cmd-touch"
    verb: ClassVar[bytes] = b"touch "


@dataclass(frozen=True, slots=True)
class Peek(_JobCommand):
    stat: ClassVar[str | None] = "cmd-peek"
    verb: ClassVar[bytes] = b"peek "


@dataclass(frozen=True, slots=True)
class KickJob(_JobCommand):
    # beanstalkd counts kick-job in op_ct but prints no stats key for it.
    verb: ClassVar[bytes] = b"kick-job "


@dataclass(frozen=True, slots=True)
class StatsJob(_JobCommand):
    stat: ClassVar[str | None] = "cmd-stats-job"
    verb: ClassVar[bytes] = b"stats-job "


@dataclass(frozen=True, slots=True)
class Release(Command):
    id: int
    priority: int
    delay: int
    stat: ClassVar[str | None] = "cmd-release"

    def __post_init__(self) -> None:
        _job_id(self.id)
        _u32("priority", self.priority)
        _u32("delay", self.delay)

    def encode(self) -> bytes:
        return b"release %d %d %d\r\n" % (self.id, self.priority, self.delay)


@dataclass(frozen=True, slots=True)
class Bury(Command):
    id: int
    priority: int
    stat: ClassVar[str | None] = "cmd-bury"

    def __post_init__(self) -> None:
        _job_id(self.id)
        _u32("priority", self.priority)

    def encode(self) -> bytes:
        return b"bury %d %d\r\n" % (self.id, self.priority)


@dataclass(frozen=True, slots=True)
class ReserveWithTimeout(Command):
    """``timeout`` in seconds; 0 answers at once, a negative value blocks forever (as 1.12 does)."""

    timeout: int
    stat: ClassVar[str | None] = "cmd-reserve-with-timeout"

    def __post_init__(self) -> None:
        if not -(2**31) <= self.timeout < 2**31:
            raise LocalProtocolError(f"timeout must fit a C int, got {self.timeout}")

    def encode(self) -> bytes:
        return b"reserve-with-timeout %d\r\n" % self.timeout


@dataclass(frozen=True, slots=True)
class Kick(Command):
    bound: int
    stat: ClassVar[str | None] = "cmd-kick"

    def __post_init__(self) -> None:
        _u32("kick bound", self.bound)

    def encode(self) -> bytes:
        return b"kick %d\r\n" % self.bound


@dataclass(frozen=True, slots=True)
class PauseTube(Command):
    tube: str
    delay: int
    stat: ClassVar[str | None] = "cmd-pause-tube"

    def __post_init__(self) -> None:
        _tube(self.tube)
        _u32("delay", self.delay)

    def encode(self) -> bytes:
        return b"pause-tube %b %d\r\n" % (self.tube.encode("ascii"), self.delay)


@dataclass(frozen=True, slots=True)
class _BareCommand(Command):
    line: ClassVar[bytes] = b""

    def encode(self) -> bytes:
        return self.line


@dataclass(frozen=True, slots=True)
class Reserve(_BareCommand):
    stat: ClassVar[str | None] = "cmd-reserve"
    line: ClassVar[bytes] = b"reserve\r\n"


@dataclass(frozen=True, slots=True)
class PeekReady(_BareCommand):
    stat: ClassVar[str | None] = "cmd-peek-ready"
    line: ClassVar[bytes] = b"peek-ready\r\n"


@dataclass(frozen=True, slots=True)
class PeekDelayed(_BareCommand):
    stat: ClassVar[str | None] = "cmd-peek-delayed"
    line: ClassVar[bytes] = b"peek-delayed\r\n"


@dataclass(frozen=True, slots=True)
class PeekBuried(_BareCommand):
    stat: ClassVar[str | None] = "cmd-peek-buried"
    line: ClassVar[bytes] = b"peek-buried\r\n"


@dataclass(frozen=True, slots=True)
class Stats(_BareCommand):
    stat: ClassVar[str | None] = "cmd-stats"
    line: ClassVar[bytes] = b"stats\r\n"


@dataclass(frozen=True, slots=True)
class ListTubes(_BareCommand):
    stat: ClassVar[str | None] = "cmd-list-tubes"
    line: ClassVar[bytes] = b"list-tubes\r\n"


@dataclass(frozen=True, slots=True)
class ListTubeUsed(_BareCommand):
    stat: ClassVar[str | None] = "cmd-list-tube-used"
    line: ClassVar[bytes] = b"list-tube-used\r\n"


@dataclass(frozen=True, slots=True)
class ListTubesWatched(_BareCommand):
    stat: ClassVar[str | None] = "cmd-list-tubes-watched"
    line: ClassVar[bytes] = b"list-tubes-watched\r\n"


@dataclass(frozen=True, slots=True)
class Quit(_BareCommand):
    line: ClassVar[bytes] = b"quit\r\n"


COMMAND_TYPES: tuple[type[Command], ...] = (
    Put, Use, Reserve, ReserveWithTimeout, ReserveJob, Delete, Release, Bury, Touch, Watch,
    Ignore, Peek, PeekReady, PeekDelayed, PeekBuried, Kick, KickJob, StatsJob, StatsTube, Stats,
    ListTubes, ListTubeUsed, ListTubesWatched, PauseTube, Quit,
)  # fmt: skip
