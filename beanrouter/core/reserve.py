"""The cross-shard reserve: find the most urgent job without reserving the others (pure).

``reserve(session, timeout)`` works in two phases:

1. **Choose** (only when more than one shard holds a watched tube, or the session has prefetched
   jobs). One round asks ``stats-tube`` of each watched tube on each such shard's main link (ready
   count, pause: ``pause`` > 0, since ``pause-time-left`` reads 0 in a pause's last second).
   When one shard alone has ready jobs in unpaused tubes, that is the shard. When
   several do (or a job is prefetched), each ready tube's most urgent job is peeked (``use`` +
   ``peek-ready``: in the first round already after a backlog, ``Session.peek_ahead``), the jobs
   this process did not put have their ``stats-job`` read (those it put are ranked from the put,
   ``Cluster.put_meta``), and the most urgent wins (priority, then the oldest, then the order
   this process put them in, then round-robin). Only then is
   ``reserve-with-timeout 0`` sent, to the winning shard alone: no job that is not handed out is
   reserved, so ``reserves``, ``releases`` and ``timeouts`` of every job are what one beanstalkd
   would show. If someone else took the job
   meanwhile (``TIMED_OUT``), the choice is made again (``Metrics.sweep_retries``).
   In the proxy, the shards' heads this process knows (``core/heads.py``) spare the looks: a
   shard whose watched tubes' heads are recorded is not asked, and the winner is taken with
   ``reserve-job`` and its tube looked at again in the same round (``_take``).
   Cost per reserve, for ``k`` watched tubes over the relevant shards (away shards the proxy's
   sentinels cover left out, ``core/sentinel.py``): ``k`` ``stats-tube`` and the reserve when one
   shard has ready jobs; plus ``2r + 1`` per competing shard and one ``stats-job`` per ready tube
   ``r`` not put by this process when several have; nothing extra when only one shard holds
   watched tubes.
2. **Wait** (nothing ready): a blocking reserve on every shard that holds a watched tube, on links
   that hold no job; the first job wins. Before the other waits are cancelled (by closing their
   links: the only way to cancel a beanstalkd reserve) one non-blocking read collects any job that
   raced in: such a job is **prefetched**, kept reserved for the session's next reserve (where it
   competes with the ready jobs of every shard) and given back (``Metrics.give_backs``) only if no
   reserve takes it within ``PREFETCH_HOLD`` seconds or before its TTR margin. With one shard the
   wait is exactly the client's command: for the proxy (``cancellable=False``) it runs on the
   link holding the client's jobs, so the shard's own ``DEADLINE_SOON`` applies; that wait is
   never cancelled by closing its link (the jobs would go back, or a job the shard reserved just
   then, a phantom reserve), also when the link holds none: past the deadline (or the emulated
   DEADLINE_SOON) it is read until the shard answers.

beanstalkd's DEADLINE_SOON is per connection: across shards it is reproduced from the held jobs'
deadlines (``SAFETY_MARGIN``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..protocol import (
    DEADLINE_SOON,
    NOT_FOUND,
    TIMED_OUT,
    Found,
    Ok,
    PeekReady,
    Release,
    Reply,
    Reserve,
    Reserved,
    ReserveJob,
    ReserveWithTimeout,
    StatsJob,
    StatsTube,
    StatValue,
    Using,
    Watching,
    Word,
    parse_mapping,
)
from ..protocol import Buried as BuriedReply
from . import ids
from .cluster import Cluster, ShardState
from .errors import ShardUnavailable
from .heads import FRESH, Head
from .links import Link
from .rounds import Failure, Op, Round, Send
from .scan import scan
from .session import DEFAULT_PRIORITY, Held, Session

__all__ = [
    "AWAY_LINGER",
    "HELD_FAST_MAX",
    "IDLE_SKIP_SWEEP",
    "LINGER",
    "PREFETCH_HOLD",
    "SAFETY_MARGIN",
    "answered",
    "cancelled",
    "exact_now",
    "exact_now_done",
    "exact_wait",
    "expire",
    "expire_held",
    "hold",
    "learn",
    "observe_wakeup",
    "reserve",
    "reserve_job",
    "stream_link",
]

SAFETY_MARGIN = 1.0
"""beanstalkd's DEADLINE_SOON margin: a held job less than this from its deadline."""
AWAY_LINGER = 5.0
"""Seconds a lingering wait on a shard that owns none of its tubes (a failover successor, an
earlier owner: an *away* shard, where jobs are only after a failover) stays armed, in the
library's shells: a worker that reserves at least that often never looks at, nor cancels a wait
on, its away shards (the proxy's sentinels do that job there, ``core/sentinel.py``)."""
LINGER = 0.05
"""Seconds the other waits of a reserve stay armed for the session's next reserve, in the
library's shells (``AsyncRouter``, ``Router``): a consumer that loops reserve → delete → reserve
within it reuses them, so no wait is cancelled (closing a wait can give back a job the shard
reserved for it in the meantime, unseen: a phantom reserve nobody can count). The proxy does not
linger: a lingering wait catches jobs another client of one beanstalkd would get."""
PREFETCH_HOLD = 1.0
"""Seconds a job that raced in during a wait is kept for the session's next reserve."""
TIMEOUT_GRACE = 0.1
"""At the caller's deadline, waits whose shard timeout fires within this are read to their answer
(bounded by the reply timeout), keeping their links; later ones are cancelled by closing them."""
IDLE_SKIP_SWEEP = 0.05
"""A reserve within this many seconds after one that saw every shard empty goes straight to the
wait (the choice would cost each shard commands for nothing)."""
CAUGHT_GRACE = 0.005
"""Seconds a reserve that reached its deadline still reads its lingering waits on shards where
this process stored a job since they were armed (``_caught_meanwhile``)."""
REARM_MIN = 0.05
"""A wait is not re-armed on a shard that answered TIMED_OUT when less than this remains."""
SWEEP_RETRIES = 16
"""Choices made again in one reserve when the chosen job was taken by someone else."""
HELD_FAST_MAX = 1000
"""Held jobs above which a proxy session's reserve no longer skips reading their TTRs (``learn``),
so that the jobs whose TTR ran out are forgotten (bounded memory)."""
PEEK_AHEAD_BYTES = 16_384
"""A choice peeks ahead (in its first round, ``Session.peek_ahead``) only while the jobs the
last one peeked were no larger than this in all."""
URGENT = 1024
"""beanstalkd's ``current-jobs-urgent`` counts ready jobs with a priority below this."""
_PEEK_READY = PeekReady().encode()
_RESERVE_FOREVER = b"reserve\r\n"
_RESERVE_NOW = ReserveWithTimeout(0).encode()
_MAX_WAIT = 2**31 - 1
"""Longest ``reserve-with-timeout`` (beanstalkd reads it as a C int; 68 years)."""


