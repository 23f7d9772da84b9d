"""Pipelined commands run as one round: one write to one shard link, replies read in order (pure).

A proxy client that pipelines has several parsed commands waiting; run one at a time, each would
cost a round trip to its shard. ``plan(session, commands)`` takes the longest leading run that can
go out together and returns it as a ``Batch`` (how many commands it took, and the operation that
runs them). The operation's result is one entry per command, in order: the reply that command's
own operation (``command_op``) would have returned, or the error it would have raised.

A command joins the run when everything it sends goes to the run's link, and what it sends does
not depend on the replies of the commands before it:

* ``put``, when the used tube's first shard is healthy (no failure counted);
* ``use``, when every link it updates is the run's;
* ``delete``, ``release``, ``bury``, ``touch``, ``stats-job``, ``kick-job``, on the link that
  holds the job (else its shard's main link); an id that names no shard, a lost reservation or
  a shard marked down is answered without sending anything, as the command's own operation does;
* ``list-tube-used``, ``list-tubes-watched`` (nothing sent);
* ``reserve-with-timeout 0`` of the proxy's exact one-shard reserve (``reserve.exact_now``); when
  it is the shell's first step of a blocking reserve (``probe``) it ends the run: when it
  answers ``TIMED_OUT`` the wait that follows must run after everything before it, and before
  everything after it. A client's own ``reserve-with-timeout 0`` is final and the run goes on.

Anything else ends the run before it, and so does a command whose link is another. The replies
are interpreted in command order as each command's own operation would (global ids, held jobs,
a put the shard refuses with ``DRAINING``/``OUT_OF_MEMORY`` tried on the next shards at its
turn). When the link fails before anything reached the shard (``CONNECT``, ``SEND``,
``STALE``), each command runs its own operation instead, in order, exactly as if the run had
never been tried; when the link is lost after the write (``LOST``), each command gets the error
its own operation would have given for that failure (a put ``PutUncertain``, a job command
``ShardUnavailable``), and a reserve runs its own operation (the shard gave back whatever it
reserved when the link closed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..protocol import Buried as BuriedReply
from ..protocol import (
    Bury,
    Command,
    Delete,
    Ignore,
    Inserted,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    ProtocolError,
    Put,
    Release,
    Reply,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    StatsJob,
    Touch,
    Use,
    Using,
    Watch,
    encode_put,
)
from . import ids
from .cluster import ShardState
from .errors import RouterError, ShardUnavailable, UnexpectedReply
from .links import Link
from .reserve import exact_now, exact_now_done, exact_wait, observe_wakeup, reserve, reserve_job
from .rounds import Failure, FailureKind, Op, Round, Send
from .session import Session, global_stats_job

__all__ = [
    "MAX_BYTES",
    "MAX_COMMANDS",
    "MAX_RESERVES",
    "Batch",
    "Result",
    "command_op",
    "extend",
    "extendable",
    "plan",
]

MAX_COMMANDS = 256
"""Commands in one run at most."""
MAX_BYTES = 256 * 1024
"""Bytes written to the shard for one run at most (the command that crosses it is the last)."""
MAX_RESERVES = 16
"""Reserves in one run at most (unless ``plan`` is told otherwise): each may bring back a whole
job body, and a run's replies are the client's before it can be paused for not reading them."""

Result = Reply | RouterError | ProtocolError
"""What one command of a run came to: its reply, or the error its own operation would raise."""


def command_op(s: Session, cmd: Command) -> Op[Reply] | Reply | None:
    """The operation of one client command (or its reply when no shard is asked); None for the
    commands whose answer needs the shell's own counters (``stats``, ``stats-tube``) and
    ``quit``. A negative ``reserve-with-timeout`` waits forever, as with beanstalkd."""
    match cmd:
        case Put():
            return s.put(cmd.priority, cmd.delay, cmd.ttr, cmd.body)
        case Use():
            return s.use(cmd.tube)
        case Reserve():
            return reserve(s, None)
        case ReserveWithTimeout():
            return reserve(s, None if cmd.timeout < 0 else cmd.timeout)
        case ReserveJob():
            return reserve_job(s, cmd.id)
        case Delete():
            return s.delete(cmd.id)
        case Release():
            return s.release(cmd.id, cmd.priority, cmd.delay)
        case Bury():
            return s.bury(cmd.id, cmd.priority)
        case Touch():
            return s.touch(cmd.id)
        case Watch():
            return s.watch(cmd.tube)
        case Ignore():
            return s.ignore(cmd.tube)
        case Peek():
            return s.peek(cmd.id)
        case PeekReady():
            return _first(s.peek_state("ready"))
        case PeekDelayed():
            return _first(s.peek_state("delayed"))
        case PeekBuried():
            return _first(s.peek_state("buried"))
        case Kick():
            return s.kick(cmd.bound)
        case KickJob():
            return s.kick_job(cmd.id)
        case StatsJob():
            return s.stats_job(cmd.id)
        case ListTubes():
            return s.list_tubes()
        case ListTubeUsed():
            return s.list_tube_used()
        case ListTubesWatched():
            return s.list_tubes_watched()
        case PauseTube():
            return s.pause_tube(cmd.tube, cmd.delay)
    return None


def _name(cmd: Command) -> str:
    return cmd.stat[4:] if cmd.stat else type(cmd).__name__


def _first(op: Op[tuple[Reply, object]]) -> Op[Reply]:
    reply, _ = yield from op
    return reply


def _own(s: Session, cmd: Command) -> Op[Result]:
    """``cmd`` run by its own operation (a run whose link failed before anything was sent)."""
    op = command_op(s, cmd)
    assert op is not None and not isinstance(op, Reply), cmd
    try:
        return (yield from op)
    except (RouterError, ProtocolError) as exc:
        return exc


@dataclass(slots=True)
class _Step:
    cmd: Command
    replies: int
    """Replies its bytes produce on the run's link."""
    result: Result | None
    """Known when planned (nothing sent, or ``use``'s own answer)."""
    shard: ShardState | None = None
    start: float = 0.0
    wait: bool = False
    """The client's own blocking reserve, sent as it is (``stream``)."""
    reserve: bool = False
    """A reserve (counted against the run's ``reserves`` until it is answered)."""
    cover: tuple[str, ...] | None = None
    """A wait that leaves out shards sentinels cover (``Session.partial``): the shards it
    waits on instead. It is the run's last step and its link holds no job, so when one of
    those shards is uncovered the run cancels it and the reserve looks again (``_rewait``)."""
    tube: str | None = None
    """A put's tube."""


