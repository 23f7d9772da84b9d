"""Sentinels: a reserve armed per shard on the tubes that shard holds only away from home (pure).

A tube's consumers look at its owner and at its *away* shards (its failover successors, its
earlier owners): its jobs are there only after a failover or a reconfiguration. Looking at every
away shard on every reserve makes each reserve a cross-shard one: a choice over several shards,
a wait on each, and a wait cancelled (its link closed) for every job. A sentinel makes that
rare. Per shard, one link of this process keeps a ``reserve`` armed that watches the tubes the
shard is away for and some client of this process watches (``Cluster.wanted``). While it is
armed, those ``(shard, tube)`` pairs are *covered* (``Cluster.cover``): sessions leave them out
of their watch maps (``Session.watch_map``), so a worker of one tube reserves from its owner
alone, as from one beanstalkd.

A job that is, or becomes, ready in a covered pair is caught by the sentinel's reserve. The
sentinel reads its tube and priority (``stats-job``), gives it back (``release`` with its own
priority: the job is ready again, its unseen reserve and release kept off its ``stats-job``,
``Cluster.note_unseen``), and then marks the pair a *stray* (``Cluster.stray``): uncovered, so
the sessions waiting on that tube are woken by their shell and look again with the shard
included (``reserve``), and reserve the job themselves. The sentinel re-arms without that tube.
A reserve that sees no ready job of a stray pair (``reserve._choose``) makes it coverable again
(``Cluster.saw_empty``), and the sentinel re-arms with it.

Invariants: a pair is covered only while the sentinel's reserve watching it is armed (set after
the shard answered the ``watch`` commands sent before it, uncovered before that reserve is
cancelled or the link fails); a stray is marked only after its job is ready again, so a reserve
that sees the pair empty afterwards saw it truly empty; the sentinel holds no job between rounds.
What a covered pair costs: nothing while it stays empty (one blocked reserve per shard). A job
put there (by another process, while it saw the owner down) waits until the sentinel catches
it: milliseconds.
"""

from __future__ import annotations

import math

from ..protocol import Buried as BuriedReply
from ..protocol import Ok, Release, Reply, Reserved, StatsJob, Watching, Word, parse_mapping
from . import ids
from .cluster import ShardState
from .links import Link
from .rounds import Failure, Op, Round, Send
from .session import DEFAULT_PRIORITY, Session

__all__ = ["sentinel"]

_RESERVE = b"reserve\r\n"


def sentinel(s: Session, shard: ShardState) -> Op[None]:
    """Keep ``shard``'s away tubes covered, for ever (the shell cancels it). ``s`` is the
    sentinel's own session (``counted=False``); the shell ends a wait round of it early when
    ``Cluster.wanted`` may have changed (``Cluster.on_wanted``)."""
    cl = s.cluster
    name = shard.name
    link: Link | None = None
    armed: frozenset[str] | None = None  # the tubes the link's outstanding reserve watches
    try:
        while True:
            want = cl.wanted(name)
            if armed is not None and link is not None and armed != want:
                cl.cover(name, frozenset())  # sessions look there again before it is cancelled
                yield from _cancel(s, link)
                link, armed = None, None
            if not want or not shard.health.available(cl.clock()):
                cl.cover(name, frozenset())
                if link is not None:  # its watches would keep the tubes alive on the shard
                    s.drop(link)  # (a reserve still out is read out as it closes: unseen)
                    link, armed = None, None
                until = None if not want else shard.health.next_probe()
                if until is not None and cl.probing:
                    until = min(until, cl.clock() + cl.config.server_retry_timeout)
                yield Round(first=True, until=until, close=s.take_closes())
                continue
            replies: list[Reply]
            if armed is None or link is None:
                if link is None or not link.ready:
                    link = s.idle_link(shard)
                got = yield from _arm(s, link, want)
                if got is None:  # the link failed (the shard is marked) or answered nonsense
                    link = None
                    until = cl.clock() + cl.config.server_retry_timeout
                    yield Round(first=True, until=until, close=s.take_closes())
                    continue
                armed = want
                cl.cover(name, armed)
                if link.owed:  # the reserve's answer has not come with the watches
                    continue
                replies = got
            else:
                outcome = yield Round(wait=[link], first=True, close=s.take_closes())
                result = outcome.get(link)
                s.settle(link, result)
                if isinstance(result, Failure):
                    cl.cover(name, frozenset())
                    link, armed = None, None
                    continue
                if link.owed:  # a nudge: look at what is wanted now
                    continue
                replies = result or []
            armed = None
            link.reserving = False
            last = replies[-1] if replies else None
            if not isinstance(last, Reserved):  # TIMED_OUT or nonsense: again on a new link
                cl.cover(name, frozenset())
                s.drop(link)
                link = None
                continue
            if not (yield from _give_back(s, link, last, want)):
                link = None
    finally:
        cl.cover(name, frozenset())


