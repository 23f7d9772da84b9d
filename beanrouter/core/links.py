"""A session's links to the shards: what the core knows of each connection (pure).

A ``Link`` is one connection of one session to one shard. The core keeps its protocol state (the
tube it uses, the tubes it watches, the jobs it holds, the replies it is owed); the shell keeps the
transport in ``io``. Invariants: ``used`` and ``watched`` mirror the shard's view of the
connection once every reply owed has arrived (they are updated when the commands are issued, and a
link whose commands fail is closed, never reused); a link owing replies (``owed``) or with a
reserve not yet settled (``reserving``) is never given a new command; a link holding jobs
(``held``) is never closed to cancel a wait (closing it would give those jobs back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import Ignore, Use, Watch

if TYPE_CHECKING:
    from .cluster import ShardState

__all__ = ["Link"]


class Link:
    """One connection of a session to one shard."""

    __slots__ = ("closed", "held", "io", "owed", "reserving", "shard", "used", "watched")

    def __init__(self, shard: ShardState) -> None:
        self.shard = shard
        self.used = "default"
        self.watched: list[str] = ["default"]
        self.held = 0
        """Jobs reserved through this link and not yet settled (handed out or prefetched)."""
        self.owed = 0
        """Replies the shard owes for commands sent on this link."""
        self.reserving = False
        self.closed = False
        self.io: object | None = None
        """The shell's transport (None until the shell connects it)."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"owed={self.owed} held={self.held}"
        return f"Link({self.shard.name}, {state})"

    @property
    def ready(self) -> bool:
        """True when a new command may be sent on the link."""
        return not self.closed and self.owed == 0 and not self.reserving

    def use_delta(self, tube: str) -> tuple[bytes, int]:
        """The ``use`` that makes the link use ``tube`` (``used`` updated), or nothing."""
        if self.used == tube:
            return b"", 0
        self.used = tube
        return Use(tube).encode(), 1

    def watch_delta(self, tubes: list[str]) -> tuple[bytes, int]:
        """``watch``/``ignore`` commands that make the link watch exactly ``tubes``.

        Watches come first, so the watch list never becomes empty (``NOT_IGNORED``).
        """
        current = self.watched
        if current == tubes:
            return b"", 0
        parts = [Watch(t).encode() for t in tubes if t not in current]
        parts += [Ignore(t).encode() for t in current if t not in tubes]
        self.watched = list(tubes)
        return b"".join(parts), len(parts)