class Batch(NamedTuple):
    """A planned run: the first ``size`` commands, and the operation that runs them (to be run
    now: planning has already updated the session's view of the link). ``planner``: the run's
    state, for ``extend``."""

    size: int
    op: Op[list[Result]]
    planner: _Planner


class _Planner:
    __slots__ = (
        "ended",
        "extending",
        "link",
        "next",
        "now",
        "open",
        "parts",
        "posted",
        "probe",
        "put_shard",
        "replies",
        "reserves",
        "s",
        "sealed",
        "size",
        "steps",
        "stream",
        "waits",
    )

    def __init__(
        self, s: Session, now: float, probe: Command | None, stream: bool, reserves: int
    ) -> None:
        self.reserves = reserves
        """How many more reserves the run may take."""
        self.s = s
        self.now = now
        self.probe = probe
        self.stream = stream
        self.link: Link | None = None
        self.parts: list[bytes] = []
        self.size = 0
        self.replies = 0
        self.steps: list[_Step] = []
        self.ended = False
        self.waits = False
        self.put_shard: ShardState | None = None
        """Set by a put (cleared by any other command): the next put goes the same way."""
        self.open = False
        """A streamed run is reading its replies and may take more commands (``extend``)."""
        self.extending = False
        """Planning commands for a run that is out (``extend``)."""
        self.next = 0
        """The first step whose result is not in yet (its index in ``steps``)."""
        self.posted: list[Send] = []
        """Posted ``use`` commands on links other than the run's, written before it."""
        self.sealed = False
        """The run ends with a wait that may be cancelled (``_Step.cover``): no ``extend``."""

    def _link_for(self, link: Link) -> bool:
        """``link`` can carry the next command of the run (once the run has a link, only that
        one: it may owe replies already, see ``extend``)."""
        if self.link is None:
            return link.ready
        return link is self.link and not link.closed

    def _send(self, link: Link, data: bytes, replies: int) -> None:
        self.link = link
        self.parts.append(data)
        self.size += len(data)
        self.replies += replies

    def _post(self, send: Send) -> None:
        """Add ``send`` to the posted ones (one ``Send`` per link, in order)."""
        posted = self.posted
        for i, other in enumerate(posted):
            if other.link is send.link:
                posted[i] = Send(
                    send.link,
                    other.data + send.data,
                    other.replies + send.replies,
                    other.posted + send.posted,
                )
                return
        posted.append(send)

    def add(self, cmd: Command) -> bool:
        """Plan ``cmd`` as the run's next command; False: it cannot join (nothing changed)."""
        t = type(cmd)
        if t is Put:
            assert isinstance(cmd, Put)
            return self._put(cmd)
        self.put_shard = None
        if t in _JOB_COMMANDS:
            return self._job(cmd)
        if t is Use:
            assert isinstance(cmd, Use)
            return self._use(cmd)
        if t is ListTubeUsed:
            self.steps.append(_Step(cmd, 0, self.s.list_tube_used()))
            return True
        if t is ListTubesWatched:
            self.steps.append(_Step(cmd, 0, self.s.list_tubes_watched()))
            return True
        if t is ReserveWithTimeout:
            assert isinstance(cmd, ReserveWithTimeout)
            if cmd.timeout == 0:
                return self._reserve_now(cmd)
            return self.stream and self._reserve_wait(cmd)
        if t is Reserve:
            assert isinstance(cmd, Reserve)
            return self.stream and self._reserve_wait(cmd)
        return False

    def _put(self, cmd: Put) -> bool:
        s = self.s
        tube = s.using
        link = self.link
        if link is not None and link.used == tube and self.put_shard is link.shard:
            shard = link.shard  # (the run's previous command was a put to this tube)
        else:
            shard = s.cluster.shards[s.cluster.preference(tube)[0]]
            if shard.health.failures:
                return False  # its own operation decides (failover, probes)
            if link is not None:
                if link.shard is not shard or not self._link_for(link):
                    return False
            else:
                link = s.main(shard)
        use, n = link.use_delta(tube)
        data = encode_put(cmd.priority, cmd.delay, cmd.ttr, cmd.body)
        self._send(link, use + data if n else data, n + 1)
        self.steps.append(_Step(cmd, n + 1, None, shard, tube=tube))
        self.put_shard = shard
        return True

    def _job(self, cmd: Command) -> bool:
        s = self.s
        job_id: int = cmd.id  # type: ignore[attr-defined]
        t = type(cmd)
        reservation = t is not StatsJob and t is not KickJob
        try:
            shard, local = s.cluster.shard_of(job_id)
            if t is KickJob:
                if not shard.health.available(self.now):
                    raise ShardUnavailable(
                        f"shard {shard.name} is down", ((shard.name, shard.health.last_error),)
                    )
                link = s.main(shard)
            else:
                _, _, link = s._job_link(job_id, _name(cmd), reservation)
        except RouterError as exc:
            self.steps.append(_Step(cmd, 0, exc))  # answered without sending anything
            return True
        if not self._link_for(link):
            return False
        # (as ``Release(local, ...).encode()`` and the others would: the client's command was
        # checked by the parser, ``local`` by ``shard_of``)
        if t is not Delete and t is not Touch and t is not StatsJob:
            s.cluster.readied(shard.name)  # release, bury, kick-job
        if t is Release:
            assert isinstance(cmd, Release)
            data = b"release %d %d %d\r\n" % (local, cmd.priority, cmd.delay)
        elif t is Bury:
            assert isinstance(cmd, Bury)
            data = b"bury %d %d\r\n" % (local, cmd.priority)
        else:
            data = b"%b%d\r\n" % (cmd.verb, local)  # type: ignore[attr-defined]
        self._send(link, data, 1)
        self.steps.append(_Step(cmd, 1, None, shard, self.now))
        return True

    def _use(self, cmd: Use) -> bool:
        if self.extending:
            return False  # (it may update other links than the run's, which owes replies)
        s = self.s
        tube = cmd.tube
        target = s.cluster.put_target(tube)
        updates: list[tuple[Link, str]] = []
        for shard in s.cluster.shards.values():
            links = [k for k in s.links.get(shard.name, ()) if k.ready]
            if shard is target and not links:
                links = [s.main(shard)]
            if links:
                desired = tube if shard is target else "default"
                if links[0].used != desired:
                    updates.append((links[0], desired))
        if s.posting and all(link is not self.link for link, _ in updates):
            # Posted (``Send.posted``): written before the run, answered at once; the shards'
            # USING are checked as they come.
            s.using = tube
            for link, desired in updates:
                data, count = link.use_delta(desired)
                self._post(Send(link, data, count, (Using(desired),)))
            self.steps.append(_Step(cmd, 0, Using(tube)))
            return True
        if any(not self._link_for(link) for link, _ in updates) or len(updates) > 1:
            return False  # several links: its own operation (one round over all of them)
        s.using = tube
        count = 0
        for link, desired in updates:
            data, count = link.use_delta(desired)
            self._send(link, data, count)
        self.steps.append(_Step(cmd, count, Using(tube)))
        return True

    def _reserve_now(self, cmd: ReserveWithTimeout) -> bool:
        if self.reserves <= 0:
            return False
        got = exact_now(self.s, self.now, self.link)
        if got is None:
            return False
        self.reserves -= 1
        link, data, count = got
        self._send(link, data, count)
        self.steps.append(_Step(cmd, count, None, link.shard, reserve=True))
        self.waits = True
        if cmd is self.probe:
            self.ended = True  # a wait may follow it: nothing after it may be sent yet
        else:
            link.reserving = False  # the client's own: its answer is final, the run goes on
        return True

    def _reserve_wait(self, cmd: Reserve | ReserveWithTimeout) -> bool:
        if self.reserves <= 0:
            return False
        got = exact_wait(self.s, self.now, cmd, self.link)
        if got is None:
            return False
        self.reserves -= 1
        link, data, count = got
        self._send(link, data, count)
        step = _Step(cmd, count, None, link.shard, self.now, wait=True, reserve=True)
        self.steps.append(step)
        self.waits = True
        link.reserving = False  # the shard keeps the order: the run goes on after it
        if self.s.partial:  # it may have to be cancelled: nothing may follow it on the link
            step.cover = tuple(self.s.watch_map())
            self.ended = self.sealed = True
        return True