def _arm(s: Session, link: Link, want: frozenset[str]) -> Op[list[Reply] | None]:
    """Make ``link`` watch exactly ``want`` and send ``reserve``; return once the shard has
    answered the watches (the reserve is then armed: the shard runs a connection's commands in
    order), with the reserve's answer if it came too. None: the link failed or answered
    nonsense (dropped)."""
    data, n = link.watch_delta(sorted(want))
    link.owed += n + 1
    link.reserving = True
    got: list[Reply] = []
    sends = [Send(link, data + _RESERVE, n + 1)]
    while True:
        # With watches to answer: until they are in. Without: one look once it is written.
        outcome = yield Round(
            sends=sends,
            wait=() if sends else [link],
            first=True,
            partial=bool(n),
            until=None if n else -math.inf,
        )
        sends = []
        result = outcome.get(link)
        s.settle(link, result)
        if isinstance(result, Failure):
            return None
        got += result or []
        if len(got) >= n:
            break
    if not all(isinstance(r, Watching) for r in got[:n]):
        s.drop(link)
        return None
    return got[n:]


def _give_back(s: Session, link: Link, reply: Reserved, want: frozenset[str]) -> Op[bool]:
    """The sentinel caught ``reply``'s job: read its tube and priority, release it, and mark
    the pair a stray. False: the link is gone (closing it gave the job back)."""
    cl = s.cluster
    shard = link.shard
    gid = ids.encode(shard.id, reply.id)
    outcome = yield from s.request([Send(link, StatsJob(reply.id).encode(), 1)])
    result = outcome.get(link)
    stats = (
        parse_mapping(result[0].body)
        if isinstance(result, list) and result and isinstance(result[0], Ok)
        else None
    )
    tube = str(stats.get("tube", "")) if stats is not None else ""
    if stats is None or tube not in want:
        _unknown(s, link, gid, want)
        return False
    pri = stats.get("pri")
    priority = pri if isinstance(pri, int) and not isinstance(pri, bool) else DEFAULT_PRIORITY
    cl.readied(shard.name, tube)
    outcome = yield from s.request([Send(link, Release(reply.id, priority, 0).encode(), 1)])
    cl.readied(shard.name, tube)
    result = outcome.get(link)
    first = result[0] if isinstance(result, list) and result else None
    if (isinstance(first, Word) and first.word == "RELEASED") or isinstance(first, BuriedReply):
        cl.note_unseen(gid, releases=1)
    elif isinstance(first, Word) and first.word == "NOT_FOUND":
        cl.note_unseen(gid, timeouts=1)  # its TTR ran out first
    else:
        _unknown(s, link, gid, want)
        return False
    cl.metrics.strays_found += 1
    cl.stray(shard.name, tube)  # the job is ready again: sessions look there now
    return True


def _unknown(s: Session, link: Link, gid: int, want: frozenset[str]) -> None:
    """A caught job whose tube or release failed: close the link (the shard gives the job
    back) and treat every tube it watched as a stray (sessions look there themselves)."""
    cl = s.cluster
    if not link.closed:
        s.drop(link)
    cl.note_unseen(gid)
    cl.metrics.strays_found += 1
    for tube in want:
        cl.stray(link.shard.name, tube)


def _cancel(s: Session, link: Link) -> Op[None]:
    """Cancel the armed reserve (``Round.cancel``: what already arrived is read; a job the
    shard reserved for it just before the half-close goes back as the link closes, counted
    unseen by ``reserve.cancelled``)."""
    owed = link.owed
    outcome = yield Round(cancel=[link], close=s.take_closes())
    result = outcome.get(link)
    if isinstance(result, list):
        for reply in result:
            if isinstance(reply, Reserved):  # arrived before the cancel: back when it closes
                s.cluster.note_unseen(ids.encode(link.shard.id, reply.id))
        if len(result) >= owed and not link.closed:
            s.drop(link)  # it had answered: the core closes it
            return
    if not link.closed:
        s._forget(link)  # the shell half-closed it and reads its last answer
