"""The router's exceptions: one class per beanstalkd reply word, plus the cluster's own failures.

Reply errors (``NotFound``, ``DeadlineSoon``...) mean what they mean on one beanstalkd and are
found through ``REPLY_ERRORS``. Cluster errors say what a cluster adds: no shard could take a put
(``ShardUnavailable``), a put whose fate is unknown (``PutUncertain``), a job id that names no shard
of this cluster (``JobIdError``), a configuration mistake (``ConfigError``, with line and field), an
argument no beanstalkd command can carry (``InvalidArgument``: nothing was sent).
Network failures inside one shard never escape as raw ``OSError`` from puts and reserves: they are
handled by failover or turned into one of the errors above.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..protocol import LocalProtocolError, Ok, Reply, StatValue, Word, parse_mapping

__all__ = [
    "REPLY_ERRORS",
    "BadFormat",
    "Buried",
    "CommandError",
    "ConfigError",
    "DeadlineSoon",
    "Draining",
    "ExpectedCrlf",
    "InternalError",
    "InvalidArgument",
    "JobIdError",
    "JobTooBig",
    "NotFound",
    "NotIgnored",
    "OutOfMemory",
    "PutUncertain",
    "ReservationLost",
    "RouterError",
    "ShardUnavailable",
    "UnexpectedReply",
    "UnknownCommand",
    "argument_check",
    "error_for_reply",
    "invalid_argument",
    "reply_mapping",
]


class RouterError(Exception):
    """Base class of every error the router raises."""


class CommandError(RouterError):
    """A shard answered a command with an error word."""

    word = ""


class NotFound(CommandError):
    """NOT_FOUND: no such job or tube (or the job is not reserved by this router)."""

    word = "NOT_FOUND"


class DeadlineSoon(CommandError):
    """DEADLINE_SOON: a job this router holds is less than a second from its TTR deadline."""

    word = "DEADLINE_SOON"


class NotIgnored(CommandError):
    """NOT_IGNORED: the tube is the only one watched."""

    word = "NOT_IGNORED"


class JobTooBig(CommandError):
    """JOB_TOO_BIG: the body is larger than the shard's max-job-size."""

    word = "JOB_TOO_BIG"


class Draining(CommandError):
    """DRAINING: the shard takes no new jobs."""

    word = "DRAINING"


class OutOfMemory(CommandError):
    """OUT_OF_MEMORY: the shard could not store the job."""

    word = "OUT_OF_MEMORY"


class InternalError(CommandError):
    """INTERNAL_ERROR: a bug in the shard."""

    word = "INTERNAL_ERROR"


class BadFormat(CommandError):
    """BAD_FORMAT: the shard did not accept the command line (a router bug)."""

    word = "BAD_FORMAT"


class UnknownCommand(CommandError):
    """UNKNOWN_COMMAND: the shard does not know the command."""

    word = "UNKNOWN_COMMAND"


class ExpectedCrlf(CommandError):
    """EXPECTED_CRLF: the body was not followed by CRLF (a router bug)."""

    word = "EXPECTED_CRLF"


class Buried(CommandError):
    """BURIED: the put job or a released job was buried (the shard ran out of memory).

    Args:
        message: the text of the error.
        id: the buried job's global id, when the reply carried one.
    """

    word = "BURIED"

    def __init__(self, message: str, id: int | None = None) -> None:
        super().__init__(message)
        self.id = id


class UnexpectedReply(RouterError):
    """A shard sent a reply that does not answer the command (a protocol bug or a broken peer)."""


class ShardUnavailable(RouterError, ConnectionError):
    """No shard that may serve the request could be reached (or every one refused the put).

    Args:
        message: the text of the error.
        causes: ``(shard name, reason)`` for every shard tried or skipped.
    """

    def __init__(self, message: str, causes: tuple[tuple[str, str], ...] = ()) -> None:
        detail = "; ".join(f"{name}: {why}" for name, why in causes)
        super().__init__(f"{message} ({detail})" if detail else message)
        self.causes = causes


