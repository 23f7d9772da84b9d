"""Reply events: what a beanstalkd server answers.

Replies are immutable, slotted records (``_record.Record``: what a frozen dataclass gives, without
its start-up cost) with ``encode()``. Replies without arguments are also
available as module-level singletons (``DELETED``, ``NOT_FOUND`` …) whose encoded bytes are
precomputed, so the server's hot path allocates nothing for them. ``RESERVED``, ``FOUND`` and
``OK`` carry a body; everything else is a single line.
"""

from __future__ import annotations

from ._record import Record, record

TYPE_CHECKING = False  # ``typing`` costs start-up time; type checkers take this name as true
if TYPE_CHECKING:
    from typing import ClassVar

_set = object.__setattr__  # the records are immutable: __init__ sets their fields past that

__all__ = [
    "BAD_FORMAT",
    "BURIED",
    "DEADLINE_SOON",
    "DELETED",
    "DRAINING",
    "EXPECTED_CRLF",
    "INTERNAL_ERROR",
    "JOB_TOO_BIG",
    "KICKED",
    "NOT_FOUND",
    "NOT_IGNORED",
    "OUT_OF_MEMORY",
    "PAUSED",
    "RELEASED",
    "TIMED_OUT",
    "TOUCHED",
    "UNKNOWN_COMMAND",
    "Buried",
    "ErrorReply",
    "Found",
    "Inserted",
    "Kicked",
    "Ok",
    "Reply",
    "Reserved",
    "Using",
    "Watching",
    "Word",
    "encode_inserted",
    "encode_job",
    "encode_kicked",
    "encode_ok",
    "encode_using",
    "encode_watching",
]


# Wire formats of the replies with arguments. The reply classes encode through these, and the
# server's hot path calls them directly to skip building an event object per reply.


def encode_inserted(job_id: int) -> bytes:
    return b"INSERTED %d\r\n" % job_id


def encode_job(word: bytes, job_id: int, body: bytes) -> bytes:
    """``RESERVED``/``FOUND`` line plus body."""
    return b"%b %d %d\r\n%b\r\n" % (word, job_id, len(body), body)


def encode_ok(body: bytes) -> bytes:
    return b"OK %d\r\n%b\r\n" % (len(body), body)


def encode_using(tube: str) -> bytes:
    return b"USING %b\r\n" % tube.encode("ascii")


def encode_watching(count: int) -> bytes:
    return b"WATCHING %d\r\n" % count


def encode_kicked(count: int) -> bytes:
    return b"KICKED %d\r\n" % count


class Reply(Record):
    """Base class of all replies."""

    __slots__ = ()

    def encode(self) -> bytes:
        raise NotImplementedError


@record(frozen=True)
class Word(Reply):
    """A reply that is one word with no argument, e.g. ``DELETED``."""

    word: str
    __slots__ = __match_args__ = ("word",)
    error: ClassVar[bool] = False

    def __init__(self, word: str) -> None:
        _set(self, "word", word)

    def encode(self) -> bytes:
        return self.word.encode("ascii") + b"\r\n"


@record(frozen=True)
class ErrorReply(Word):
    """A one-word error: BAD_FORMAT, UNKNOWN_COMMAND, EXPECTED_CRLF, JOB_TOO_BIG, ..."""

    __slots__ = ()
    error: ClassVar[bool] = True


@record(frozen=True)
class Inserted(Reply):
    id: int
    __slots__ = __match_args__ = ("id",)

    def __init__(self, id: int) -> None:
        _set(self, "id", id)

    def encode(self) -> bytes:
        return encode_inserted(self.id)


@record(frozen=True)
class Buried(Reply):
    """``BURIED <id>`` after a put (no memory to queue it), or plain ``BURIED`` (id None)."""

    id: int | None
    __slots__ = __match_args__ = ("id",)

    def __init__(self, id: int | None = None) -> None:
        _set(self, "id", id)

    def encode(self) -> bytes:
        return b"BURIED\r\n" if self.id is None else b"BURIED %d\r\n" % self.id


@record(frozen=True)
class Using(Reply):
    tube: str
    __slots__ = __match_args__ = ("tube",)

    def __init__(self, tube: str) -> None:
        _set(self, "tube", tube)

    def encode(self) -> bytes:
        return encode_using(self.tube)


@record(frozen=True)
class Watching(Reply):
    count: int
    __slots__ = __match_args__ = ("count",)

    def __init__(self, count: int) -> None:
        _set(self, "count", count)

    def encode(self) -> bytes:
        return encode_watching(self.count)


@record(frozen=True)
class Kicked(Reply):
    """``KICKED <count>`` after kick, or plain ``KICKED`` (count None) after kick-job."""

    count: int | None
    __slots__ = __match_args__ = ("count",)

    def __init__(self, count: int | None = None) -> None:
        _set(self, "count", count)

    def encode(self) -> bytes:
        return b"KICKED\r\n" if self.count is None else encode_kicked(self.count)


@record(frozen=True)
class _JobReply(Reply):
    id: int
    body: bytes
    __slots__ = __match_args__ = ("id", "body")
    word: ClassVar[bytes] = b""

    def __init__(self, id: int, body: bytes) -> None:
        _set(self, "id", id)
        _set(self, "body", body)

    def encode(self) -> bytes:
        return encode_job(self.word, self.id, self.body)


@record(frozen=True)
class Reserved(_JobReply):
    __slots__ = ()
    word: ClassVar[bytes] = b"RESERVED"


@record(frozen=True)
class Found(_JobReply):
    __slots__ = ()
    word: ClassVar[bytes] = b"FOUND"


@record(frozen=True)
class Ok(Reply):
    """``OK <bytes>`` + a YAML body (stats, stats-job, stats-tube, list-tubes*)."""

    body: bytes
    __slots__ = __match_args__ = ("body",)

    def __init__(self, body: bytes) -> None:
        _set(self, "body", body)

    def encode(self) -> bytes:
        return encode_ok(self.body)


DELETED = Word("DELETED")
RELEASED = Word("RELEASED")
TOUCHED = Word("TOUCHED")
PAUSED = Word("PAUSED")
KICKED = Kicked()
BURIED = Buried()
NOT_FOUND = Word("NOT_FOUND")
NOT_IGNORED = Word("NOT_IGNORED")
DEADLINE_SOON = Word("DEADLINE_SOON")
TIMED_OUT = Word("TIMED_OUT")
BAD_FORMAT = ErrorReply("BAD_FORMAT")
UNKNOWN_COMMAND = ErrorReply("UNKNOWN_COMMAND")
EXPECTED_CRLF = ErrorReply("EXPECTED_CRLF")
JOB_TOO_BIG = ErrorReply("JOB_TOO_BIG")
DRAINING = ErrorReply("DRAINING")
OUT_OF_MEMORY = ErrorReply("OUT_OF_MEMORY")
INTERNAL_ERROR = ErrorReply("INTERNAL_ERROR")

WORDS: dict[bytes, Word] = {
    w.word.encode("ascii"): w
    for w in (
        DELETED, RELEASED, TOUCHED, PAUSED, NOT_FOUND, NOT_IGNORED, DEADLINE_SOON, TIMED_OUT,
        BAD_FORMAT, UNKNOWN_COMMAND, EXPECTED_CRLF, JOB_TOO_BIG, DRAINING, OUT_OF_MEMORY,
        INTERNAL_ERROR,
    )
}  # fmt: skip
"""One-word replies by their wire word (the client-role reader's table)."""
