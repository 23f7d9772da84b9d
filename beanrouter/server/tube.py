"""Tube: a named queue's containers and counters (beanstalkd's ``tube.c``), plus ``ms.c``'s order.

Containers, all owned by the engine (it alone mutates them):
- ``ready``: a heapq of int keys ``(pri - ready_base) << 64 | id`` (their order is (pri, id));
  the engine finds the job by id (``key & (2**64 - 1)``, also for a negative key). Ints compare in
  C, where Job objects needed a Python ``__lt__`` (a third of a reserve's time). ``ready_base`` is
  the priority of the first job pushed into the empty heap, and a job of that priority has its own
  id object as its key: no memory of its own, where ``pri << 64 | id`` was a new int of 48 bytes
  per job of any priority but 0, which every client's default is not (greenstalk and pystalk put
  at 65536, beanstalkc at 2**31). Jobs of other priorities pay that int. Comparing the tops of
  two tubes adds each one's ``ready_base << 64`` back. Deleted jobs may linger inside as dead
  entries (their id no longer names a job) until they surface; the top is always live,
  ``ready_ct`` is exact.
- ``delay``: a heapq of ``(deadline_at, id, job)`` tuples, lazily invalidated: an entry is live
  iff its job is still DELAYED with that same deadline. ``delay_ct`` is exact.
- ``buried``: a deque of ``(bury_seq, job)`` in bury order (FIFO), lazily invalidated: an entry is
  live iff its job is still BURIED with that same ``bury_seq``. ``buried_ct`` is exact.
- ``waiting``: the conns blocked in reserve that watch this tube, with ``waiting_last``: the
  cursor of beanstalkd's ``ms_take`` (so waiters are served in its exact, not quite FIFO, order).

Lifetime: ``refs`` counts jobs, users, watchers (and the engine's own hold on ``default``); the
engine drops the tube when it reaches zero.

``ms_remove``/``ms_take`` reproduce beanstalkd's unordered multiset on a Python list: removing an
item moves the last item into its slot, which is what fixes the order of list-tubes,
list-tubes-watched and of served waiters.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .conn import Conn
    from .job import Job

__all__ = ["Tube", "ms_remove", "ms_take"]

T = TypeVar("T")


def ms_remove(items: list[T], item: T) -> bool:
    """Remove ``item`` the way ``ms_remove`` does: the last item fills the hole.

    Items are matched with ``==``, which is identity for Tube and Conn (they define no __eq__).
    """
    try:
        i = items.index(item)
    except ValueError:
        return False
    last = items.pop()
    if i < len(items):
        items[i] = last
    return True


def ms_take(items: list[T], last: int) -> tuple[T, int]:
    """beanstalkd's ``ms_take``: returns the taken item and the new cursor. ``items`` non-empty.

    Not FIFO: with [a, b, c, d] and cursor 0 successive takes give a, b, d, c.
    """
    i = last % len(items)
    item = items[i]
    tail = items.pop()
    if i < len(items):
        items[i] = tail
    return item, i + 1


class Tube:
    """A tube and its per-tube statistics (the ``stats-tube`` fields)."""

    __slots__ = (
        "buried",
        "buried_ct",
        "delay",
        "delay_ct",
        "delete_ct",
        "name",
        "pause",
        "pause_ct",
        "ready",
        "ready_base",
        "ready_ct",
        "ready_dead",
        "refs",
        "reserved_ct",
        "total_jobs",
        "unpause_at",
        "urgent_ct",
        "using_ct",
        "waiting",
        "waiting_last",
        "watching_ct",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.refs = 0
        self.ready: list[int] = []  # keys (pri - ready_base) << 64 | id, compared in C
        self.ready_base = 0  # set by the first push into the empty heap
        self.ready_ct = 0
        self.ready_dead = 0
        self.delay: list[tuple[int, int, Job]] = []
        self.delay_ct = 0
        self.buried: deque[tuple[int, Job]] = deque()
        self.buried_ct = 0
        self.waiting: list[Conn] = []
        self.waiting_last = 0
        self.urgent_ct = 0
        self.reserved_ct = 0
        self.total_jobs = 0
        self.using_ct = 0
        self.watching_ct = 0
        self.delete_ct = 0
        self.pause_ct = 0
        self.pause = 0  # duration of the current pause in ns, 0 when not paused
        self.unpause_at = 0  # absolute ns

    def __repr__(self) -> str:
        return f"<Tube {self.name!r} refs={self.refs}>"