class PutUncertain(RouterError):
    """A put was sent but its reply never came: the job may or may not be stored on ``shard``.

    The router does not retry it (that could store the job twice); the caller decides.

    Args:
        message: the text of the error.
        shard: name of the shard the put was sent to.
        tube: the tube it was put into.
    """

    def __init__(self, message: str, shard: str, tube: str) -> None:
        super().__init__(message)
        self.shard = shard
        self.tube = tube


class ReservationLost(NotFound):
    """The connection that held this reserved job was closed (the shard failed, timed out, was
    restarted, or a reserve was interrupted): the shard put the job back to ready, and it will be
    delivered again. Raised by the first ``delete``/``release``/``bury``/``touch`` of the job after
    the loss instead of acting on it from another connection; a later call by id acts on the job
    like any client of the shard would.

    Args:
        message: the text of the error.
        shard: name of the shard that holds the job.
    """

    word = "NOT_FOUND"

    def __init__(self, message: str, shard: str) -> None:
        super().__init__(message)
        self.shard = shard


class JobIdError(NotFound, ValueError):
    """A job id this cluster cannot route (out of range, or naming no configured shard).

    It is a ``NotFound``: no job of this cluster has that id.
    """

    word = "NOT_FOUND"


class ConfigError(RouterError, ValueError):
    """A configuration mistake, with the line (1-based, when known) and the field it is in.

    Args:
        message: what is wrong.
        line: 1-based line number in the file, or None.
        field: dotted path of the field, e.g. ``servers[2].weight``, or None.
        source: the file name, for the message.
    """

    def __init__(
        self,
        message: str,
        line: int | None = None,
        field: str | None = None,
        source: str | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.field = field
        self.source = source
        where = ""
        if source is not None:
            where = source + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        if field is not None:
            where += f"{field}: "
        super().__init__(where + message)


class InvalidArgument(RouterError, ValueError):
    """An argument no beanstalkd command can carry: an invalid tube name, a priority, delay, TTR or
    timeout out of range, a body that is not bytes. Raised before anything is sent, so no shard
    saw the call. It is a ``ValueError`` too (what Python code expects for a bad value).
    """


def invalid_argument(exc: LocalProtocolError, what: str | None = None) -> InvalidArgument:
    """The ``InvalidArgument`` for the codec's refusal to build a command.

    Use as ``except LocalProtocolError as exc: raise invalid_argument(exc, "put") from exc``
    around the construction of the command (free when nothing is raised).

    Args:
        exc: what the codec raised while the command was built.
        what: the call, for the message (``"put"``, ``"use"``...), or None.
    """
    return InvalidArgument(f"{what}: {exc}" if what else str(exc))


@contextmanager
def argument_check(what: str | None = None) -> Iterator[None]:
    """Turn a ``LocalProtocolError`` raised in the block into ``InvalidArgument``.

    ``with argument_check("use"): command = Use(tube)``. Same conversion as
    ``invalid_argument``; for hot paths prefer the ``try``/``except`` form, which costs
    nothing when the arguments are valid.
    """
    try:
        yield
    except LocalProtocolError as exc:
        raise invalid_argument(exc, what) from exc


REPLY_ERRORS: dict[str, type[CommandError]] = {
    cls.word: cls
    for cls in (
        NotFound,
        DeadlineSoon,
        NotIgnored,
        JobTooBig,
        Draining,
        OutOfMemory,
        InternalError,
        BadFormat,
        UnknownCommand,
        ExpectedCrlf,
    )
}
"""Error class by reply word."""


def error_for_reply(reply: Reply, what: str) -> RouterError:
    """The exception for an error reply to ``what`` (``UnexpectedReply`` for anything else)."""
    if isinstance(reply, Word):
        cls = REPLY_ERRORS.get(reply.word)
        if cls is not None:
            return cls(f"{what}: {reply.word}")
    return UnexpectedReply(f"{what}: unexpected reply {reply!r}")


def reply_mapping(reply: Reply, what: str) -> dict[str, StatValue]:
    """The parsed YAML mapping of an ``OK`` reply, or the error the reply stands for."""
    if isinstance(reply, Ok):
        return parse_mapping(reply.body)
    raise error_for_reply(reply, what)
