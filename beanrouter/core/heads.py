"""What this process knows of each shard's most urgent ready job per tube (pure).

A cross-shard reserve must hand out the most urgent ready job of the watched tubes over every
shard that holds one, without reserving the others (``core/reserve.py``). Asking each shard for
its heads on every reserve (``stats-tube`` and ``peek-ready`` of each tube: a look) made a
worker watching tubes on several shards pay a round over every shard per job. ``Heads`` keeps
what the looks found, shared by every session of the process, and keeps it current from what the
process itself does:

- a *look* (``stats-tube``, ``use``, ``peek-ready`` of a tube, in one round) records the tube's
  head on that shard: its local id, priority, put time and put order (``Head``), or that it has
  no ready job (``EMPTY``). Only tubes that are not paused and hold no delayed job are recorded
  (a delayed job may become ready at any time, a pause may end), and only when the head's
  priority is known exactly (from this process's own put, checked against the tube's urgent
  count, or from its ``stats-job``);
- a put this process stored, once acknowledged, becomes the head of its tube when it is more
  urgent than the recorded one (``put``): a new job can only beat a head, not change it;
- whatever else can make a job ready (a ``release``, a ``kick``, a ``kick-job``, a ``bury``
  of a job that could be a head, a ``pause-tube``, a link closed with jobs reserved on it, a
  cancelled wait that caught a job) forgets what is recorded for that shard, when it is sent
  and again when it is answered (``changed``); a look answered after that is not recorded;
- a job reserved through this process is forgotten as a head (``reserved``).

A reserve then picks the most urgent recorded head and takes exactly that job with
``reserve-job`` (``NOT_FOUND``, with nothing changed, when someone took it meanwhile: the
choice is made again), and looks at that tube again in the same round (``reserve.py``).

What is recorded is trusted for ``FRESH`` seconds at most: what no process hook sees (a reserved
job whose TTR runs out, another process's put or release, a job deleted while ready) is seen by
the next look. Removals are always safe (``reserve-job`` answers ``NOT_FOUND``); an addition
another process makes is seen within ``FRESH``. Only a process whose sessions share all the
clients' traffic uses it (the proxy); the library, one process of several, does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EMPTY", "FRESH", "Head", "Heads"]

FRESH = 0.02
"""Seconds a recorded head is trusted after the look (or put) that recorded it."""


@dataclass(slots=True)
class Head:
    """A tube's most urgent ready job on one shard, as last seen (``local`` 0: none)."""

    local: int
    priority: int
    born: float
    """When it was put (the core's clock), for beanstalkd's ``age`` order."""
    order: int
    """This process's put order (-1: another process put it)."""
    until: float
    """Trusted until then."""
    taken: bool = False
    """A reserve is taking this job (``take``): until its look records the next head, the
    tube's next job is known only to be no more urgent than this one."""


EMPTY = 0
"""``Head.local`` of a tube that had no ready job."""


class Heads:
    """The heads recorded per shard and tube (see the module docstring).

    Args:
        clock: the core's clock.
    """

    __slots__ = ("_all", "_by_shard", "_clock", "_put_seq", "_puts", "_seq")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_shard: dict[str, dict[str, Head]] = {}
        self._seq: dict[str, int] = {}
        self._all = 0
        self._put_seq = 0
        self._puts: dict[tuple[str, str], list[tuple[int, int]]] = {}
        """(shard, tube) -> the last ``_PUTS_KEPT`` acknowledged puts: (put count, priority)."""

    def get(self, shard: str, tube: str, now: float) -> Head | None:
        """The head recorded for ``tube`` on ``shard`` and still trusted at ``now``."""
        tubes = self._by_shard.get(shard)
        if tubes is None:
            return None
        head = tubes.get(tube)
        if head is None or head.until <= now:
            return None
        return head

    def seq(self, shard: str) -> tuple[int, int]:
        """Where the shard's changes and the process's puts stand: a look records what it
        found only if nothing changed there between its send and its answer, and no put
        acknowledged meanwhile beats it (``record``)."""
        return (self._all + self._seq.get(shard, 0), self._put_seq)

    def record(self, shard: str, tube: str, head: Head | None, seq: tuple[int, int]) -> None:
        """What a look sent at ``seq`` found for ``tube`` (None: nothing that can be recorded:
        paused, delayed jobs, an unknown priority)."""
        if self._all + self._seq.get(shard, 0) != seq[0]:
            return  # something changed there since the look was sent
        tubes = self._by_shard.setdefault(shard, {})
        if head is not None and seq[1] != self._put_seq:
            puts = self._puts.get((shard, tube), ())
            if puts and len(puts) == _PUTS_KEPT and puts[0][0] > seq[1]:
                head = None  # more puts there since than are kept
            else:
                for count, priority in puts:
                    if count > seq[1] and (head.local == EMPTY or priority < head.priority):
                        head = None  # a put acknowledged meanwhile may be the head
                        break
        if head is None:
            tubes.pop(tube, None)
        else:
            tubes[tube] = head

    def take(self, shard: str, tube: str) -> None:
        """A reserve is about to take the head of ``tube``: no other session picks it (its look
        in the same round records the next one)."""
        tubes = self._by_shard.get(shard)
        if tubes is not None:
            head = tubes.get(tube)
            if head is not None:
                head.taken = True

    def changed(self, shard: str, tube: str | None = None) -> None:
        """Something may have made a job ready (or changed a pause) on ``shard`` (in ``tube``;
        None: any tube): forget what is recorded there, and what looks in flight find."""
        self._seq[shard] = self._seq.get(shard, 0) + 1
        tubes = self._by_shard.get(shard)
        if tubes:
            if tube is None:
                tubes.clear()
            else:
                tubes.pop(tube, None)

    def changed_everywhere(self, tube: str) -> None:
        """``changed`` on every shard, for ``tube`` (a pause)."""
        self._all += 1
        for tubes in self._by_shard.values():
            tubes.pop(tube, None)

    def put(self, shard: str, tube: str, local: int, priority: int, delay: int, order: int) -> None:
        """A put this process stored as ``local`` in ``tube`` on ``shard`` was acknowledged."""
        self._put_seq += 1
        if len(self._puts) >= _PAIRS_KEPT and (shard, tube) not in self._puts:
            self._puts.clear()  # (bounded: looks in flight then record nothing)
            self._all += 1
            self._by_shard.clear()
        puts = self._puts.setdefault((shard, tube), [])
        puts.append((self._put_seq, -1 if delay else priority))
        if len(puts) > _PUTS_KEPT:
            del puts[0]
        tubes = self._by_shard.get(shard)
        if not tubes:
            return
        head = tubes.get(tube)
        if head is None:
            return
        now = self._clock()
        if delay or head.until <= now:
            del tubes[tube]  # a delayed job: it may become the head at any time
            return
        if head.local == EMPTY or priority < head.priority:
            tubes[tube] = Head(local, priority, now, order, head.until)

    def reserved(self, shard: str, local: int) -> None:
        """Job ``local`` of ``shard`` was reserved through this process: no longer a head."""
        tubes = self._by_shard.get(shard)
        if not tubes:
            return
        for tube, head in tubes.items():
            if head.local == local:
                del tubes[tube]
                return


_PUTS_KEPT = 8
_PAIRS_KEPT = 4096