_JOB_COMMANDS = frozenset({Delete, Release, Bury, Touch, StatsJob, KickJob})


def plan(
    s: Session,
    commands: Sequence[Command],
    probe: Command | None = None,
    *,
    stream: Callable[[Result], None] | None = None,
    max_reserves: int = MAX_RESERVES,
) -> Batch | None:
    """The longest leading run of ``commands`` that goes out as one round (see the module
    docstring), or None when the first command cannot start one (run it by ``command_op``).
    ``probe``: the (last) command that is the shell's first step of a blocking reserve; it ends
    the run, while a client's own ``reserve-with-timeout 0`` does not. ``stream``: the client's
    own blocking reserves may join the run (the exact one-shard case, ``reserve.exact_wait``),
    and each command's result is passed to ``stream`` as soon as its replies are in, in order
    (and not kept: the operation's result is then empty; more commands may join the run while
    it is out, see ``extend``). ``max_reserves``: reserves the run may take unanswered (at
    least one)."""
    if not commands:
        return None
    planner = _Planner(s, s.cluster.clock(), probe, stream is not None, max(1, max_reserves))
    for cmd in commands:
        if len(planner.steps) >= MAX_COMMANDS or planner.size >= MAX_BYTES:
            break
        if not planner.add(cmd):
            break
        if planner.ended:
            break
    if not planner.steps:
        first = commands[0]
        if type(first) is ReserveWithTimeout and first.timeout == 0 and not s.cancellable:
            # The proxy's reserve-with-timeout 0 over several shards (``exact_now`` did not take
            # it): the cross-shard reserve runs alone, like the runs, without a task (its rounds
            # are requests; with the shards' heads known, one round on one shard).
            planner.ended = True
            return Batch(1, _alone(s, first), planner)
        return None
    return Batch(len(planner.steps), _run(s, planner, stream), planner)