def _int(value: StatValue | None, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def soon_at(s: Session) -> float | None:
    """When DEADLINE_SOON starts for the most urgent held job (None: no held job)."""
    if not s.held:
        return None
    soonest = min(h.deadline for h in s.held.values())  # infinite: TTRs not read (``hold``)
    return None if soonest == math.inf else soonest - SAFETY_MARGIN


def expire_held(s: Session, now: float) -> None:
    """Forget held jobs whose TTR ran out (the shard has put them back)."""
    if not s.held or now < s.expiry:
        return
    gone = [job_id for job_id, held in s.held.items() if held.deadline <= now]
    for job_id in gone:
        s.held.pop(job_id).link.held -= 1
    s.expiry = min(
        min((h.deadline for h in s.held.values()), default=math.inf),
        min((h.deadline for h in s.prefetched.values()), default=math.inf),
    )


def expire(s: Session, now: float) -> Op[None]:
    """Forget held jobs whose TTR ran out; give back prefetched jobs whose time is up or whose
    tube is no longer watched."""
    expire_held(s, now)
    if not s.prefetched:
        return
    due = [
        (job_id, h)
        for job_id, h in s.prefetched.items()
        if h.keep_until <= now or h.deadline - SAFETY_MARGIN <= now or h.tube not in s.watching
    ]
    if not due:
        return
    cl = s.cluster
    sends: list[tuple[Send, int]] = []
    for job_id, held in due:
        del s.prefetched[job_id]
        held.link.held -= 1
        cl.metrics.give_backs += 1
        if held.deadline <= now:  # the shard has put it back already (its TTR ran out)
            cl.note_unseen(job_id, timeouts=1)
            continue
        if held.link.closed:
            cl.note_unseen(job_id)
            continue
        _, local = ids.decode(job_id)
        sends.append((Send(held.link, Release(local, held.priority, 0).encode(), 1), job_id))
    # One release per link per round (a link may hold several).
    while sends:
        batch: dict[Link, tuple[Send, int]] = {}
        rest: list[tuple[Send, int]] = []
        for send, job_id in sends:
            if send.link in batch:
                rest.append((send, job_id))
            else:
                batch[send.link] = (send, job_id)
        for link in batch:
            cl.readied(link.shard.name)
        outcome = yield from s.request([send for send, _ in batch.values()])
        for link, result in outcome.items():
            cl.readied(link.shard.name)
            job_id = batch[link][1]
            first = result[0] if isinstance(result, list) else None
            word = first.word if isinstance(first, Word) else None
            if word == "RELEASED" or isinstance(first, BuriedReply):  # (buried: out of memory)
                cl.note_unseen(job_id, releases=1)
            elif word == "NOT_FOUND":
                cl.note_unseen(job_id, timeouts=1)  # its TTR ran out first
            else:
                cl.note_unseen(job_id)
                if not link.closed:
                    s.drop(link)  # closing gives the job back anyway
        sends = [(send, job_id) for send, job_id in rest if not send.link.closed]
    for link in {id(h.link): h.link for _, h in due}.values():
        if not link.closed and link.held == 0:
            s.trim(link.shard)


def reserve(s: Session, timeout: float | None) -> Op[Reply]:
    """Reserve the most urgent ready job of the watched tubes across the shards, waiting for one
    until ``timeout`` seconds (None: forever).

    Returns ``RESERVED`` with the global id, ``TIMED_OUT`` or ``DEADLINE_SOON``.

    Raises:
        ShardUnavailable: no shard that holds a watched tube can be reached.
    """
    cl = s.cluster
    if cl.scan_due():  # jobs away from their tube's placed shards (``core/scan.py``)
        yield from scan(s)
    start = cl.clock()
    if timeout is not None and not timeout < math.inf:
        timeout = None if timeout == math.inf else 0.0  # inf waits forever; NaN does not
    deadline = None if timeout is None else start + max(0.0, timeout)
    if deadline is not None and deadline <= start:
        plan = exact_now(s, start)
        if plan is not None:  # the proxy's one-shard reserve-with-timeout 0: one round
            link, data, count = plan
            result = yield from answered(s, Send(link, data, count))
            got = exact_now_done(s, link, result)
            if got is not None:
                return got
            # the link failed or answered nonsense: the usual path, on a new link
    yield from expire(s, start)
    wmap = s.watch_map()
    if s.held and (len(wmap) > 1 or len(s.held) >= HELD_FAST_MAX or s.partial or s.cancellable):
        # DEADLINE_SOON over several shards (or beside the main link) needs every held TTR
        yield from learn(s)
    adopted = yield from _resume_lingering(s, wmap)
    relevant = [cl.shards[n] for n in wmap]
    up = [sh for sh in relevant if sh.health.available(start)]
    if not up:
        raise ShardUnavailable(
            "no shard of the watched tubes is up",
            tuple((sh.name, "down: " + sh.health.last_error) for sh in relevant),
        )
    # A shard where a wait of this session is still armed (lingering, adopted) needs no look:
    # a job ready there would have been given to that wait (and read as prefetched).
    armed = {w.shard.name for w in adopted.values()}
    ready = [sh for sh in up if sh.name not in armed]
    soon = soon_at(s)
    soon_now = soon is not None and soon <= start
    if soon_now:
        # beanstalkd: DEADLINE_SOON at once, unless a job is ready. Look as a reserve with
        # timeout 0 would (its replies read to their end), and answer DEADLINE_SOON for none.
        deadline = start
    skip = (
        not s.prefetched
        and timeout != 0
        and s.idle_at is not None
        and start - s.idle_at < IDLE_SKIP_SWEEP
        and s.idle_shards == frozenset(sh.name for sh in ready)
        and (soon is None or soon > start)
    )
    s.idle_at = None
    if not skip and s.cancellable and timeout != 0 and not s.prefetched and len(ready) > 1:
        # The library's worker of tubes owned by one shard, over that shard and its away shards
        # (failover successors, earlier owners: jobs there only after a failover): no look at
        # the away shards, which nearly always have none. The wait asks them all at once; the
        # owner answers at once in a backlog and the away shards' waits linger (AWAY_LINGER),
        # so that the next reserves go to the owner alone (``armed``).
        owners = s.owners()
        skip = len(owners) == 1 and any(sh.name in owners for sh in ready)
    while True:
        if (len(ready) > 1 or s.prefetched) and not skip:
            waits = not soon_now and (deadline is None or deadline > start)
            reply = yield from _sweep(s, ready, wmap, waits)
            if reply is None:
                now = cl.clock()
                if soon is not None and soon <= now:
                    reply = DEADLINE_SOON
                elif deadline is not None and now >= deadline:
                    reply = TIMED_OUT
            caught: list[tuple[Link, Reserved]] = []
            if reply is not None and adopted and not isinstance(reply, Reserved):
                # Nothing ready, but a lingering wait may have caught a job put since: the shard
                # gave it to that wait before it answered the choice (the job was not ready
                # there), so its answer is in by now. Read it rather than answer "none".
                outcome = yield Round(wait=list(adopted), first=True, until=-math.inf)
                _collect(s, outcome, adopted, caught, [], set())
                if caught:
                    yield from _finish_waits(s, adopted, caught, [], set(), wmap)
                    got = yield from _settle_winners(s, caught)
                    if got is not None:
                        return got
                    caught = []
            if reply is not None:
                yield from _finish_waits(s, adopted, caught, [], set(), wmap)
                if caught:
                    yield from _adopt(s, caught, late=True)
                return reply
        skip = False
        reply = yield from _wait(s, relevant, wmap, deadline, None if soon_now else soon, adopted)
        adopted = {}
        if reply is not None:
            return DEADLINE_SOON if soon_now and reply == TIMED_OUT else reply
        # A winner vanished, or a shard the sentinels covered was uncovered: look again.
        wmap = s.watch_map()
        if s.held and (len(wmap) > 1 or s.partial):
            yield from learn(s)
        relevant = [cl.shards[n] for n in wmap]
        ready = [sh for sh in relevant if sh.health.available(cl.clock())]


def exact_now(s: Session, now: float, only: Link | None = None) -> tuple[Link, bytes, int] | None:
    """The proxy's ``reserve-with-timeout 0`` when one shard holds every watched tube: the link
    (the main one: the shard's own DEADLINE_SOON covers the jobs held there), the bytes and the
    reply count of a single round (the link is marked reserving; the caller adds ``owed``), or
    None when the usual path must run: a library session, several shards, prefetched jobs,
    lingering waits, the shard down, ``HELD_FAST_MAX`` held jobs, or (``only``) the main link
    is not ``only``. Answered by ``exact_now_done``."""
    link = _exact_link(s, now, only)
    if link is None:
        return None
    expire_held(s, now)
    data, n = link.watch_delta(s.watch_map()[link.shard.name])
    link.reserving = True
    return link, data + _RESERVE_NOW, n + 1


def _exact_shard(s: Session, now: float) -> ShardState | None:
    """The one shard that holds every watched tube, when the exact one-shard reserve may run:
    a proxy session, nothing prefetched or lingering, fewer than ``HELD_FAST_MAX`` held jobs,
    the shard up."""
    if s.cancellable or s.prefetched or s.lingering or len(s.held) >= HELD_FAST_MAX:
        return None
    if s.cluster.scan_due():  # (``reserve`` scans first)
        return None
    wmap = s.watch_map()
    if len(wmap) != 1:
        return None
    (name,) = wmap
    shard = s.cluster.shards[name]
    return shard if shard.health.available(now) else None


def _exact_link(s: Session, now: float, only: Link | None) -> Link | None:
    """The main link of the one shard that holds every watched tube, when the exact one-shard
    reserve may run on it (see ``exact_now``)."""
    shard = _exact_shard(s, now)
    if shard is None:
        return None
    if only is not None:
        if only.shard is not shard or only.closed:
            return None
        if only.owed:  # a run out on it, taking more commands (``batch.extend``): it is the one
            return only
    link = s.main(shard)
    if only is not None and link is not only:
        return None
    return link


def stream_link(s: Session, now: float) -> Link | None:
    """The link ``exact_wait`` would send a blocking reserve on now (the main link of the one
    shard holding every watched tube, that link holding every job the session holds), if the
    session has it already; None otherwise. Creates nothing: the shell asks whether it is
    connected before planning a streamed run."""
    shard = _exact_shard(s, now)
    # A wait the sentinels may have to interrupt (shards left out of the watch map) is closed
    # then: only while the session holds no job.
    if shard is None or (s.partial and s.held):
        return None
    link = next((k for k in s.links.get(shard.name, ()) if k.ready), None)
    if link is None or link.held != len(s.held):  # (nothing prefetched: ``_exact_shard``)
        return None
    return link


def exact_wait(
    s: Session, now: float, cmd: Reserve | ReserveWithTimeout, only: Link | None = None
) -> tuple[Link, bytes, int] | None:
    """``exact_now`` for the client's own blocking reserve, sent to the shard as it is: the
    shard waits, answers ``TIMED_OUT`` or ``DEADLINE_SOON`` itself, and runs what follows on the
    link only after it, in the client's order. Only when every job the session holds is on that
    link (the shard's own DEADLINE_SOON then covers them all). Answered by ``exact_now_done``."""
    link = _exact_link(s, now, only)
    if link is None or link.held != len(s.held) or (s.partial and s.held):  # (``stream_link``)
        return None
    expire_held(s, now)
    data, n = link.watch_delta(s.watch_map()[link.shard.name])
    link.reserving = True
    return link, data + cmd.encode(), n + 1


def answered(s: Session, send: Send) -> Op[list[Reply] | Failure]:
    """Send ``send`` in a wait round (no reply timeout: a reserve is among its commands) and
    read until every reply has come (never cancelled: a reserve the shard answers late still
    counts) or the link failed."""
    send.link.owed += send.replies
    got: list[Reply] = []
    sends = [send]
    while True:
        outcome = yield Round(sends=sends, wait=() if sends else [send.link], first=True,
                              close=s.take_closes())  # fmt: skip
        sends = []
        result = outcome.get(send.link)
        s.settle(send.link, result)
        if isinstance(result, Failure):
            return result
        if result:
            got += result
        if not send.link.owed:
            return got


def exact_now_done(s: Session, link: Link, result: list[Reply] | Failure | None) -> Reply | None:
    """The reply to ``exact_now``'s round (``answered``): ``RESERVED`` (the job held, its
    TTR not read: ``hold``), ``TIMED_OUT`` or ``DEADLINE_SOON`` as the shard answered. None: the
    link failed or answered nonsense (dropped): run the usual path."""
    link.reserving = False
    if not isinstance(result, list):
        return None
    last = result[-1]
    if len(result) > 1 and not all(isinstance(r, Watching) for r in result[:-1]):
        s.drop(link)
        return None
    if isinstance(last, Reserved):
        return hold(s, link, last)
    if isinstance(last, Word):
        if last.word == "TIMED_OUT":
            now = s.cluster.clock()
            s.idle_at = now
            s.idle_shards = frozenset((link.shard.name,))
            soon = soon_at(s)
            return DEADLINE_SOON if soon is not None and soon <= now else TIMED_OUT
        if last.word == "DEADLINE_SOON":
            return DEADLINE_SOON
    s.drop(link)
    return None


def hold(s: Session, link: Link, reply: Reserved) -> Reserved:
    """Hand out a job a reserve got alone on ``link`` (``Session.lazy_hold``), without reading
    its ``stats-job``: its TTR matters only to DEADLINE_SOON and to forgetting it when it runs
    out, its priority only to a ``release``/``bury`` without one, so they are read when needed
    (``learn``: a reserve while the session holds it beside the wait's link, or over several
    shards; ``Session._own_priority``). On the proxy's exact one-shard link the shard's own
    DEADLINE_SOON covers it meanwhile."""
    gid = ids.encode(link.shard.id, reply.id)
    if s.cluster.heads is not None:
        s.cluster.heads.reserved(link.shard.name, reply.id)
    old = s.held.pop(gid, None)
    if old is not None:  # its TTR ran out unseen and the shard gave it to us again
        old.link.held -= 1
    s.held[gid] = Held(link, DEFAULT_PRIORITY, 0, math.inf, "", since=s.cluster.clock())
    # Its first delivery (the ready time is taken): a wake-up, if it became ready in the wait.
    s.held[gid].ready_at = s.cluster.put_acked.pop(gid, None)
    link.held += 1
    link.reserving = False
    s.lost.pop(gid, None)
    s.cluster.metrics.deliveries += 1
    return reply if gid == reply.id else Reserved(gid, reply.body)


def learn(s: Session) -> Op[None]:
    """Read the TTR, priority and tube of held jobs handed out by ``hold`` (one ``stats-job``
    each, one round); a job that is no longer reserved, or whose TTR ran out meanwhile, is
    forgotten (the shard put it back)."""
    by_link: dict[Link, list[int]] = {}
    for gid, held in s.held.items():
        if not held.ttr and held.link.ready:
            by_link.setdefault(held.link, []).append(gid)
    if not by_link:
        return
    sends = [
        Send(link, b"".join(StatsJob(ids.decode(g)[1]).encode() for g in gids), len(gids))
        for link, gids in by_link.items()
    ]
    outcome = yield from s.request(sends)
    now = s.cluster.clock()
    for send in sends:
        result = outcome.get(send.link)
        if not isinstance(result, list):
            continue  # the link failed: its jobs are lost already
        for gid, reply in zip(by_link[send.link], result, strict=True):
            entry = s.held.get(gid)
            if entry is None or entry.link is not send.link or entry.ttr:
                continue
            held = entry
            if isinstance(reply, Ok):
                stats = parse_mapping(reply.body)
                ttr = max(1, _int(stats.get("ttr"), 1))
                if stats.get("state") == "reserved" and held.since + ttr > now:
                    held.ttr = ttr
                    s.timed(held, held.since + ttr)
                    held.priority = _int(stats.get("pri"), DEFAULT_PRIORITY)
                    held.tube = str(stats.get("tube", ""))
                    continue
            del s.held[gid]  # no longer ours
            held.link.held -= 1


def reserve_job(s: Session, job_id: int) -> Op[Reply]:
    """``reserve-job``: reserve ``job_id`` whatever its state. ``RESERVED`` or ``NOT_FOUND``."""
    shard, local = s.cluster.shard_of(job_id)
    pre = s.prefetched.pop(job_id, None)
    if pre is not None and (pre.link.closed or pre.deadline <= s.cluster.clock()):
        pre.link.held -= 1  # its TTR ran out: the shard has it back
        pre = None
    if pre is not None:  # reserved for this session already
        s.held[job_id] = pre
        pre.keep_until = math.inf
        s.cluster.metrics.prefetch_hits += 1
        return Reserved(job_id, pre.body)
    if not shard.health.available(s.cluster.clock()):
        raise ShardUnavailable(
            f"shard {shard.name} is down", ((shard.name, shard.health.last_error),)
        )
    link = s.main(shard)
    link.reserving = True
    reply = (yield from s.one(shard, ReserveJob(local).encode(), link=link))[0]
    if not isinstance(reply, Reserved):
        link.reserving = False
        return reply
    got = yield from _settle_winners(s, [(link, reply)])
    return got if got is not None else NOT_FOUND


@dataclass(slots=True)
class _Candidate:
    key: tuple[float, ...]
    shard: ShardState | None
    job_id: int
    stats: dict[str, StatValue] = field(default_factory=dict)
    tube: str = ""
    """The job's tube, where it was peeked or recorded (``core/heads.py``)."""


def _sweep(
    s: Session, shards: Sequence[ShardState], wmap: Mapping[str, list[str]], waits: bool = False
) -> Op[Reply | None]:
    """Phase 1: choose the most urgent ready job and reserve it alone. None: nothing ready.
    ``waits``: a wait on every shard follows if nothing is (``_choose``)."""
    for _ in range(SWEEP_RETRIES):
        best = yield from _choose(s, shards, wmap, waits=waits)
        if best is None:
            return None
        if best.shard is None:  # a prefetched job wins
            held = s.prefetched[best.job_id]
            if not _usable(s, held, s.cluster.clock()):
                continue  # its TTR ran out during the choice (a slow shard): given back later
            del s.prefetched[best.job_id]
            held.keep_until = math.inf
            s.held[best.job_id] = held
            s.cluster.metrics.prefetch_hits += 1
            s.cluster.metrics.deliveries += 1
            return Reserved(best.job_id, held.body)
        shard = best.shard
        link = s.main(shard)
        if s.cluster.heads is not None and best.tube and best.job_id >= 0:
            got = yield from _take(s, shard, link, best)
            if got is not None:
                return got
            continue
        data, n = link.watch_delta(wmap[shard.name])
        link.reserving = True
        outcome = yield from s.request([Send(link, data + ReserveWithTimeout(0).encode(), n + 1)])
        result = outcome[link]
        if isinstance(result, Failure):
            continue  # the shard is marked; the next choice goes without it
        if not all(isinstance(r, Watching) for r in result[:n]):
            s.drop(link)
            continue
        last = result[-1]
        if isinstance(last, Reserved):
            same = ids.encode(shard.id, last.id) == best.job_id
            known = best.stats if same and best.stats else None
            # The proxy and Router hand the job out at once, its TTR read when needed (``hold``).
            got = yield from _settle_winners(s, [(link, last)], known, lazy=s.lazy_hold)
            if got is not None:
                return got
            continue
        link.reserving = False
        if not (isinstance(last, Word) and last.word in ("TIMED_OUT", "DEADLINE_SOON")):
            s.drop(link)
        s.cluster.metrics.sweep_retries += 1
    return None


def _take(s: Session, shard: ShardState, link: Link, best: _Candidate) -> Op[Reply | None]:
    """Reserve the chosen job itself (``reserve-job``: ``NOT_FOUND``, with nothing changed,
    when another client took it meanwhile) and, in the same round, look at its tube there again
    for the next reserve (``core/heads.py``). None: not reserved; choose again."""
    heads = s.cluster.heads
    assert heads is not None
    _, local = ids.decode(best.job_id)
    heads.take(shard.name, best.tube)
    seq = heads.seq(shard.name)
    look, count, uses = _peeks(link, [best.tube], stats=True)
    link.reserving = True
    outcome = yield from s.request([Send(link, ReserveJob(local).encode() + look, count + 1)])
    result = outcome[link]
    if isinstance(result, Failure):
        return None  # the shard is marked; the next choice goes without it
    first = result[0]
    _looked_again(s, shard, link, best.tube, result[1:], uses[0], seq)
    if isinstance(first, Reserved) and first.id == local:
        known = best.stats or None
        return (yield from _settle_winners(s, [(link, first)], known, lazy=s.lazy_hold))
    link.reserving = False
    if not (isinstance(first, Word) and first.word == "NOT_FOUND"):
        s.drop(link)
    s.cluster.metrics.sweep_retries += 1
    return None


def _looked_again(
    s: Session,
    shard: ShardState,
    link: Link,
    tube: str,
    replies: Sequence[Reply],
    uses: int,
    seq: tuple[int, int],
) -> None:
    """Record what ``_take``'s look at ``tube`` found (``stats-tube``, ``use``, ``peek-ready``,
    ``use`` back), sent at ``seq``."""
    heads = s.cluster.heads
    assert heads is not None
    if link.closed:
        return
    stats, peeked = replies[0], replies[1 + uses]
    if not all(isinstance(r, Using) for r in (*replies[1 : 1 + uses], *replies[2 + uses :])):
        s.drop(link)
        return
    now = s.cluster.clock()
    head: Head | None = None
    if isinstance(stats, Ok):
        body = stats.body
        if _paused(body) or _stat_int(body, b"current-jobs-delayed"):
            head = None
        elif not _stat_int(body, b"current-jobs-ready"):
            head = Head(0, 0, now, -1, now + FRESH)
        elif isinstance(peeked, Found):
            gid = ids.encode(shard.id, peeked.id)
            meta = s.cluster.put_meta.get(gid)
            if meta is not None and (meta[0] < URGENT) == (
                _stat_int(body, b"current-jobs-urgent") > 0
            ):
                order = s.cluster.put_order.get(gid, -1)
                head = Head(peeked.id, meta[0], meta[1], order, now + FRESH)
    heads.record(shard.name, tube, head, seq)


def _usable(s: Session, held: Held, now: float) -> bool:
    """Whether the prefetched job ``held`` may be handed out at ``now``: its tube watched, its
    link open, and more than ``SAFETY_MARGIN`` of its TTR left (the rounds of a choice can take a
    slow shard's reply timeout; a job whose TTR ran out meanwhile is the shard's again)."""
    return held.tube in s.watching and not held.link.closed and held.deadline - SAFETY_MARGIN > now


def _stat_int(body: bytes, key: bytes) -> int:
    """One integer field of a ``stats-tube`` body, without parsing the rest (0 if absent)."""
    start = body.find(b"\n" + key + b": ")
    if start < 0:
        return 0
    start += len(key) + 3
    end = body.find(b"\n", start)
    try:
        return int(body[start : end if end >= 0 else None])
    except ValueError:
        return 0


def _paused(body: bytes) -> bool:
    """Whether a ``stats-tube`` body says the tube is paused. ``pause`` (the pause's length, set
    to 0 when it lifts) says it; ``pause-time-left`` alone does not: it is whole seconds,
    truncated, so it reads 0 throughout a pause's last second. (``pause-tube t 0`` pauses for
    1 ns, lifted at the shard's next tick: ``pause: 0``, not paused for a client either.)"""
    return _stat_int(body, b"pause") > 0 or _stat_int(body, b"pause-time-left") > 0


def _choose(
    s: Session,
    shards: Sequence[ShardState],
    wmap: Mapping[str, list[str]],
    use_heads: bool = True,
    taken_ok: bool = True,
    waits: bool = False,
) -> Op[_Candidate | None]:
    """The most urgent ready job over ``shards`` and the session's prefetched jobs (None: none).

    Round 1 asks ``stats-tube`` of every watched tube on every shard; when one shard alone has
    ready jobs in unpaused tubes (and no job is prefetched), that shard is the answer. Otherwise
    the most urgent job of each ready tube is peeked (``use`` + ``peek-ready``: in round 1
    itself when the session's last choice found several shards with ready jobs and small ones
    (``Session.peek_ahead``: a backlog), else in a round 2). A peeked job this process put, and
    whose priority no client of it may have changed since (``Cluster.put_meta``), is ranked
    from what the put said; the others by their ``stats-job`` (one more round).

    With the process's record of heads (``Cluster.heads``, the proxy: ``core/heads.py``), a
    shard whose watched tubes all have a trusted record is not asked at all; the others are
    looked at (``stats-tube`` and the peeks in one round) and what they show is recorded. A
    choice that finds nothing ready with records trusted looks everywhere again, so that no
    "nothing ready" rests on a record, unless the reserve then ``waits`` on every shard (a
    wait's reserve takes a job that is ready at once). A tube whose head another reserve is
    taking (``taken_ok``: until that reserve's look records the next) may be passed over for a
    job at least as urgent as that head: its next job can be no more urgent; for a less urgent
    one it is looked at."""
    cl = s.cluster
    heads = cl.heads if use_heads else None
    cached: list[_Candidate] = []
    order = {name: i for i, name in enumerate(cl.shards)}
    n = max(1, len(cl.shards))
    trusted = False
    floor = math.inf  # the most urgent head being taken by another reserve (``Head.taken``)
    everywhere = shards
    if heads is not None:
        now = cl.clock()
        look: list[ShardState] = []
        for shard in shards:
            if not shard.health.available(now):
                continue
            tubes = wmap[shard.name]
            known = [heads.get(shard.name, tube, now) for tube in tubes]
            if not all(h is not None and (taken_ok or not h.taken) for h in known):
                look.append(shard)
                continue
            trusted = True
            cl.metrics.looks_spared += 1
            for tube, h in zip(tubes, known, strict=True):
                assert h is not None
                if h.taken:
                    floor = min(floor, h.priority)
                elif h.local:
                    rank = (order[shard.name] - s.rr) % n
                    age = max(0, int(now - h.born))
                    key = (float(h.priority), -float(age), float(h.order), float(rank),
                           float(h.local))  # fmt: skip
                    cached.append(_Candidate(key, shard, ids.encode(shard.id, h.local), tube=tube))
        shards = look
    ahead = s.peek_ahead or heads is not None
    sends: list[tuple[ShardState, Send, list[str], list[int] | None]] = []
    seqs: dict[str, tuple[int, int]] = {}
    for shard in shards:
        if not shard.health.available(cl.clock()):
            continue
        link = s.main(shard)
        tubes = wmap[shard.name]
        if heads is not None:
            seqs[shard.name] = heads.seq(shard.name)
        if ahead:
            data, count, before = _peeks(link, tubes, stats=True)
            sends.append((shard, Send(link, data, count), tubes, before))
        else:
            data = b"".join(StatsTube(tube).encode() for tube in tubes)
            sends.append((shard, Send(link, data, len(tubes)), tubes, None))
    cl.metrics.looks += len(sends)
    outcome = yield from s.request([send for _, send, _, _ in sends]) if sends else _nothing()
    ready: list[tuple[ShardState, Link, list[str]]] = []  # shards with ready, unpaused tubes
    found: list[tuple[ShardState, Link, str, int]] = []  # (shard, link, tube, local id)
    urgent: dict[tuple[str, str], bool] = {}  # (shard, tube): a ready job with priority < 1024
    seen: dict[tuple[str, str], bool] = {}  # (shard, tube) -> recordable (no pause, no delayed)
    size = 0
    for shard, send, tubes, uses in sends:
        result = outcome.get(send.link)
        if not isinstance(result, list):
            continue
        replies = iter(result)
        names: list[str] = []
        peeked: list[tuple[str, Reply]] = []
        usable = True
        for i, tube in enumerate(tubes):
            reply = next(replies)
            if uses is not None:
                if not all(isinstance(next(replies), Using) for _ in range(uses[i])):
                    usable = False
                peeked.append((tube, next(replies)))
            if heads is not None:
                if isinstance(reply, Ok):
                    seen[shard.name, tube] = not (
                        _paused(reply.body) or _stat_int(reply.body, b"current-jobs-delayed")
                    )
                else:
                    seen[shard.name, tube] = isinstance(reply, Word) and reply.word == "NOT_FOUND"
            if not isinstance(reply, Ok) or not _stat_int(reply.body, b"current-jobs-ready"):
                if cl.strays:
                    cl.saw_empty(shard.name, tube)  # NOT_FOUND: the tube does not exist there
                continue
            if not _paused(reply.body):
                names.append(tube)
                urgent[shard.name, tube] = _stat_int(reply.body, b"current-jobs-urgent") > 0
        if uses is not None and not all(isinstance(r, Using) for r in replies):
            usable = False  # (the ``use`` back)
        if not usable:
            s.drop(send.link)
            for tube in tubes:
                seen.pop((shard.name, tube), None)
            continue
        for tube, reply in peeked:
            if tube not in names:
                continue
            if isinstance(reply, Found):
                found.append((shard, send.link, tube, reply.id))
                size += len(reply.body)
            elif not (isinstance(reply, Word) and reply.word == "NOT_FOUND"):
                s.drop(send.link)
                break
        if names:
            ready.append((shard, send.link, names))
    now = cl.clock()
    has_pre = any(_usable(s, h, now) for h in s.prefetched.values())
    s.peek_ahead = len(ready) > 1 and size <= PEEK_AHEAD_BYTES
    if heads is not None:
        for (name, tube), recordable in seen.items():
            # the tubes with ready jobs are recorded below, once their priority is known
            if not recordable or (name, tube) not in urgent:
                heads.record(name, tube, Head(0, 0, now, -1, now + FRESH) if recordable
                             else None, seqs[name])  # fmt: skip
    if not has_pre and not cached:
        if not ready:
            if trusted and not waits:  # nothing ready, as the records say: ask every shard
                return (yield from _choose(s, [cl.shards[nm] for nm in wmap], wmap, False))
            return None
        if len(ready) == 1 and heads is None:
            return _Candidate((0,), ready[0][0], -1)
    if not ahead:
        peeks: list[tuple[ShardState, Send, list[str], list[int]]] = []
        for shard, link, names in ready:
            if link.ready:
                data, count, before = _peeks(link, names, stats=False)
                peeks.append((shard, Send(link, data, count), names, before))
        outcome = yield from s.request([send for _, send, _, _ in peeks]) if peeks else _nothing()
        for shard, send, names, peek_uses in peeks:
            result = outcome.get(send.link)
            if not isinstance(result, list):
                continue
            replies = iter(result)
            usable = True
            for tube, n_uses in zip(names, peek_uses, strict=True):
                if not all(isinstance(next(replies), Using) for _ in range(n_uses)):
                    usable = False
                reply = next(replies)
                if isinstance(reply, Found):
                    found.append((shard, send.link, tube, reply.id))
                    size += len(reply.body)
                elif not (isinstance(reply, Word) and reply.word == "NOT_FOUND"):
                    usable = False
            if not usable:
                s.drop(send.link)
        s.peek_ahead = size <= PEEK_AHEAD_BYTES
    pre = [
        _Candidate((h.priority, -math.inf, -math.inf, 0), None, job_id)
        for job_id, h in s.prefetched.items()
        if _usable(s, h, now)
    ]
    if not pre and not found and not cached and floor == math.inf:
        return None
    # Several shards (or prefetched jobs) compete: priority, then age, then round-robin.
    candidates = pre + cached
    stat_sends: dict[Link, list[tuple[ShardState, int, str]]] = {}
    for shard, link, tube, local in found:
        gid = ids.encode(shard.id, local)
        meta = cl.put_meta.get(gid)
        # Known from its put, unless its tube's urgent count says the priority is no longer so.
        if meta is not None and (meta[0] < URGENT) == urgent.get((shard.name, tube), False):
            rank = (order[shard.name] - s.rr) % n
            age = max(0, int(now - meta[1]))
            put_order = cl.put_order.get(gid, -1)
            key = (float(meta[0]), -float(age), float(put_order), float(rank),
                   float(local))  # fmt: skip
            candidates.append(_Candidate(key, shard, gid, tube=tube))
            if heads is not None and seen.get((shard.name, tube)):
                head = Head(local, meta[0], meta[1], put_order, now + FRESH)
                heads.record(shard.name, tube, head, seqs[shard.name])
        else:
            stat_sends.setdefault(link, []).append((shard, local, tube))
    sends2 = [
        Send(link, b"".join(StatsJob(local).encode() for _, local, _ in items), len(items))
        for link, items in stat_sends.items()
    ]
    outcome = yield from s.request(sends2) if sends2 else _nothing()
    for send in sends2:
        result = outcome.get(send.link)
        if not isinstance(result, list):
            continue
        for (shard, local, tube), reply in zip(stat_sends[send.link], result, strict=True):
            if not isinstance(reply, Ok):
                continue  # taken meanwhile
            job_stats = parse_mapping(reply.body)
            if job_stats.get("state") != "ready":
                continue
            rank = (order[shard.name] - s.rr) % n
            gid = ids.encode(shard.id, local)
            priority = _int(job_stats.get("pri"), DEFAULT_PRIORITY)
            age = _int(job_stats.get("age"), 0)
            put_order = cl.put_order.get(gid, -1)  # put order, where this process put it
            key = (float(priority), -float(age), float(put_order), float(rank), float(local))
            candidates.append(_Candidate(key, shard, gid, job_stats, tube))
            if heads is not None and seen.get((shard.name, tube)):
                head = Head(local, priority, now - age, put_order, now + FRESH)
                heads.record(shard.name, tube, head, seqs[shard.name])
    best = min(candidates, key=lambda c: c.key) if candidates else None
    if floor < math.inf and (best is None or best.key[0] > floor):
        # a job of a tube whose head is being taken could beat it: look there too
        return (yield from _choose(s, everywhere, wmap, use_heads, taken_ok=False, waits=waits))
    if best is None:
        return None
    s.rr += 1
    return best


def _peeks(link: Link, tubes: Sequence[str], stats: bool) -> tuple[bytes, int, list[int]]:
    """The commands that peek the most urgent ready job of each of ``tubes`` on ``link``
    (``stats``: each after the tube's ``stats-tube``), then use the link's tube again (a tube
    lives on a shard while a connection uses it: ``list-tubes`` would show it): their bytes,
    their reply count, and the ``use`` replies before each peek."""
    original = link.used
    parts: list[bytes] = []
    uses: list[int] = []
    count = 0
    for tube in tubes:
        if stats:
            parts.append(StatsTube(tube).encode())
            count += 1
        use, n = link.use_delta(tube)
        parts += [use, _PEEK_READY]
        uses.append(n)
        count += 1 + n
    again, n = link.use_delta(original)
    parts.append(again)
    return b"".join(parts), count + n, uses


def _nothing() -> Op[dict[Link, list[Reply] | Failure]]:
    return {}
    yield  # pragma: no cover - makes this a generator


def _adopt(
    s: Session,
    winners: Sequence[tuple[Link, Reserved]],
    known: dict[str, StatValue] | None = None,
    late: bool = False,
) -> Op[list[int]]:
    """Jobs just reserved on the session's behalf become prefetched, with their priority, TTR
    and tube read by ``stats-job`` (``known``: a single winner's stats, read already). ``late``:
    the jobs were reserved some time ago (a lingering wait), so their deadline comes from
    ``time-left``. Returns the global ids kept (a job whose link failed is given back by it)."""
    now = s.cluster.clock()
    entries: list[tuple[Link, Reserved, int]] = []
    heads = s.cluster.heads
    for link, reply in winners:
        gid = ids.encode(link.shard.id, reply.id)
        if heads is not None:
            heads.reserved(link.shard.name, reply.id)
        new = s.prefetched[gid] = Held(link, DEFAULT_PRIORITY, 1, now + 1, "", now, reply.body)
        s.timed(new, now + 1)
        link.held += 1
        link.reserving = False
        s.lost.pop(gid, None)
        entries.append((link, reply, gid))
    stats_by_gid: dict[int, dict[str, StatValue]] = {}
    if known is not None and len(entries) == 1:
        stats_by_gid[entries[0][2]] = known
    elif entries:
        sends = [Send(link, StatsJob(reply.id).encode(), 1) for link, reply, _ in entries]
        outcome = yield from s.request(sends)
        for (link, _, gid), send in zip(entries, sends, strict=True):
            result = outcome.get(send.link)
            stats = (
                parse_mapping(result[0].body)
                if isinstance(result, list) and isinstance(result[0], Ok)
                else None
            )
            if stats is not None and stats.get("state") == "reserved":
                stats_by_gid[gid] = stats
            elif stats is not None:  # its TTR ran out before the shard answered: not ours
                held = s.prefetched.pop(gid, None)
                if held is not None:
                    link.held -= 1
                    s.cluster.note_unseen(gid, timeouts=1)
            elif isinstance(result, list) and not link.closed:
                s.drop(link)  # an answer we cannot use: closing gives the job back
    kept: list[int] = []
    for _, _, gid in entries:
        held = s.prefetched.get(gid)
        stats = stats_by_gid.get(gid)
        if held is None or stats is None:
            continue
        held.priority = _int(stats.get("pri"), DEFAULT_PRIORITY)
        held.ttr = max(1, _int(stats.get("ttr"), 1))
        left = _int(stats.get("time-left"), held.ttr)
        s.timed(held, now + (min(left, held.ttr) if late else held.ttr))
        held.tube = str(stats.get("tube", ""))
        held.keep_until = min(now + PREFETCH_HOLD, held.deadline - SAFETY_MARGIN)
        ready = s.cluster.put_acked.pop(gid, None)
        fresh = stats.get("reserves") == 1 and not (stats.get("releases") or stats.get("kicks"))
        if fresh:
            held.ready_at = ready
        stats["age"] = _int(stats.get("age"), 0)
        kept.append(gid)
    return kept


def _hand_out(s: Session, gid: int) -> Reply:
    """Hand out the prefetched job ``gid``."""
    held = s.prefetched.pop(gid)
    held.keep_until = math.inf
    s.held[gid] = held
    s.cluster.metrics.deliveries += 1
    return Reserved(gid, held.body)


def _settle_winners(
    s: Session,
    winners: Sequence[tuple[Link, Reserved]],
    known: dict[str, StatValue] | None = None,
    lazy: bool = False,
) -> Op[Reply | None]:
    """Jobs just reserved on the session's behalf: hand out the most urgent, keep the others as
    prefetched. None: every winner vanished (its link failed). ``lazy``: a single job whose
    stats are not ``known`` is handed out at once, its TTR read only when needed (``hold``)."""
    if lazy and len(winners) == 1 and known is None:
        link, reply = winners[0]
        return hold(s, link, reply)
    kept = yield from _adopt(s, winners, known)
    if not kept:
        return None
    best = min(kept, key=lambda g: (s.prefetched[g].priority, kept.index(g)))
    s.cluster.metrics.raced += len(kept) - 1
    return _hand_out(s, best)


@dataclass(slots=True)
class _Waiter:
    shard: ShardState
    expires: float | None
    exact: bool = False
    """The proxy's exact single-shard wait: the client's own command, never cancelled."""
    replies: list[Reply] = field(default_factory=list)
    until: float = math.inf
    """While it lingers (``Session.lingering``): when it is cancelled if no reserve took it."""
    armed: float = -math.inf
    """When its reserve was sent."""


def _wait(
    s: Session,
    relevant: Sequence[ShardState],
    wmap: Mapping[str, list[str]],
    deadline: float | None,
    soon: float | None,
    adopted: dict[Link, _Waiter] | None = None,
) -> Op[Reply | None]:
    """Phase 2: block on every relevant shard at once; the first job wins. None: a winner
    vanished before it could be handed out (the caller starts again). ``adopted``: waits the
    previous reserve left armed (``Session.linger``)."""
    cl = s.cluster
    begun = cl.clock()
    waiters: dict[Link, _Waiter] = dict(adopted or {})
    idle_seen: set[str] = set()
    pending = list(relevant)
    exact = len(relevant) == 1 and not s.cancellable and not s.partial
    # Shards left out because sentinels cover them: when one is uncovered (a job arrived
    # there), the shell ends the round early and the waits are cancelled to look again.
    # (A scan that finds a watched tube's jobs on a new shard ends the round the same way.)
    covering = cl.sentinels
    gen = cl.coverage_gen
    try:
        while True:
            now = cl.clock()
            short = deadline is not None and deadline - now < REARM_MIN
            active = {w.shard.name for w in waiters.values()}
            sends: list[Send] = []
            still: list[ShardState] = []
            for shard in pending:
                if shard.name in active or (short and shard.name in idle_seen):
                    continue
                if not shard.health.available(now):
                    still.append(shard)
                    continue
                if deadline is None:
                    command, expires = _RESERVE_FOREVER, None
                else:
                    seconds = min(max(0, math.ceil(deadline - now)), _MAX_WAIT)
                    command, expires = ReserveWithTimeout(seconds).encode(), now + seconds
                # A wait that may be cancelled (closed) runs beside the main link, which keeps
                # the session's watches and used tube on the shard; one the shard answers at
                # once (timeout 0) may run on it, and the proxy's exact wait does.
                if exact:
                    link = s.main(shard)
                else:
                    link = s.idle_link(shard, beside_main=expires is None or expires > now)
                data, n = link.watch_delta(wmap[shard.name])
                link.reserving = True
                link.owed += n + 1
                sends.append(Send(link, data + command, n + 1))
                waiters[link] = _Waiter(shard, expires, exact, armed=now)
                active.add(shard.name)
            pending = still
            if not waiters and not (short and idle_seen):
                raise ShardUnavailable(
                    "no shard of the watched tubes is up",
                    tuple((sh.name, "down: " + sh.health.last_error) for sh in relevant),
                )
            wake = [t for t in (deadline, soon) if t is not None]
            probes = [p for sh in pending if (p := sh.health.next_probe()) is not None]
            if probes and cl.probing:  # (a background probe may bring one back before that)
                probes.append(now + cl.config.server_retry_timeout)
            wake += probes
            if not probes and pending:
                wake.append(now + 0.01)
            sent = {send.link for send in sends}
            s.nudgeable = covering
            outcome = yield Round(
                sends=sends,
                wait=[link for link in waiters if link not in sent],
                first=True,
                until=min(wake) if wake else None,
                close=s.take_closes(),
            )
            s.nudgeable = False
            winners: list[tuple[Link, Reserved]] = []
            soon_reply = _collect(s, outcome, waiters, winners, pending, idle_seen)
            if winners or soon_reply:
                # Jobs that raced in on other shards are read, not given back (see the module
                # docstring); the other waits linger or are cancelled.
                yield from _finish_waits(s, waiters, winners, pending, idle_seen, wmap)
                if winners:  # a job and a shard's DEADLINE_SOON at once: the job wins
                    got = yield from _settle_winners(s, winners, lazy=s.lazy_hold)
                    observe_wakeup(s, got, begun)
                    return got
                return DEADLINE_SOON
            if covering and cl.coverage_gen != gen:
                gen = cl.coverage_gen
                if s.watch_map() != wmap:  # a covered shard of a watched tube was uncovered
                    yield from _cancel_round(s, waiters, winners, pending, idle_seen)
                    if winners:
                        got = yield from _settle_winners(s, winners)
                        observe_wakeup(s, got, begun)
                        return got
                    if not waiters:
                        return None  # ``reserve`` looks again, with the new watch map
                    covering = False  # (a wait it may not cancel: answered as it is)
            now = cl.clock()
            if soon is not None and now >= soon:
                yield from _finish_waits(s, waiters, winners, pending, idle_seen, wmap)
                yield from _cancel_or_await(s, waiters, winners, pending, idle_seen)
                if winners:
                    got = yield from _settle_winners(s, winners, lazy=s.lazy_hold)
                    observe_wakeup(s, got, begun)
                    return got
                return DEADLINE_SOON
            if deadline is not None and now >= deadline:
                if not waiters and not idle_seen:  # every shard failed: no answer is no job
                    raise ShardUnavailable(
                        "no shard of the watched tubes answered",
                        tuple((sh.name, sh.health.last_error or "failed") for sh in relevant),
                    )
                if (yield from _caught_meanwhile(s, waiters, begun, winners, pending, idle_seen)):
                    yield from _finish_waits(s, waiters, winners, pending, idle_seen, wmap)
                    got = yield from _settle_winners(s, winners, lazy=s.lazy_hold)
                    observe_wakeup(s, got, begun)
                    return got
                return (yield from _time_out(s, waiters, pending, idle_seen, relevant, wmap))
    except BaseException:
        _cancel(s, waiters)
        raise
    finally:
        s.nudgeable = False


def _caught_meanwhile(
    s: Session,
    waiters: dict[Link, _Waiter],
    begun: float,
    winners: list[tuple[Link, Reserved]],
    pending: list[ShardState],
    idle_seen: set[str],
) -> Op[bool]:
    """At the deadline: a wait armed before this reserve (a lingering one) on a shard where this
    process stored a job since may have been given that job by the shard, its ``RESERVED`` still
    on the way while the put's answer has arrived. One beanstalkd would hand the job out: read
    those waits for up to ``CAUGHT_GRACE`` more. True: ``winners`` has what they caught."""
    cl = s.cluster
    wmap = s.watch_map()
    links = [
        link
        for link, w in waiters.items()
        if w.armed < begun
        and any(
            cl.put_at.get((w.shard.name, tube), -math.inf) >= w.armed
            for tube in wmap.get(w.shard.name, ())
        )
    ]
    if not links:
        return False
    outcome = yield Round(wait=links, first=True, until=cl.clock() + CAUGHT_GRACE)
    _collect(s, outcome, waiters, winners, pending, idle_seen)
    now = cl.clock()
    for link in links:  # (nothing came: the next deadline does not wait again for those puts)
        waiter = waiters.get(link)
        if waiter is not None:
            waiter.armed = now
    return bool(winners)


def observe_wakeup(s: Session, reply: Reply | None, begun: float) -> None:
    """A blocked reserve handed out a job: when the job became ready while it waited (a fresh
    job this process put, ``Held.ready_at``), count the wake-up latency — from the put's
    acknowledgement (plus its delay) to now. Jobs from other clients of the shards, and jobs
    ready before the wait began, have no such time and are not counted; a job handed out before
    this process read its put's acknowledgement is counted when it does (``Cluster.early``)."""
    if not isinstance(reply, Reserved):
        return
    held = s.held.get(reply.id)
    if held is None:
        return
    if held.ready_at is None:  # not put by this process, or its put's answer not read yet
        s.cluster.delivered_early(reply.id, held.link.shard.name)
        return
    if held.ready_at >= begun:
        s.cluster.observe_wakeup(held.link.shard.name, max(0.0, s.cluster.clock() - held.ready_at))


def _collect(
    s: Session,
    outcome: Mapping[Link, list[Reply] | Failure],
    waiters: dict[Link, _Waiter],
    winners: list[tuple[Link, Reserved]],
    pending: list[ShardState],
    idle_seen: set[str],
) -> bool:
    """Account for the waits' replies. True when a shard answered DEADLINE_SOON for a job held on
    the waiting link (the exact single-shard wait)."""
    soon = False
    for link, waiter in list(waiters.items()):
        result = outcome.get(link)
        if result is None:
            continue
        s.settle(link, result)
        if isinstance(result, Failure):
            del waiters[link]
            link.reserving = False
            pending.append(waiter.shard)
            continue
        waiter.replies += result
        if link.owed:
            continue
        del waiters[link]
        *watch, last = waiter.replies
        if not all(isinstance(r, Watching) for r in watch):
            s.drop(link)
            pending.append(waiter.shard)
            continue
        if isinstance(last, Reserved):
            winners.append((link, last))
            continue
        link.reserving = False
        if isinstance(last, Word) and last.word in ("TIMED_OUT", "DEADLINE_SOON"):
            if last.word == "DEADLINE_SOON" and link.held:
                soon = True
            idle_seen.add(waiter.shard.name)
            pending.append(waiter.shard)  # re-armed if time is left
        else:
            s.drop(link)
            pending.append(waiter.shard)
    return soon


def _cancel(s: Session, waiters: dict[Link, _Waiter]) -> None:
    """Cancel the waits still pending by closing their links (an interrupted reserve)."""
    for link in list(waiters):
        del waiters[link]
        s.cluster.metrics.wait_cancels += 1
        s.drop(link)


def cancelled(cluster: Cluster, link: Link, replies: Sequence[Reply], complete: bool) -> None:
    """What a cancelled wait's link brought after its cancellation (``Round.cancel``: the shell
    half-closed it, so the shard answered its reserve at once). A job in them was reserved just
    before the shard saw the half-close, and is put back as the link closes: that reserve is
    unseen (``Cluster.unseen``). ``complete``: False when the shard did not answer in time (a
    failing shard; what it reserved, if anything, is not known)."""
    for reply in replies:
        if isinstance(reply, Reserved):
            cluster.note_unseen(ids.encode(link.shard.id, reply.id))
            cluster.readied(link.shard.name)  # it goes back as the link closes
    if not complete:
        cluster.note_failure(link.shard, f"no answer from {link.shard.name} to a cancelled wait")


def _spare(waiters: Mapping[Link, _Waiter]) -> list[Link]:
    """The waits a reserve may cancel: not the proxy's exact single-shard wait (the client's own
    command) and none on a link that holds jobs (closing it would give them back)."""
    return [link for link, w in waiters.items() if not (link.held or w.exact)]


def _cancel_round(
    s: Session,
    waiters: dict[Link, _Waiter],
    winners: list[tuple[Link, Reserved]],
    pending: list[ShardState],
    idle_seen: set[str],
) -> Op[None]:
    """Cancel the waits that hold no job in one shell step: what already arrived is read (a job
    that raced in joins ``winners``), the links still owing are closed at once."""
    links = _spare(waiters)
    if not links:
        return
    outcome = yield Round(cancel=links, close=s.take_closes())
    _collect(s, outcome, waiters, winners, pending, idle_seen)
    for link in links:
        if link in waiters:  # still owing: the shell closed it
            del waiters[link]
            s.cluster.metrics.wait_cancels += 1
            if not link.closed:
                s._forget(link)


def _finish_waits(
    s: Session,
    waiters: dict[Link, _Waiter],
    winners: list[tuple[Link, Reserved]],
    pending: list[ShardState],
    idle_seen: set[str],
    wmap: Mapping[str, list[str]],
) -> Op[None]:
    """The reserve is answered: leave the other waits armed for the session's next reserve
    (``Session.linger``), or cancel them now. Waits on links holding jobs and the proxy's exact
    wait are left in ``waiters`` (``_cancel_or_await`` reads them to their end)."""
    spare = {link: waiters[link] for link in _spare(waiters)}
    if s.linger > 0 and spare:
        cl = s.cluster
        now = cl.clock()
        for link, waiter in spare.items():
            del waiters[link]
            name = waiter.shard.name
            away = all(cl.owner(tube) != name for tube in wmap.get(name, ()))
            waiter.until = now + (AWAY_LINGER if away else s.linger)
        s.lingering.update(spare)
        s.linger_until = min(w.until for w in spare.values())
        s.linger_wmap = dict(wmap)
        return
    yield from _cancel_round(s, waiters, winners, pending, idle_seen)


def _resume_lingering(s: Session, wmap: Mapping[str, list[str]]) -> Op[dict[Link, _Waiter]]:
    """At the start of a reserve: jobs that lingering waits caught become prefetched; the waits
    still armed are returned for this reserve's wait (all are cancelled if the watch list
    changed since)."""
    if not s.lingering:
        return {}
    waiters: dict[Link, _Waiter] = {
        link: w for link, w in s.lingering.items() if isinstance(w, _Waiter)
    }
    s.lingering.clear()
    s.linger_until = math.inf
    winners: list[tuple[Link, Reserved]] = []
    pending: list[ShardState] = []
    idle: set[str] = set()
    if s.linger_wmap != dict(wmap):
        yield from _cancel_round(s, waiters, winners, pending, idle)
        waiters = {}
    else:
        outcome = yield Round(wait=list(waiters), first=True, until=-math.inf)
        _collect(s, outcome, waiters, winners, pending, idle)
    if winners:
        yield from _adopt(s, winners, late=True)
    return waiters


def expire_lingering(s: Session, now: float) -> Op[None]:
    """Cancel lingering waits whose time is up (a job one caught is kept as prefetched)."""
    if not s.lingering or now < s.linger_until:
        return
    waiters: dict[Link, _Waiter] = {
        link: w for link, w in s.lingering.items() if isinstance(w, _Waiter) and w.until <= now
    }
    for link in waiters:
        del s.lingering[link]
    s.linger_until = min(
        (w.until for w in s.lingering.values() if isinstance(w, _Waiter)), default=math.inf
    )
    winners: list[tuple[Link, Reserved]] = []
    yield from _cancel_round(s, waiters, winners, [], set())
    # A job caught meanwhile is kept like a raced one (PREFETCH_HOLD), for a reserve that may
    # still come.
    yield from _adopt(s, winners, late=True)


def _cancel_or_await(
    s: Session,
    waiters: dict[Link, _Waiter],
    winners: list[tuple[Link, Reserved]],
    pending: list[ShardState],
    idle_seen: set[str],
) -> Op[None]:
    """Cancel the waits still pending by closing their links, except the proxy's exact
    single-shard wait (and any wait on a link that holds jobs): it is the client's own command,
    read until the shard answers (its own timeout, DEADLINE_SOON or a job). Closing it would give
    the client's jobs back, or a job the shard reserved just then (a phantom reserve)."""
    _cancel(s, {link: waiters.pop(link) for link in _spare(waiters)})
    while waiters:
        outcome = yield Round(wait=list(waiters), first=True, until=None, close=s.take_closes())
        _collect(s, outcome, waiters, winners, pending, idle_seen)


def _time_out(
    s: Session,
    waiters: dict[Link, _Waiter],
    pending: list[ShardState],
    idle_seen: set[str],
    relevant: Sequence[ShardState],
    wmap: Mapping[str, list[str]],
) -> Op[Reply | None]:
    """The caller's deadline passed: let shards whose own timeout is about to fire answer (so
    their links are kept), cancel the rest. A job that arrives meanwhile wins."""
    cl = s.cluster
    winners: list[tuple[Link, Reserved]] = []
    limit = cl.clock() + TIMEOUT_GRACE
    while waiters:
        expiring = [w for w in waiters.values() if w.expires is not None and w.expires <= limit]
        if not expiring:
            break
        # A shard answers a due wait at once (TIMED_OUT, or a job it just reserved for it):
        # closing the wait before that answer could give back a job reserved unseen (a phantom
        # reserve). A shard that has not answered within the reply timeout is failing.
        latest = max(w.expires for w in expiring if w.expires is not None)
        until = latest + cl.config.timeout
        if until <= cl.clock():
            break
        outcome = yield Round(wait=list(waiters), first=True, until=until)
        _collect(s, outcome, waiters, winners, pending, idle_seen)
        if winners:
            break
    cancelled = any(not (link.held or w.exact) for link, w in waiters.items())
    yield from _finish_waits(s, waiters, winners, pending, idle_seen, wmap)
    yield from _cancel_or_await(s, waiters, winners, pending, idle_seen)
    if winners:
        got = yield from _settle_winners(s, winners, lazy=s.lazy_hold)
        return got if got is not None else TIMED_OUT
    if not cancelled and idle_seen == {sh.name for sh in relevant}:
        s.idle_at = cl.clock()
        s.idle_shards = frozenset(idle_seen)
    return TIMED_OUT
