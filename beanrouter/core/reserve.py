"""The cross-shard reserve: find the most urgent job without reserving the others (pure).

``reserve(session, timeout)`` works in two phases:

1. **Choose** (only when more than one shard holds a watched tube, or the session has prefetched
   jobs). One round asks, on each such shard's main link and for each watched tube there,
   ``stats-tube`` (ready count, pause) then ``use``+``peek-ready`` (the tube's most urgent job).
   When one shard alone has a ready job in an unpaused tube, that is the shard; when several do,
   one more round reads each candidate's ``stats-job`` (priority, age) and the most urgent wins
   (priority, then the oldest, then round-robin). Only then is ``reserve-with-timeout 0`` sent, to
   the winning shard alone: no job that is not handed out is reserved, so ``reserves``,
   ``releases`` and ``timeouts`` of every job are what one beanstalkd would show. If someone else
   took the job meanwhile (``TIMED_OUT``), the choice is made again (``Metrics.sweep_retries``).
   Cost: ``3k + 1`` commands per shard for ``k`` watched tubes on it, plus one ``stats-job`` per
   candidate shard when several have ready jobs; nothing extra when only one shard holds watched
   tubes.
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
from ..router import ids
from ..router.errors import ShardUnavailable
from .cluster import ShardState
from .links import Link
from .rounds import Failure, Op, Round, Send
from .session import DEFAULT_PRIORITY, Held, Session

__all__ = [
    "IDLE_SKIP_SWEEP",
    "PREFETCH_HOLD",
    "SAFETY_MARGIN",
    "expire",
    "reserve",
    "reserve_job",
]

SAFETY_MARGIN = 1.0
"""beanstalkd's DEADLINE_SOON margin: a held job less than this from its deadline."""
PREFETCH_HOLD = 1.0
"""Seconds a job that raced in during a wait is kept for the session's next reserve."""
TIMEOUT_GRACE = 0.1
"""How long past the caller's deadline a shard whose own timeout is about to fire is waited for
(to keep its link) before its wait is cancelled by closing it."""
IDLE_SKIP_SWEEP = 0.05
"""A reserve within this many seconds after one that saw every shard empty goes straight to the
wait (the choice would cost each shard commands for nothing)."""
REARM_MIN = 0.05
"""A wait is not re-armed on a shard that answered TIMED_OUT when less than this remains."""
SWEEP_RETRIES = 16
"""Choices made again in one reserve when the chosen job was taken by someone else."""
_RESERVE_FOREVER = b"reserve\r\n"
_MAX_WAIT = 2**31 - 1
"""Longest ``reserve-with-timeout`` (beanstalkd reads it as a C int; 68 years)."""