def _alone(s: Session, cmd: Command) -> Op[list[Result]]:
    """A run of one command, by its own operation."""
    return [(yield from _own(s, cmd))]


def extendable(batch: Batch) -> Link | None:
    """The link of a streamed run that is out and may take more commands (``extend``), or
    None."""
    planner = batch.planner
    link = planner.link
    if planner.sealed or not planner.open or link is None or link.closed:
        return None
    return link


def extend(s: Session, batch: Batch, commands: Sequence[Command]) -> tuple[int, bytes]:
    """More commands for a streamed run that is out (``extendable``): the shard keeps the
    link's order, so what the client sent while the run's replies come joins it on its link
    (planned as ``plan`` would, ``use`` aside), to be sent at once. Returns how many of the
    leading ``commands`` joined, and their bytes (the link owes their replies now); their
    results come through the run's ``stream``, after those of the commands before them. The
    run keeps at most ``MAX_COMMANDS`` steps and its ``reserves`` unanswered, and takes at most
    ``MAX_BYTES`` per extension."""
    planner = batch.planner
    link = extendable(batch)
    if link is None or not commands:
        return 0, b""
    planner.now = s.cluster.clock()
    planner.extending = True
    planner.parts = []
    planner.size = 0
    before = planner.replies
    taken = 0
    try:
        for cmd in commands:
            if len(planner.steps) - planner.next >= MAX_COMMANDS or planner.size >= MAX_BYTES:
                break
            if not planner.add(cmd):
                break
            taken += 1  # (a streamed run has no probe: nothing ends it early)
    finally:
        planner.extending = False
    link.owed += planner.replies - before
    data = b"".join(planner.parts)
    planner.parts = []
    return taken, data


