"""The instructions a routing operation gives its shell, and what the shell reports back (pure).

A core operation is a generator: it yields a ``Round`` (bytes to send on shard links, links to keep
reading, links to close), the shell performs it and sends back an ``Outcome``: for every link sent
to or waited on, the replies that arrived during the round, or the ``Failure`` that ended the link.
The generator's return value is the operation's result. No sockets, no clock of its own.

Round modes:

* ``first=False`` (a *request*): the shell returns when every link has all the replies it owes or
  has failed; each reply is bounded by the shell's reply timeout (a timeout is a ``Failure`` of
  kind ``LOST`` with ``timed_out``).
* ``cancel`` links (with no sends): see ``Round.cancel``.
* ``first=True`` (a *wait*): blocking reserves. The shell returns as soon as one link has every
  reply it owes (or failed), or when ``until`` (on the core's clock) has passed, or at once after
  one non-blocking read of every link when ``until`` is already past. Links still owing replies
  keep them owed: a later round waits on them again (``wait``) or closes them (``close``).

Invariants: the shell connects a link the first time something is sent on it (a connection failure
is reported as ``CONNECT``: nothing was sent); before sending on a link connected earlier, it
checks without waiting that the shard has not closed it (``STALE``: nothing was sent); on any
failure the shell closes the link's transport; ``close`` links are closed before anything is
sent. Links are identified by object.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from ..protocol import Reply

if TYPE_CHECKING:
    from .links import Link

__all__ = ["Failure", "FailureKind", "Op", "Outcome", "Round", "Send"]

T = TypeVar("T")


class FailureKind(enum.Enum):
    """What the shard may have seen of the commands sent on a link that failed."""

    CONNECT = "connect"
    """The connection could not be made: nothing was sent."""
    SEND = "send"
    """Sending failed: the commands never reached the shard whole, so none ran."""
    LOST = "lost"
    """The commands were sent and their replies did not (all) come: their effect is unknown."""
    STALE = "stale"
    """The link's connection was found closed by the shard before anything was sent (a shard
    restart, an idle timeout): nothing was sent, and the shard is not to blame."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A link's failure, as the shell classified it."""

    kind: FailureKind
    message: str
    timed_out: bool = False

    def __str__(self) -> str:
        return self.message


class Send(NamedTuple):
    """Send ``data`` on ``link``: commands that produce ``replies`` replies.

    ``posted``: the replies those commands must get (``use`` answers ``USING``, whatever
    else the shard runs). The shell then answers the send with them as soon as it is written,
    without waiting, and checks the shard's own replies when they come: one that differs
    fails the link (its next use finds it closed). Only for a session whose shell posts
    (``Session.posting``)."""

    link: Link
    data: bytes
    replies: int
    posted: tuple[Reply, ...] = ()


class Round:
    """One step of an operation: what the shell is to do now.

    Attributes:
        sends: bytes to send, each on its link.
        wait: links that already owe replies, to be read in this round too.
        first: a wait round (see the module docstring).
        until: a wait round's deadline on the core's clock (None: none).
        close: links to close before anything is sent.
        cancel: waits to cancel: read, without waiting, what has already arrived on each, then
            half-close each link still owing replies, in the same shell step (the shard then
            answers its reserve at once: ``TIMED_OUT``, or a job it reserved just before). The
            outcome has the replies read before the half-close (possibly partial); the core
            treats a link still owing as closed. The shell reads its last replies (the asyncio
            shell in the background), passes them to ``reserve.cancelled`` (a job in them is an
            unseen reserve) and closes it.
        partial: a wait round that ends as soon as one link has any reply it owes (not all
            of them): the proxy streams the replies of a run that holds a blocking reserve.
    """

    __slots__ = ("cancel", "close", "first", "partial", "sends", "until", "wait")

    def __init__(
        self,
        sends: Sequence[Send] = (),
        wait: Sequence[Link] = (),
        first: bool = False,
        until: float | None = None,
        close: Sequence[Link] = (),
        cancel: Sequence[Link] = (),
        partial: bool = False,
    ) -> None:
        self.partial = partial
        self.sends = sends
        self.wait = wait
        self.first = first
        self.until = until
        self.close = close
        self.cancel = cancel

    def __repr__(self) -> str:
        return (
            f"Round(sends={list(self.sends)!r}, wait={list(self.wait)!r}, first={self.first},"
            f" until={self.until}, close={list(self.close)!r}, cancel={list(self.cancel)!r})"
        )


Outcome = dict["Link", "list[Reply] | Failure"]
"""Per link of the round: the replies that arrived during it, in order, or its failure."""

Op = Generator[Round, Outcome, T]
"""A core operation: yields rounds, receives their outcomes, returns its result."""