def _int(value: StatValue | None, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def soon_at(s: Session) -> float | None:
    """When DEADLINE_SOON starts for the most urgent held job (None: no held job)."""
    if not s.held:
        return None
    return min(h.deadline for h in s.held.values()) - SAFETY_MARGIN


def expire(s: Session, now: float) -> Op[None]:
    """Forget held jobs whose TTR ran out; give back prefetched jobs whose time is up or whose
    tube is no longer watched."""
    for job_id, held in list(s.held.items()):
        if held.deadline <= now:
            del s.held[job_id]
            held.link.held -= 1
    due = [
        (job_id, h)
        for job_id, h in s.prefetched.items()
        if h.keep_until <= now or h.deadline - SAFETY_MARGIN <= now or h.tube not in s.watching
    ]
    if not due:
        return
    sends: list[Send] = []
    for job_id, held in due:
        del s.prefetched[job_id]
        held.link.held -= 1
        s.cluster.metrics.give_backs += 1
        if held.deadline <= now or held.link.closed:
            continue  # the shard has put it back already
        _, local = ids.decode(job_id)
        sends.append(Send(held.link, Release(local, held.priority, 0).encode(), 1))
    # One release per link per round (a link may hold several).
    while sends:
        batch: dict[Link, Send] = {}
        rest: list[Send] = []
        for send in sends:
            if send.link in batch:
                rest.append(send)
            else:
                batch[send.link] = send
        outcome = yield from s.request(list(batch.values()))
        for link, result in outcome.items():
            ok = isinstance(result, list) and (
                (isinstance(result[0], Word) and result[0].word in ("RELEASED", "NOT_FOUND"))
                or isinstance(result[0], BuriedReply)
            )
            if not ok and not link.closed:
                s.drop(link)  # closing gives the job back anyway
        sends = [r for r in rest if not r.link.closed]
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
    start = cl.clock()
    if timeout is not None and not timeout < math.inf:
        timeout = None if timeout == math.inf else 0.0  # inf waits forever; NaN does not
    deadline = None if timeout is None else start + max(0.0, timeout)
    yield from expire(s, start)
    wmap = s.watch_map()
    relevant = [cl.shards[n] for n in wmap]
    ready = [sh for sh in relevant if sh.health.available(start)]
    if not ready:
        raise ShardUnavailable(
            "no shard of the watched tubes is up",
            tuple((sh.name, "down: " + sh.health.last_error) for sh in relevant),
        )
    soon = soon_at(s)
    skip = (
        not s.prefetched
        and timeout != 0
        and s.idle_at is not None
        and start - s.idle_at < IDLE_SKIP_SWEEP
        and s.idle_shards == frozenset(sh.name for sh in ready)
        and (soon is None or soon > start)
    )
    s.idle_at = None
    while True:
        if (len(ready) > 1 or s.prefetched) and not skip:
            reply = yield from _sweep(s, ready, wmap)
            if reply is not None:
                return reply
            now = cl.clock()
            if soon is not None and soon <= now:
                return DEADLINE_SOON
            if deadline is not None and now >= deadline:
                return TIMED_OUT
        skip = False
        reply = yield from _wait(s, relevant, wmap, deadline, soon)
        if reply is not None:
            return reply
        ready = [sh for sh in relevant if sh.health.available(cl.clock())]


def reserve_job(s: Session, job_id: int) -> Op[Reply]:
    """``reserve-job``: reserve ``job_id`` whatever its state. ``RESERVED`` or ``NOT_FOUND``."""
    shard, local = s.cluster.shard_of(job_id)
    pre = s.prefetched.pop(job_id, None)
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


def _sweep(
    s: Session, shards: Sequence[ShardState], wmap: Mapping[str, list[str]]
) -> Op[Reply | None]:
    """Phase 1: choose the most urgent ready job and reserve it alone. None: nothing ready."""
    for _ in range(SWEEP_RETRIES):
        best = yield from _choose(s, shards, wmap)
        if best is None:
            return None
        if best.shard is None:  # a prefetched job wins
            held = s.prefetched.pop(best.job_id)
            held.keep_until = math.inf
            s.held[best.job_id] = held
            s.cluster.metrics.prefetch_hits += 1
            s.cluster.metrics.deliveries += 1
            return Reserved(best.job_id, held.body)
        shard = best.shard
        link = s.main(shard)
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
            got = yield from _settle_winners(s, [(link, last)], known)
            if got is not None:
                return got
            continue
        link.reserving = False
        if not (isinstance(last, Word) and last.word in ("TIMED_OUT", "DEADLINE_SOON")):
            s.drop(link)
        s.cluster.metrics.sweep_retries += 1
    return None


def _choose(
    s: Session, shards: Sequence[ShardState], wmap: Mapping[str, list[str]]
) -> Op[_Candidate | None]:
    """The most urgent ready job over ``shards`` and the session's prefetched jobs (None: none)."""
    cl = s.cluster
    sends: list[tuple[ShardState, Send, list[tuple[str, int]]]] = []
    for shard in shards:
        if not shard.health.available(cl.clock()):
            continue
        link = s.main(shard)
        original = link.used
        plan: list[tuple[str, int]] = []
        parts: list[bytes] = []
        count = 0
        for tube in wmap[shard.name]:
            use, n = link.use_delta(tube)
            parts += [StatsTube(tube).encode(), use, PeekReady().encode()]
            plan.append((tube, n))
            count += 2 + n
        back, n = link.use_delta(original)
        sends.append((shard, Send(link, b"".join(parts) + back, count + n), plan))
    outcome = yield from s.request([send for _, send, _ in sends])
    found: list[tuple[ShardState, Link, int]] = []  # (shard, link, local id) per ready tube
    for shard, send, plan in sends:
        result = outcome.get(send.link)
        if not isinstance(result, list):
            continue
        replies = iter(result)
        usable = True
        for _, n in plan:
            stats = next(replies)
            uses = [next(replies) for _ in range(n)]
            reply = next(replies)
            if not all(isinstance(u, Using) for u in uses):
                usable = False
            if not isinstance(stats, Ok):
                continue  # NOT_FOUND: the tube does not exist there
            if _int(parse_mapping(stats.body).get("pause-time-left"), 0) > 0:
                continue
            if isinstance(reply, Found):
                found.append((shard, send.link, reply.id))
            elif not (isinstance(reply, Word) and reply.word == "NOT_FOUND"):
                usable = False
        if not usable:
            s.drop(send.link)
    pre = [
        _Candidate((h.priority, -math.inf, 0), None, job_id)
        for job_id, h in s.prefetched.items()
        if h.tube in s.watching and not h.link.closed
    ]
    by_shard = {shard.name for shard, _, _ in found}
    if not pre:
        if not found:
            return None
        if len(by_shard) == 1:
            shard, _, local = found[0]
            return _Candidate((0,), shard, ids.encode(shard.id, local))
    # Several shards (or prefetched jobs) compete: priority, then age, then round-robin.
    stat_sends: dict[Link, list[tuple[ShardState, int]]] = {}
    for shard, link, local in found:
        stat_sends.setdefault(link, []).append((shard, local))
    sends2 = [
        Send(link, b"".join(StatsJob(local).encode() for _, local in items), len(items))
        for link, items in stat_sends.items()
    ]
    outcome = yield from s.request(sends2) if sends2 else _nothing()
    candidates = list(pre)
    order = {name: i for i, name in enumerate(cl.shards)}
    n = max(1, len(cl.shards))
    for send in sends2:
        result = outcome.get(send.link)
        if not isinstance(result, list):
            continue
        for (shard, local), reply in zip(stat_sends[send.link], result, strict=True):
            if not isinstance(reply, Ok):
                continue  # taken meanwhile
            job_stats = parse_mapping(reply.body)
            if job_stats.get("state") != "ready":
                continue
            rank = (order[shard.name] - s.rr) % n
            key = (
                float(_int(job_stats.get("pri"), DEFAULT_PRIORITY)),
                -float(_int(job_stats.get("age"), 0)),
                float(rank),
                float(local),
            )
            candidates.append(_Candidate(key, shard, ids.encode(shard.id, local), job_stats))
    if not candidates:
        return None
    s.rr += 1
    return min(candidates, key=lambda c: c.key)


def _nothing() -> Op[dict[Link, list[Reply] | Failure]]:
    return {}
    yield  # pragma: no cover - makes this a generator


def _settle_winners(
    s: Session,
    winners: Sequence[tuple[Link, Reserved]],
    known: dict[str, StatValue] | None = None,
) -> Op[Reply | None]:
    """Jobs just reserved on the session's behalf: hand out the most urgent, keep the others as
    prefetched. ``known``: the stats of a single winner, when already read. None: every winner
    vanished (its link failed)."""
    cl = s.cluster
    now = cl.clock()
    entries: list[tuple[Link, Reserved, int]] = []
    for link, reply in winners:
        gid = ids.encode(link.shard.id, reply.id)
        s.prefetched[gid] = Held(link, DEFAULT_PRIORITY, 1, now + 1, "", now, reply.body)
        link.held += 1
        link.reserving = False
        s.lost.pop(gid, None)
        entries.append((link, reply, gid))
    stats_by_gid: dict[int, dict[str, StatValue]] = {}
    if known is not None and len(entries) == 1:
        stats_by_gid[entries[0][2]] = known
    else:
        sends = [Send(link, StatsJob(reply.id).encode(), 1) for link, reply, _ in entries]
        outcome = yield from s.request(sends)
        for (link, _, gid), send in zip(entries, sends, strict=True):
            result = outcome.get(send.link)
            if isinstance(result, list) and isinstance(result[0], Ok):
                stats_by_gid[gid] = parse_mapping(result[0].body)
            elif isinstance(result, list) and not link.closed:
                s.drop(link)  # an answer we cannot use: closing gives the job back
    best: tuple[tuple[int, int, int], int] | None = None
    for i, (_, _, gid) in enumerate(entries):
        held = s.prefetched.get(gid)
        stats = stats_by_gid.get(gid)
        if held is None or stats is None:
            continue
        held.priority = _int(stats.get("pri"), DEFAULT_PRIORITY)
        held.ttr = max(1, _int(stats.get("ttr"), 1))
        held.deadline = now + held.ttr
        held.tube = str(stats.get("tube", ""))
        held.keep_until = min(now + PREFETCH_HOLD, held.deadline - SAFETY_MARGIN)
        key = (held.priority, -_int(stats.get("age"), 0), i)
        if best is None or key < best[0]:
            best = (key, gid)
    if best is None:
        return None
    gid = best[1]
    held = s.prefetched.pop(gid)
    held.keep_until = math.inf
    s.held[gid] = held
    cl.metrics.deliveries += 1
    cl.metrics.raced += sum(1 for _, _, g in entries if g in s.prefetched)
    return Reserved(gid, held.body)


@dataclass(slots=True)
class _Waiter:
    shard: ShardState
    expires: float | None
    exact: bool = False
    """The proxy's exact single-shard wait: the client's own command, never cancelled."""
    replies: list[Reply] = field(default_factory=list)


def _wait(
    s: Session,
    relevant: Sequence[ShardState],
    wmap: Mapping[str, list[str]],
    deadline: float | None,
    soon: float | None,
) -> Op[Reply | None]:
    """Phase 2: block on every relevant shard at once; the first job wins. None: a winner
    vanished before it could be handed out (the caller starts again)."""
    cl = s.cluster
    waiters: dict[Link, _Waiter] = {}
    idle_seen: set[str] = set()
    pending = list(relevant)
    exact = len(relevant) == 1 and not s.cancellable
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
                link = s.main(shard) if exact else s.idle_link(shard)
                data, n = link.watch_delta(wmap[shard.name])
                if deadline is None:
                    command, expires = _RESERVE_FOREVER, None
                else:
                    seconds = min(max(0, math.ceil(deadline - now)), _MAX_WAIT)
                    command, expires = ReserveWithTimeout(seconds).encode(), now + seconds
                link.reserving = True
                link.owed += n + 1
                sends.append(Send(link, data + command, n + 1))
                waiters[link] = _Waiter(shard, expires, exact)
                active.add(shard.name)
            pending = still
            if not waiters and not (short and idle_seen):
                raise ShardUnavailable(
                    "no shard of the watched tubes is up",
                    tuple((sh.name, "down: " + sh.health.last_error) for sh in relevant),
                )
            wake = [t for t in (deadline, soon) if t is not None]
            probes = [p for sh in pending if (p := sh.health.next_probe()) is not None]
            wake += probes
            if not probes and pending:
                wake.append(now + 0.01)
            sent = {send.link for send in sends}
            outcome = yield Round(
                sends=sends,
                wait=[link for link in waiters if link not in sent],
                first=True,
                until=min(wake) if wake else None,
                close=s.take_closes(),
            )
            winners: list[tuple[Link, Reserved]] = []
            soon_reply = _collect(s, outcome, waiters, winners, pending, idle_seen)
            if winners or soon_reply:
                if waiters:  # jobs that raced in on other shards: take what has arrived
                    outcome = yield Round(wait=list(waiters), first=True, until=-math.inf)
                    _collect(s, outcome, waiters, winners, pending, idle_seen)
                _cancel(s, waiters)
                if winners:  # a job and a shard's DEADLINE_SOON at once: the job wins
                    return (yield from _settle_winners(s, winners))
                return DEADLINE_SOON
            now = cl.clock()
            if soon is not None and now >= soon:
                yield from _cancel_or_await(s, waiters, winners, pending, idle_seen)
                if winners:
                    return (yield from _settle_winners(s, winners))
                return DEADLINE_SOON
            if deadline is not None and now >= deadline:
                return (yield from _time_out(s, waiters, pending, idle_seen, relevant))
    except BaseException:
        _cancel(s, waiters)
        raise


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
    """Cancel the waits still pending by closing their links."""
    for link in list(waiters):
        del waiters[link]
        s.cluster.metrics.wait_cancels += 1
        s.drop(link)


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
    cancel = [link for link, w in waiters.items() if not (link.held or w.exact)]
    _cancel(s, {link: waiters.pop(link) for link in cancel})
    while waiters:
        outcome = yield Round(wait=list(waiters), first=True, until=None, close=s.take_closes())
        _collect(s, outcome, waiters, winners, pending, idle_seen)


def _time_out(
    s: Session,
    waiters: dict[Link, _Waiter],
    pending: list[ShardState],
    idle_seen: set[str],
    relevant: Sequence[ShardState],
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
        latest = max(w.expires for w in expiring if w.expires is not None)
        until = min(limit, latest + TIMEOUT_GRACE / 2)
        if until <= cl.clock():
            break
        outcome = yield Round(wait=list(waiters), first=True, until=until)
        _collect(s, outcome, waiters, winners, pending, idle_seen)
        if winners:
            if waiters:
                outcome = yield Round(wait=list(waiters), first=True, until=-math.inf)
                _collect(s, outcome, waiters, winners, pending, idle_seen)
            break
    cancelled = any(not (link.held or w.exact) for link, w in waiters.items())
    yield from _cancel_or_await(s, waiters, winners, pending, idle_seen)
    if winners:
        got = yield from _settle_winners(s, winners)
        return got if got is not None else TIMED_OUT
    if not cancelled and idle_seen == {sh.name for sh in relevant}:
        s.idle_at = cl.clock()
        s.idle_shards = frozenset(idle_seen)
    return TIMED_OUT