def _run(
    s: Session, planner: _Planner, stream: Callable[[Result], None] | None
) -> Op[list[Result]]:
    link = planner.link
    steps = planner.steps
    results: list[Result] = []
    if planner.posted:  # answered once written (``Send.posted``)
        yield from s.request(planner.posted)
    if link is None or not planner.replies:  # nothing sent (``use`` with nothing to change...)
        for step in steps:
            results.append((yield from _one(s, step, [], link)))
    elif not planner.waits:
        send = Send(link, b"".join(planner.parts), planner.replies)
        outcome = yield from s.request([send])
        got = outcome.get(link)
        assert got is not None
        pos = 0
        for step in steps:
            if isinstance(got, Failure):
                results.append(
                    (yield from _failed(s, step, got))
                    if step.replies
                    else (yield from _one(s, step, [], link))
                )
                continue
            results.append((yield from _one(s, step, got[pos : pos + step.replies], link)))
            pos += step.replies
    else:  # a reserve among them: read like the reserve, each command answered when complete
        link.owed += planner.replies
        sends = [Send(link, b"".join(planner.parts), planner.replies)]
        planner.parts = []
        planner.open = stream is not None  # (``extend`` may add steps while it reads)
        replies: list[Reply] = []
        pos = 0
        failure: Failure | None = None
        try:
            while planner.next < len(steps):
                step = steps[planner.next]
                if pos + step.replies <= len(replies):
                    result = yield from _one(s, step, replies[pos : pos + step.replies], link)
                    pos += step.replies
                elif failure is not None:
                    result = yield from _failed(s, step, failure)
                else:
                    # (what is answered is not kept: a streamed run may go on for long)
                    del steps[: planner.next], replies[:pos]
                    planner.next = pos = 0
                    cover = step.cover if step.wait else None
                    gen = s.cluster.coverage_gen
                    s.nudgeable = cover is not None
                    outcome = yield Round(sends=sends, wait=() if sends else [link], first=True,
                                          close=s.take_closes(), partial=True)  # fmt: skip
                    s.nudgeable = False
                    sends = []
                    got = outcome.get(link)
                    s.settle(link, got)
                    if isinstance(got, Failure):
                        failure = got
                        planner.open = False
                    elif got:
                        replies += got
                    if (
                        cover is not None
                        and failure is None
                        and not link.held  # (a job the run reserved before it: not cancelled)
                        and pos + step.replies > len(replies)
                        and s.cluster.coverage_gen != gen
                        and tuple(s.watch_map()) != cover
                    ):
                        rest = yield from _rewait(s, step, link, len(replies) - pos)
                        if rest is not None:
                            replies += rest
                            continue
                        planner.open = False
                        result = yield from _again(s, step)
                        planner.next += 1
                        if stream is None:
                            results.append(result)
                        else:
                            stream(result)
                        break
                    continue
                planner.next += 1
                if step.reserve:
                    planner.reserves += 1  # (one more may join the run: ``extend``)
                if stream is None:
                    results.append(result)
                else:
                    stream(result)  # (and not kept)
        finally:
            planner.open = False
    return results


def _rewait(s: Session, step: _Step, link: Link, have: int) -> Op[list[Reply] | None]:
    """A shard the wait of ``step`` left out was uncovered (a job arrived there): cancel the
    wait (``Round.cancel``; the link holds no job). Returns the replies that completed it
    before the cancel, or None when it was cancelled (the link is gone: a job the shard
    reserved for it in that instant goes back, counted unseen by ``reserve.cancelled``)."""
    outcome = yield Round(cancel=[link], close=s.take_closes())
    got = outcome.get(link)
    got = got if isinstance(got, list) else []
    if have + len(got) >= step.replies:  # it had answered: read as usual
        s.settle(link, got)
        return got
    s.cluster.metrics.wait_cancels += 1
    if not link.closed:
        s._forget(link)  # the shell half-closed it and reads its last answer
    return None


