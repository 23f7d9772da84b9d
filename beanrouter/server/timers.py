"""ConnTimers: the heap of per-connection timed events (TTR ends, deadline-soon, reserve timeouts).

Each conn with a timed event has one live entry ``(at, seq, conn)`` in the heap, at or before that
event; entries may be early, never late (the engine re-arms an early one at its real time when it
surfaces). Stale entries (a conn re-armed or dropped since: its ``timer_seq`` differs) stay in the
heap until they surface, or until they outnumber the live ones, when the heap is rebuilt: so
arming costs one push and the heap stays O(live conns).
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .conn import Conn

__all__ = ["NEVER", "NS", "ConnTimers"]

NS: Final = 1_000_000_000
"""Nanoseconds per second: the engine's times are integer ns."""
NEVER: Final = (1 << 63) - 1
"""A time later than any event."""


class ConnTimers:
    """Per-conn timer entries; a conn's ``timer_at``/``timer_seq`` describe its live entry."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Conn]] = []
        self._seq = 0
        self._live = 0

    def __len__(self) -> int:
        """Entries in the heap, stale ones included."""
        return len(self._heap)

    def arm(self, c: Conn, at: int) -> None:
        """Make ``c``'s live entry fire at ``at`` (any earlier entry of it goes stale)."""
        seq = self._seq = self._seq + 1
        if not c.timer_seq:
            self._live += 1
        c.timer_seq = seq
        c.timer_at = at
        h = self._heap
        heappush(h, (at, seq, c))
        if len(h) > 2 * self._live + 64:
            h[:] = [e for e in h if e[2].timer_seq == e[1]]
            heapify(h)

    def drop(self, c: Conn) -> None:
        """``c`` has no live entry any more (its entries, if any, go stale)."""
        if c.timer_seq:
            c.timer_seq = 0
            c.timer_at = NEVER
            self._live -= 1

    def first(self) -> tuple[int, int, Conn] | None:
        """The earliest live entry (stale ones before it are discarded), or None."""
        h = self._heap
        while h:
            entry = h[0]
            if entry[2].timer_seq == entry[1]:
                return entry
            heappop(h)
        return None

    def pop_first(self) -> None:
        """Remove the entry ``first`` returned, and drop its conn's timer."""
        _, _, c = heappop(self._heap)
        self.drop(c)