def _again(s: Session, step: _Step) -> Op[Result]:
    """The reserve of ``step`` after its wait was cancelled (``_rewait``): the session's own
    reserve, with the watch map as it is now and the time the client has left."""
    cmd = step.cmd
    timeout: float | None = None
    if isinstance(cmd, ReserveWithTimeout):
        timeout = max(0.0, cmd.timeout - (s.cluster.clock() - step.start))
    try:
        return (yield from reserve(s, timeout))
    except (RouterError, ProtocolError) as exc:
        return exc


def _one(s: Session, step: _Step, replies: list[Reply], link: Link | None) -> Op[Result]:
    """One step whose replies are all in."""
    if step.replies == 1 and step.cmd.__class__ is Put:
        reply = replies[0]  # the common put, as ``Session._put_reply`` reads it
        if reply.__class__ is Inserted and reply.id <= ids.MAX_LOCAL_ID:
            shard = step.shard
            assert shard is not None
            gid = shard.id_base | reply.id
            s.cluster.note_put(gid, step.cmd.delay, step.cmd.priority, step.tube)
            return reply if not shard.id else Inserted(gid)
    if step.result is not None:
        if replies and not all(isinstance(r, Using) for r in replies):
            assert link is not None
            s.drop(link)  # (``use``) it does not use what we think
        return step.result
    try:
        return (yield from _finish(s, step, replies, link))
    except (RouterError, ProtocolError) as exc:
        return exc


def _failed(s: Session, step: _Step, failure: Failure) -> Op[Result]:
    """A step whose link failed: its own operation when nothing reached the shard, else the
    error its own operation gives for a lost link."""
    cmd = step.cmd
    if step.result is not None:  # ``use``: answered anyway (its link is forgotten)
        return step.result
    if step.wait:  # a client's own wait: not run again (it could wait for long, uncancelled)
        assert step.shard is not None
        return ShardUnavailable(
            f"{_name(cmd)}: the connection to shard {step.shard.name} failed",
            ((step.shard.name, str(failure)),),
        )
    if failure.kind is not FailureKind.LOST or type(cmd) is ReserveWithTimeout:
        return (yield from _own(s, cmd))
    assert step.shard is not None
    if type(cmd) is Put:
        return s.put_uncertain(step.shard, failure)
    return ShardUnavailable(
        f"{_name(cmd)}: the connection to shard {step.shard.name} failed",
        ((step.shard.name, str(failure)),),
    )


def _finish(s: Session, step: _Step, replies: list[Reply], link: Link | None) -> Op[Result]:
    """A step's replies, read as its own operation reads them."""
    cmd = step.cmd
    t = type(cmd)
    shard = step.shard
    assert shard is not None and link is not None
    if t is Put:
        assert isinstance(cmd, Put)
        if step.replies == 2 and not isinstance(replies[0], Using):
            s.drop(link)
            return UnexpectedReply(f"use {s.using}: unexpected reply {replies[0]!r}")
        reply = s._put_reply(shard, 0, replies[-1], cmd.delay, cmd.priority, step.tube)
        if isinstance(reply, str):  # refused (DRAINING, OUT_OF_MEMORY): the next shards
            try:
                return (
                    yield from s.put(
                        cmd.priority, cmd.delay, cmd.ttr, cmd.body, refused=(shard.name, reply)
                    )
                )
            except (RouterError, ProtocolError) as exc:
                return exc
        return reply
    if step.wait:
        got = exact_now_done(s, link, replies)
        if got is not None:
            observe_wakeup(s, got, step.start)
            return got
        return UnexpectedReply(f"{_name(cmd)}: unexpected reply {replies[-1:]!r}")
    if t is ReserveWithTimeout:
        got = exact_now_done(s, link, replies)
        if got is not None:
            return got
        return (yield from _own(s, cmd))
    reply = replies[0]
    job_id: int = cmd.id  # type: ignore[attr-defined]
    if t is StatsJob:
        return global_stats_job(reply, shard, s.cluster, job_id)
    if t is KickJob:
        s.cluster.readied(shard.name)
        return reply
    if t is not Delete and t is not Touch:
        s.cluster.readied(shard.name)  # release, bury
    if t is Touch:
        s.touched(job_id, step.start, reply)
        return reply
    s._unhold(job_id)  # delete, release, bury
    if t is not Delete and isinstance(reply, BuriedReply):
        return BuriedReply()
    return reply
