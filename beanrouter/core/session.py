"""A client's session: used tube, watch list, held jobs; every command routed (pure).

One ``Session`` is one client: a ``Router``, an ``AsyncRouter``, or one connection to the proxy.
Each operation is a generator (see ``rounds``): it decides which bytes go to which shard link,
interprets the replies, and returns a protocol reply with **global** job ids (``Inserted``,
``Reserved``, ``Found``, ``Buried``, ``Ok`` with a rewritten ``id:``) or raises a ``RouterError``
(``ShardUnavailable``, ``PutUncertain``, ``ReservationLost``, ``JobIdError``…); ``errors.reply_for``
says which beanstalkd word the proxy sends for each.

Links: per shard, the first ready link is the session's *main* link (puts, ``use``, peeks, stats,
kicks, job commands of jobs it does not hold, and reserves that do not block); blocking waits run
on links that hold no job, so that cancelling one by closing it strands nothing (see
``reserve``).

Invariants:

* a job the session holds stays on the link that reserved it, and delete/release/bury/touch of it
  go there (beanstalkd lets only the reserver act on a reserved job);
* a link that failed or was cancelled is forgotten; the jobs it held are ``lost`` (the shard put
  them back to ready): the next delete/release/bury/touch of one raises ``ReservationLost`` once;
* a reserve never reserves a job it does not hand out, except in the blocking wait's race, where a
  job that arrives from a second shard is kept (*prefetched*) for the session's next reserve and
  given back only when none comes in time (``Metrics.give_backs`` counts those);
* after an interrupted operation, ``abandon()`` closes every link left owing a reply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .. import protocol as _protocol
from ..protocol import (
    NOT_FOUND,
    Bury,
    Delete,
    ErrorReply,
    Found,
    Inserted,
    Kick,
    Kicked,
    KickJob,
    ListTubes,
    Ok,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Release,
    Reply,
    StatsJob,
    StatsTube,
    StatValue,
    Touch,
    Use,
    Using,
    Watch,
    Watching,
    Word,
    format_list,
    format_mapping,
    parse_list,
    parse_mapping,
)
from ..protocol import Buried as BuriedReply
from ..protocol import Ignore as IgnoreCommand
from ..protocol import Stats as StatsCommand
from . import ids
from .cluster import Cluster, ShardState
from .errors import (
    JobIdError,
    PutUncertain,
    ReservationLost,
    ShardUnavailable,
    UnexpectedReply,
)
from .links import Link
from .merge import merge_stats, merge_stats_tube
from .rounds import Failure, FailureKind, Op, Outcome, Round, Send

__all__ = ["DEFAULT_PRIORITY", "MAX_IDLE_LINKS", "MAX_LOST", "Held", "Session"]

_NO_LINKS: list[Link] = []
"""Shared and never appended to: ``take_closes`` when there is nothing to close."""
DEFAULT_PRIORITY = 1024
"""Priority assumed for a job whose priority is unknown."""
MAX_IDLE_LINKS = 2
"""Idle links (holding no job) kept per shard."""
MAX_LOST = 10_000
"""Lost reservations remembered (the oldest are forgotten first)."""


@dataclass(slots=True)
class Held:
    """A job reserved on the session's behalf."""

    link: Link
    priority: int
    ttr: int
    """0: not known yet (``deadline`` is then infinite; see ``reserve.learn``)."""
    deadline: float
    """When the shard's TTR runs out (core clock)."""
    tube: str
    keep_until: float = math.inf
    """For a prefetched job: when it is given back if no reserve took it."""
    body: bytes = b""
    """For a prefetched job: its body (handed out by the next reserve)."""
    since: float = 0.0
    """When its TTR started counting (the reserve's reply, or the last ``touch``)."""
    ready_at: float | None = None
    """When the job became ready, if known: a fresh job (never reserved before, released or
    kicked) this process put, its acknowledgement time plus its delay."""


class Session:
    """One client of the cluster.

    Args:
        cluster: the shared cluster state.
        cancellable: True for library shells, whose reserves may be cancelled (a timeout that is
            not a whole number of seconds, a cancelled task): blocking waits then never run on a
            link that holds jobs. False for the proxy, whose client cannot cancel a reserve but by
            disconnecting: a wait on a single shard then runs on the main link, exactly as the
            client's own command would (the shard's DEADLINE_SOON included).
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        cancellable: bool = True,
        linger: float = 0.0,
        counted: bool = True,
    ) -> None:
        self.cluster = cluster
        self.cancellable = cancellable
        self.linger = linger
        """Seconds the other waits of a reserve stay armed after it returned, for the session's
        next reserve (0: cancelled at once). Only for shells that run ``maintain`` on time."""
        self.lingering: dict[Link, object] = {}
        """Waits left armed by the last reserve (reserve.py's waiters), with ``linger_wmap``."""
        self.linger_until = math.inf
        self.linger_wmap: dict[str, list[str]] | None = None
        self.using = "default"
        self.watching: list[str] = ["default"]
        self.links: dict[str, list[Link]] = {}
        self.held: dict[int, Held] = {}
        """Jobs handed out and not yet settled, by global id."""
        self.prefetched: dict[int, Held] = {}
        """Jobs reserved in a wait's race and not handed out yet, by global id."""
        self.expiry = math.inf
        """No held or prefetched job's deadline is earlier (a lower bound, kept by ``timed``):
        ``reserve.expire_held`` looks at the held jobs only once it has passed."""
        self.lost: dict[int, str] = {}
        """Held jobs whose link was closed, by global id (value: the shard's name)."""
        self.closed = False
        self._closing: list[Link] = []
        self._wmap: dict[str, list[str]] | None = None
        self._wmap_gen = (-1, 0)
        self._owners: frozenset[str] = frozenset()
        self.partial = False
        """The last ``watch_map`` left out shards that sentinels cover."""
        self.posting = False
        """Set by a shell that answers posted sends at once (``Send.posted``, the proxy's):
        ``use`` is then answered once written, its shard's ``USING`` checked as it comes."""
        self.peek_ahead = False
        """The last cross-shard choice found several shards with ready jobs (a backlog): the
        next one peeks in its first round (``reserve._choose``)."""
        self.nudgeable = False
        """Set while a reserve waits without the shards sentinels cover: the shell ends its
        wait round early when one of them is uncovered (``Cluster.on_uncovered``)."""
        self.counted = counted
        """Its watch list counts in ``Cluster.watchers`` (not a sentinel's own session)."""
        self.lazy_hold = not cancellable
        """A job a reserve got alone is handed out without its ``stats-job`` (``reserve.hold``):
        its TTR, priority and tube are read when needed (``reserve.learn``: DEADLINE_SOON, a
        ``release``/``bury`` without a priority). The proxy's clients never need them; the
        blocking ``Router`` sets it too (its ``Job`` reads them when asked)."""
        if counted:
            cluster.watched("default", 1)
        self.rr = 0
        """Round-robin offset among equally urgent candidates of different shards."""
        self.idle_at: float | None = None
        self.idle_shards: frozenset[str] = frozenset()
        self.waiting = False
        """Set by the shell while a wait round of this session is on the wire (its reserves are
        at the shards): ``current-waiting`` as one beanstalkd counts it."""
        self.refused_by: tuple[str, str] | None = None
        """Set by ``put_fast_done`` when the fast put was refused: (shard, word)."""

    # ---- links -------------------------------------------------------------------------------

    def main(self, shard: ShardState) -> Link:
        """The session's main link to ``shard`` (a new one when it has none ready)."""
        links = self.links.setdefault(shard.name, [])
        for link in links:
            if link.ready:
                return link
        link = Link(shard)
        links.append(link)
        return link

    def idle_link(self, shard: ShardState, beside_main: bool = False) -> Link:
        """A ready link to ``shard`` that holds no job (a new one when there is none).

        ``beside_main``: not the main one (``main``) either, for a wait that may be cancelled
        (closed): the main link carries the session's watches and used tube, so closing the
        wait never makes a watched or used tube vanish from its shard (with its pause state),
        as it never does on one beanstalkd."""
        links = self.links.setdefault(shard.name, [])
        main = next((k for k in links if k.ready), None) if beside_main else None
        for link in links:
            if link.ready and link.held == 0 and link is not main:
                return link
        link = Link(shard)
        links.append(link)
        return link

    def all_links(self) -> list[Link]:
        return [link for links in self.links.values() for link in links]

    def _forget(self, link: Link) -> None:
        """``link`` is closed: forget it; its jobs are lost (held) or given back (prefetched)."""
        if link.held or link.reserving or link.owed:
            self.cluster.readied(link.shard.name)  # what it holds goes back as it closes
        link.closed = True
        self.lingering.pop(link, None)
        links = self.links.get(link.shard.name)
        if links is not None and link in links:
            links.remove(link)
            if not links:
                del self.links[link.shard.name]
        if link.held:
            for job_id in [j for j, h in self.held.items() if h.link is link]:
                del self.held[job_id]
                self.lost[job_id] = link.shard.name
            for job_id in [j for j, h in self.prefetched.items() if h.link is link]:
                del self.prefetched[job_id]
                self.cluster.metrics.give_backs += 1
                self.cluster.note_unseen(job_id)  # the shard puts it back as the link closes
            link.held = 0
            while len(self.lost) > MAX_LOST:
                del self.lost[next(iter(self.lost))]

    def drop(self, link: Link) -> None:
        """Close ``link`` (the shell closes its transport with the next round, or from
        ``take_closes``): the shard gives back whatever it held."""
        if not link.closed:
            self._forget(link)
            self._closing.append(link)

    def take_closes(self) -> list[Link]:
        """Links the shell must close now (each reported once)."""
        closing = self._closing
        if not closing:
            return _NO_LINKS
        self._closing = []
        return closing

    def abandon(self) -> list[Link]:
        """After an operation was interrupted (an exception, a cancelled task): close every link
        left owing a reply or with an unsettled reserve. Returns the links to close."""
        for link in self.all_links():
            if (link.owed or link.reserving) and link not in self.lingering:
                self.drop(link)
        return self.take_closes()

    def reusable(self) -> list[tuple[Link, bytes, int]]:
        """Before ``close``, for shells that keep idle shard connections for later sessions: the
        links that hold, owe and wait for nothing and watch only ``default``, each with the bytes
        (and their reply count) that bring it back to a new connection's state (``use
        default``, so that no tube lives on for it). The others must be closed (closing gives
        back what they hold). ``close`` still returns every link."""
        out: list[tuple[Link, bytes, int]] = []
        for link in self.all_links():
            ready = link.ready and not link.held and link not in self.lingering
            if ready and link.watched == ["default"]:
                data, n = link.use_delta("default")
                out.append((link, data, n))
        return out

    def close(self) -> list[Link]:
        """The client is gone: close every link (each shard gives back the jobs held on it).
        Returns the links to close."""
        if not self.closed and self.counted:
            for tube in self.watching:
                self.cluster.watched(tube, -1)
        self.closed = True
        for link in self.all_links():
            self.drop(link)
        self.lost.clear()
        return self.take_closes()

    def trim(self, shard: ShardState) -> None:
        """Close idle links of ``shard`` beyond ``MAX_IDLE_LINKS``."""
        idle = [k for k in self.links.get(shard.name, ()) if k.held == 0 and k.ready]
        for link in idle[MAX_IDLE_LINKS:]:
            self.drop(link)

    # ---- rounds ------------------------------------------------------------------------------

    def settle(self, link: Link, result: list[Reply] | Failure | None) -> None:
        """Account for what a round brought on ``link``."""
        if result is None:
            return
        if isinstance(result, Failure):
            if not link.closed:
                self._forget(link)  # the shell closed the transport
            if result.kind is not FailureKind.STALE:
                self.cluster.note_failure(link.shard, result.message)
            return
        link.owed -= len(result)
        if result and link.shard.health.failures:
            self.cluster.note_success(link.shard)

    def request(self, sends: Sequence[Send]) -> Op[Outcome]:
        """Send on several links at once and wait for every reply (or failure)."""
        for send in sends:
            send.link.owed += send.replies
        outcome = yield Round(sends=list(sends), close=self.take_closes())
        for send in sends:
            self.settle(send.link, outcome.get(send.link))
        return outcome

    def broadcast(
        self, shards: Iterable[ShardState], data: bytes, count: int, *, use: str | None = None
    ) -> Op[list[tuple[ShardState, list[Reply] | None, str]]]:
        """Send ``data`` (``count`` replies) on the main link of every available shard, after a
        ``use`` of ``use`` when given. Returns ``(shard, replies or None, reason)``; the ``use``
        replies are checked and left out."""
        now = self.cluster.clock()
        out: list[tuple[ShardState, list[Reply] | None, str]] = []
        todo: list[ShardState] = []
        for shard in shards:
            if not shard.health.available(now):
                out.append((shard, None, "down: " + shard.health.last_error))
            else:
                todo.append(shard)
        for attempt in range(2):  # a second time on new links for links found stale
            sends: list[tuple[ShardState, Send, int]] = []
            for shard in todo:
                link = self.main(shard)
                prefix, n = link.use_delta(use) if use is not None else (b"", 0)
                sends.append((shard, Send(link, prefix + data, n + count), n))
            todo = []
            if not sends:
                break
            outcome = yield from self.request([s for _, s, _ in sends])
            for shard, send, n in sends:
                result = outcome.get(send.link)
                if isinstance(result, Failure) and result.kind is FailureKind.STALE and not attempt:
                    todo.append(shard)
                    continue
                if result is None or isinstance(result, Failure):
                    out.append((shard, None, str(result)))
                    continue
                if not all(isinstance(r, Using) for r in result[:n]):
                    self.drop(send.link)
                    out.append((shard, None, "unexpected reply to use"))
                    continue
                out.append((shard, result[n:], ""))
        return out

    def one(
        self, shard: ShardState, data: bytes, count: int = 1, link: Link | None = None
    ) -> Op[list[Reply]]:
        """One request on ``link`` (default: the shard's main link).

        Raises:
            ShardUnavailable: the shard is down, unreachable, or did not answer.
        """
        fixed = link is not None
        for _ in range(2):  # a second time on a new link for a link found stale
            if link is None:
                if not shard.health.available(self.cluster.clock()):
                    raise ShardUnavailable(
                        f"shard {shard.name} is down", ((shard.name, shard.health.last_error),)
                    )
                link = self.main(shard)
            outcome = yield from self.request([Send(link, data, count)])
            result = outcome[link]
            if fixed or not (isinstance(result, Failure) and result.kind is FailureKind.STALE):
                break
            link = None
        if isinstance(result, Failure):
            what = "unreachable" if result.kind is FailureKind.CONNECT else "failed"
            raise ShardUnavailable(f"shard {shard.name} {what}", ((shard.name, str(result)),))
        return result

    # ---- tubes -------------------------------------------------------------------------------

    def use(self, tube: str) -> Op[Reply]:
        """``use``: puts (and peeks and kicks) go to ``tube``. The tube is made to exist on the
        shard its puts go to, and the main links elsewhere let go of the previous one, so that
        ``list-tubes`` shows what one beanstalkd would."""
        Use(tube)  # validates
        self.using = tube
        target = self.cluster.put_target(tube)
        sends: list[Send] = []
        for shard in self.cluster.shards.values():
            links = [k for k in self.links.get(shard.name, ()) if k.ready]
            if shard is target:
                links = links[:1] or [self.main(shard)]
            for link in links if shard is target else links[:1]:
                desired = tube if shard is target else "default"
                data, n = link.use_delta(desired)
                if n:
                    sends.append(Send(link, data, n, (Using(desired),) if self.posting else ()))
        if sends:
            outcome = yield from self.request(sends)
            for send in sends:
                result = outcome.get(send.link)
                if isinstance(result, list) and not all(isinstance(r, Using) for r in result):
                    self.drop(send.link)
        return Using(tube)

    def watch_map(self) -> dict[str, list[str]]:
        """The watched tubes of each shard that holds one (configuration order). Where the
        proxy's sentinels run (``Cluster.sentinels``), a tube's away shards that a sentinel
        covers are left out (``partial`` then says so): a job there wakes the sentinel, which
        uncovers the pair, and the session looks again (``reserve``)."""
        cl = self.cluster
        key = (cl.generation, cl.coverage_gen) if cl.sentinels else (cl.generation, 0)
        if self._wmap is None or self._wmap_gen != key:
            wmap: dict[str, list[str]] = {}
            partial = False
            for tube in self.watching:
                for name in cl.consumer_shards(tube):
                    if cl.sentinels and not cl.uncovered(name, tube):
                        partial = True
                        continue
                    wmap.setdefault(name, []).append(tube)
            self._wmap = {n: wmap[n] for n in cl.shards if n in wmap}
            self._wmap_gen = key
            self.partial = partial
            self._owners = frozenset(cl.owner(tube) for tube in self.watching)
        return self._wmap

    def owners(self) -> frozenset[str]:
        """The shards that own the watched tubes (kept with ``watch_map``)."""
        self.watch_map()
        return self._owners

    def watch(self, tube: str) -> Op[Reply]:
        """``watch``: returns ``WATCHING n``."""
        Watch(tube)
        if tube not in self.watching:
            self.watching.append(tube)
            if self.counted:
                self.cluster.watched(tube, 1)
            yield from self._watch_changed()
        return Watching(len(self.watching))

    def ignore(self, tube: str) -> Op[Reply]:
        """``ignore``: returns ``WATCHING n``, or ``NOT_IGNORED`` for the only watched tube."""
        IgnoreCommand(tube)
        if tube in self.watching:
            if len(self.watching) == 1:
                return Word("NOT_IGNORED")
            # beanstalkd's watch set is an array whose last entry fills a removed one's hole.
            i = self.watching.index(tube)
            last = self.watching.pop()
            if i < len(self.watching):
                self.watching[i] = last
            if self.counted:
                self.cluster.watched(tube, -1)
            yield from self._watch_changed()
        return Watching(len(self.watching))

    def _watch_changed(self) -> Op[None]:
        """Bring the links in line with the watch list now (a watched tube exists on its shards;
        an ignored one may vanish), as one beanstalkd's ``list-tubes`` would show."""
        self._wmap = None
        self.idle_at = None
        wmap = self.watch_map()
        now = self.cluster.clock()
        sends: list[Send] = []
        for shard in self.cluster.shards.values():
            desired = wmap.get(shard.name, ["default"])
            links = [k for k in self.links.get(shard.name, ()) if k.ready]
            if not links and shard.name in wmap and shard.health.available(now):
                links = [self.main(shard)]
            for link in links:
                data, n = link.watch_delta(desired)
                if n:
                    sends.append(Send(link, data, n))
        if sends:
            outcome = yield from self.request(sends)
            for send in sends:
                result = outcome.get(send.link)
                if isinstance(result, list) and not all(isinstance(r, Watching) for r in result):
                    self.drop(send.link)

    def list_tube_used(self) -> Reply:
        return Using(self.using)

    def list_tubes_watched(self) -> Reply:
        return Ok(format_list(self.watching))

    # ---- put ---------------------------------------------------------------------------------

    def put(
        self,
        priority: int,
        delay: int,
        ttr: int,
        body: bytes,
        refused: tuple[str, str] | None = None,
    ) -> Op[Reply]:
        """``put`` into the used tube: the first available shard of its preference takes it; a
        shard that refuses the connection, drains or is out of memory costs nothing (the next one
        is tried). Returns ``INSERTED``/``BURIED`` with the global id, or ``JOB_TOO_BIG``, or the
        word every shard answered (``DRAINING``, ``OUT_OF_MEMORY``). ``refused``: the tube's
        first shard already refused this put (``put_fast``) with that word.

        Raises:
            PutUncertain: the put was sent but its reply was lost (it may be stored).
            ShardUnavailable: no shard could take it.
            JobIdError: the shard stored it under an id with no global id.
        """
        command = _protocol.encode_put(priority, delay, ttr, body)
        tube = self.using
        causes: list[tuple[str, str]] = []
        words: list[str] = []
        clock = self.cluster.clock
        shards = self.cluster.shards
        preference = self.cluster.preference(tube)
        if refused is not None:
            causes.append(refused)
            words.append(refused[1])
        for index in range(0 if refused is None else 1, len(preference)):
            name = preference[index]
            shard = shards[name]
            health = shard.health
            if health.failures >= health.failure_limit and clock() < health.retry_at:
                causes.append((name, "down: " + health.last_error))
                continue
            for _ in range(2):  # a second time on a new link for a link found stale
                link = self.main(shard)
                if link.used == tube:
                    data, count = command, 1
                else:
                    link.used = tube
                    data, count = Use(tube).encode() + command, 2
                link.owed += count
                outcome = yield Round(sends=[Send(link, data, count)], close=self.take_closes())
                result = outcome.get(link)
                self.settle(link, result)
                if not (isinstance(result, Failure) and result.kind is FailureKind.STALE):
                    break
            if result is None or isinstance(result, Failure):
                if result is not None and result.kind is FailureKind.LOST:
                    raise self.put_uncertain(shard, result)
                causes.append((name, str(result)))
                continue
            if count == 2 and not isinstance(result[0], Using):
                self.drop(link)
                raise UnexpectedReply(f"use {tube}: unexpected reply {result[0]!r}")
            reply = self._put_reply(shard, index, result[-1], delay, priority, tube)
            if isinstance(reply, str):
                causes.append((name, reply))
                words.append(reply)
                continue
            return reply
        if words and len(words) == len(causes) and len(set(words)) == 1:
            return ErrorReply(words[0])
        raise ShardUnavailable(f"no shard can take a put to tube {tube!r}", tuple(causes))

    def _put_reply(
        self,
        shard: ShardState,
        index: int,
        reply: Reply,
        delay: int | None = None,
        priority: int | None = None,
        tube: str | None = None,
    ) -> Reply | str:
        """What a shard's reply to a put means: the reply for the client (global ids), or the
        word of a shard that refused the job (DRAINING, OUT_OF_MEMORY: the next one is tried)."""
        if type(reply) is Inserted:
            if index:
                self.cluster.metrics.failovers += 1
            local = reply.id
            if local <= ids.MAX_LOCAL_ID:
                self.cluster.note_put(shard.id_base | local, delay, priority, tube)
                return reply if not shard.id else Inserted(shard.id_base | local)
            raise JobIdError(
                f"put to tube {self.using!r}: the job WAS stored on shard {shard.name} as id"
                f" {local}, which does not fit {ids.LOCAL_BITS} bits: it has no global id"
            )
        if isinstance(reply, BuriedReply):
            return BuriedReply(None if reply.id is None else ids.encode(shard.id, reply.id))
        if isinstance(reply, ErrorReply) and reply.word in ("DRAINING", "OUT_OF_MEMORY"):
            return reply.word
        return reply  # JOB_TOO_BIG, or an error the caller maps

    def put_uncertain(self, shard: ShardState, failure: Failure) -> PutUncertain:
        """The error of a put whose reply was lost."""
        self.cluster.metrics.put_uncertain += 1
        tube = self.using
        return PutUncertain(
            f"put to tube {tube!r} was sent to shard {shard.name} but its reply was lost"
            f" ({failure}): the job may or may not be stored",
            shard=shard.name,
            tube=tube,
        )

    def put_fast(self) -> Link | None:
        """The common put, decided without an operation: the link it goes on when the used
        tube's first shard is up and its main link is ready and uses the tube already. The
        shell sends the put there itself, then calls ``put_fast_done``; None: run ``put``."""
        tube = self.using
        shard = self.cluster.shards[self.cluster.preference(tube)[0]]
        if shard.health.failures:
            return None
        links = self.links.get(shard.name)
        if not links:
            return None
        link = links[0]
        if link.used != tube or not link.ready:
            return None
        return link

    def put_fast_done(self, link: Link, reply: Reply) -> Reply | None:
        """The reply to a put sent on ``put_fast``'s link. None: the shard refused it
        (``refused_by`` says how): run ``put(..., refused=...)`` for the next shards."""
        result = self._put_reply(link.shard, 0, reply, tube=link.used)
        if isinstance(result, str):
            self.refused_by = (link.shard.name, result)
            return None
        return result

    def burn_id(self) -> Op[None]:
        """Use up one job id where puts to the used tube go, as beanstalkd does for a put whose
        body is not followed by CRLF (so a one-shard cluster's ids stay beanstalkd's). Best
        effort: nothing is raised."""
        now = self.cluster.clock()
        for name in self.cluster.preference(self.using):
            shard = self.cluster.shards[name]
            if not shard.health.available(now):
                continue
            link = self.main(shard)
            use, n = link.use_delta(self.using)
            yield from self.request([Send(link, use + b"put 0 0 1 0\r\nXX", n + 1)])
            return

    # ---- jobs by id --------------------------------------------------------------------------

    def _job_link(self, job_id: int, verb: str, reservation: bool) -> tuple[ShardState, int, Link]:
        """Where a command ``verb`` on ``job_id`` goes: the link holding it, else the shard's
        main link."""
        shard, local = self.cluster.shard_of(job_id)
        held = self.held.get(job_id) or self.prefetched.get(job_id)
        if held is not None and not held.link.closed:
            return shard, local, held.link
        if reservation:
            lost = self.lost.pop(job_id, None)
            if lost is not None:
                raise ReservationLost(
                    f"{verb} {job_id}: the connection to shard {lost} that held the job was closed;"
                    " the shard put the job back to ready and will deliver it again",
                    lost,
                )
        if not shard.health.available(self.cluster.clock()):
            raise ShardUnavailable(
                f"shard {shard.name} is down", ((shard.name, shard.health.last_error),)
            )
        return shard, local, self.main(shard)

    def _job_command(self, job_id: int, data_for: bytes, verb: str, reservation: bool) -> Op[Reply]:
        for _ in range(2):  # a second time for a link found stale
            shard, _, link = self._job_link(job_id, verb, reservation)
            holding = link.held > 0 and (job_id in self.held or job_id in self.prefetched)
            outcome = yield from self.request([Send(link, data_for, 1)])
            result = outcome[link]
            if not (isinstance(result, Failure) and result.kind is FailureKind.STALE):
                break
        if isinstance(result, Failure):
            if holding:
                raise ShardUnavailable(
                    f"{verb} {job_id}: the connection to shard {shard.name} that held the job"
                    " failed; the job went back to ready there (unless this command took effect"
                    " first)",
                    ((shard.name, str(result)),),
                )
            raise ShardUnavailable(f"shard {shard.name} failed", ((shard.name, str(result)),))
        return result[0]

    def _unhold(self, job_id: int) -> None:
        self.cluster.put_meta.pop(job_id, None)  # (a release or bury may change its priority)
        held = self.held.pop(job_id, None) or self.prefetched.pop(job_id, None)
        if held is not None:
            held.link.held -= 1
            if held.link.held == 0:
                self.trim(held.link.shard)

    def delete(self, job_id: int) -> Op[Reply]:
        """``delete``: ``DELETED`` or ``NOT_FOUND``."""
        _, local = self.cluster.shard_of(job_id)
        reply = yield from self._job_command(job_id, Delete(local).encode(), "delete", True)
        self._unhold(job_id)
        return reply

    def release(self, job_id: int, priority: int | None, delay: int) -> Op[Reply]:
        """``release`` (``priority`` None: the job's own): ``RELEASED``/``BURIED``/``NOT_FOUND``."""
        _, local = self.cluster.shard_of(job_id)
        if priority is None:
            priority = yield from self._own_priority(job_id)
        data = Release(local, priority, delay).encode()
        shard = self.cluster.shard_of(job_id)[0].name
        self.cluster.readied(shard)
        reply = yield from self._job_command(job_id, data, "release", True)
        self.cluster.readied(shard)
        self._unhold(job_id)
        if isinstance(reply, BuriedReply):
            return BuriedReply()
        return reply

    def bury(self, job_id: int, priority: int | None) -> Op[Reply]:
        """``bury`` (``priority`` None: the job's own): ``BURIED`` or ``NOT_FOUND``."""
        _, local = self.cluster.shard_of(job_id)
        if priority is None:
            priority = yield from self._own_priority(job_id)
        data = Bury(local, priority).encode()
        shard = self.cluster.shard_of(job_id)[0].name
        self.cluster.readied(shard)  # (a job no longer reserved: ``reserve-job`` could take it)
        reply = yield from self._job_command(job_id, data, "bury", True)
        self.cluster.readied(shard)
        self._unhold(job_id)
        if isinstance(reply, BuriedReply):
            return BuriedReply()
        return reply

    def _own_priority(self, job_id: int) -> Op[int]:
        """The priority of a job the session holds (read first when it was handed out without
        it: ``lazy_hold``), else ``DEFAULT_PRIORITY``."""
        held = self.held.get(job_id)
        if held is not None and not held.ttr:
            from .reserve import learn

            yield from learn(self)
            held = self.held.get(job_id)
        return held.priority if held is not None else DEFAULT_PRIORITY

    def touch(self, job_id: int) -> Op[Reply]:
        """``touch``: ``TOUCHED`` or ``NOT_FOUND``."""
        _, local = self.cluster.shard_of(job_id)
        start = self.cluster.clock()
        reply = yield from self._job_command(job_id, Touch(local).encode(), "touch", True)
        self.touched(job_id, start, reply)
        return reply

    def touched(self, job_id: int, start: float, reply: Reply) -> None:
        """``touch job_id``, sent at ``start``, was answered ``reply``: a held job's TTR starts
        again (``TOUCHED``), or the job is no longer held."""
        if isinstance(reply, Word) and reply.word == "TOUCHED":
            held = self.held.get(job_id)
            if held is not None:
                held.since = start
                if held.ttr:
                    self.timed(held, start + held.ttr)
        else:
            self._unhold(job_id)

    def timed(self, held: Held, deadline: float) -> None:
        """Set a held or prefetched job's ``deadline`` (every change goes through here, so
        ``expiry`` stays a lower bound)."""
        held.deadline = deadline
        if deadline < self.expiry:
            self.expiry = deadline

    def stats_job(self, job_id: int) -> Op[Reply]:
        """``stats-job``: ``OK`` with ``id`` the global id, or ``NOT_FOUND``."""
        shard, local = self.cluster.shard_of(job_id)
        reply = yield from self._job_command(job_id, StatsJob(local).encode(), "stats-job", False)
        return global_stats_job(reply, shard, self.cluster, job_id)

    def peek(self, job_id: int) -> Op[Reply]:
        """``peek``: ``FOUND`` with the global id, or ``NOT_FOUND``."""
        shard, local = self.cluster.shard_of(job_id)
        reply = (yield from self.one(shard, Peek(local).encode()))[0]
        if isinstance(reply, Found):
            return Found(ids.encode(shard.id, reply.id), reply.body)
        return reply

    def peek_with_stats(self, job_id: int) -> Op[tuple[Reply, dict[str, StatValue] | None]]:
        """``peek`` and the job's ``stats-job`` in one round (for the library's ``Job``)."""
        shard, local = self.cluster.shard_of(job_id)
        found, stats = yield from self.one(
            shard, Peek(local).encode() + StatsJob(local).encode(), 2
        )
        if not isinstance(found, Found):
            return found, None
        mapping = parse_mapping(stats.body) if isinstance(stats, Ok) else None
        return Found(ids.encode(shard.id, found.id), found.body), mapping

    def kick_job(self, job_id: int) -> Op[Reply]:
        """``kick-job``: ``KICKED`` or ``NOT_FOUND``."""
        shard, local = self.cluster.shard_of(job_id)
        self.cluster.readied(shard.name)
        reply = (yield from self.one(shard, KickJob(local).encode()))[0]
        self.cluster.readied(shard.name)
        return reply

    # ---- the used tube over its shards ------------------------------------------------------

    def _tube_shards(self, tube: str) -> Op[list[ShardState]]:
        """The consumer shards of ``tube``, after a scan when one is due (``core/scan.py``)."""
        if self.cluster.scan_due():
            from .scan import scan

            yield from scan(self)
        return [self.cluster.shards[n] for n in self.cluster.consumer_shards(tube)]

    def peek_state(self, state: str) -> Op[tuple[Reply, dict[str, StatValue] | None]]:
        """``peek-ready``/``peek-delayed``/``peek-buried`` of the used tube over its shards:
        the most urgent ready job, the delayed job due first, the owner's oldest buried job.

        Returns the reply (``FOUND`` with the global id, or ``NOT_FOUND``) and the job's
        ``stats-job`` mapping when it was needed to choose (else None).
        """
        command = {"ready": PeekReady(), "delayed": PeekDelayed(), "buried": PeekBuried()}[state]
        tube = self.using
        shards = yield from self._tube_shards(tube)
        results = yield from self.broadcast(shards, command.encode(), 1, use=tube)
        found: list[tuple[ShardState, Found]] = []
        for shard, replies, _ in results:
            if replies is None:
                continue
            reply = replies[0]
            if isinstance(reply, Found):
                found.append((shard, reply))
            elif not (isinstance(reply, Word) and reply.word == "NOT_FOUND"):
                return reply, None
        if not found:
            return NOT_FOUND, None
        if len(found) == 1:
            shard, reply = found[0]
            return Found(ids.encode(shard.id, reply.id), reply.body), None
        sends = [Send(self.main(shard), StatsJob(r.id).encode(), 1) for shard, r in found]
        outcome = yield from self.request(sends)
        best: tuple[tuple[int, ...], ShardState, Found, dict[str, StatValue]] | None = None
        for order, ((shard, reply), send) in enumerate(zip(found, sends, strict=True)):
            result = outcome.get(send.link)
            if not isinstance(result, list) or not isinstance(result[0], Ok):
                continue
            stats = parse_mapping(result[0].body)
            pri = _int(stats.get("pri"), DEFAULT_PRIORITY)
            age = _int(stats.get("age"), 0)
            left = _int(stats.get("time-left"), 0)
            key = {"ready": (pri, -age, order), "delayed": (left, order)}.get(state, (order,))
            if best is None or key < best[0]:
                best = (key, shard, reply, stats)
        if best is None:
            return NOT_FOUND, None
        _, shard, reply, stats = best
        gid = ids.encode(shard.id, reply.id)
        stats["id"] = gid
        return Found(gid, reply.body), stats

    def kick(self, bound: int) -> Op[Reply]:
        """``kick bound`` in the used tube, over its shards in preference order: ``KICKED n``."""
        Kick(bound)
        tube = self.using
        total = 0
        for shard in (yield from self._tube_shards(tube)):
            if total >= bound:
                break
            self.cluster.readied(shard.name, tube)
            results = yield from self.broadcast([shard], Kick(bound - total).encode(), 1, use=tube)
            self.cluster.readied(shard.name, tube)
            replies = results[0][1]
            if replies is None:
                continue
            reply = replies[0]
            if not isinstance(reply, Kicked) or reply.count is None:
                return reply
            total += reply.count
        return Kicked(total)

    # ---- cluster-wide ------------------------------------------------------------------------

    def _answered(
        self, results: list[tuple[ShardState, list[Reply] | None, str]], what: str
    ) -> list[tuple[ShardState, list[Reply]]]:
        ok = [(shard, replies) for shard, replies, _ in results if replies is not None]
        if not ok:
            raise ShardUnavailable(
                f"{what}: no shard answered", tuple((s.name, why) for s, _, why in results)
            )
        return ok

    def list_tubes(self) -> Op[Reply]:
        """``list-tubes``: every tube on any reachable shard (union, first-seen order)."""
        results = yield from self.broadcast(self.cluster.shards.values(), ListTubes().encode(), 1)
        names: list[str] = []
        seen: set[str] = set()
        for _, replies in self._answered(results, "list-tubes"):
            reply = replies[0]
            if not isinstance(reply, Ok):
                return reply
            for name in parse_list(reply.body):
                if name not in seen:
                    seen.add(name)
                    names.append(name)
        return Ok(format_list(names))

    def stats(self, local: Mapping[str, StatValue] | None = None) -> Op[Reply]:
        """``stats``: the shards' counters merged (see ``merge``). With ``local`` (the proxy's own
        counters: connections, ``cmd-*``, ``pid``, ``uptime``, ``id``…) those replace the shards'
        values, so a client sees one server's view, key for key."""
        data = StatsCommand().encode() + ListTubes().encode()
        results = yield from self.broadcast(self.cluster.shards.values(), data, 2)
        parts: list[dict[str, StatValue]] = []
        tubes: set[str] = set()
        for _, replies in self._answered(results, "stats"):
            if not isinstance(replies[0], Ok):
                return replies[0]
            parts.append(parse_mapping(replies[0].body))
            if isinstance(replies[1], Ok):
                tubes.update(parse_list(replies[1].body))
        merged = merge_stats(parts, len(tubes), len(self.cluster.shards))
        if local is not None:
            del merged["shards"], merged["shards-up"]
            # one server's binlog file indexes: the oldest file any shard keeps, the newest one
            # any shard writes (a one-shard cluster shows its shard's own)
            spans = {"binlog-oldest-index": min, "binlog-current-index": max}
            for key, pick in spans.items():
                values = [v for v in (part.get(key) for part in parts) if isinstance(v, int)]
                if values:
                    merged[key] = pick(values)
            out: dict[str, StatValue] = {}
            for key in parts[0]:  # one server's key order
                if key in local:
                    out[key] = local[key]
                elif key in merged:
                    out[key] = merged[key]
                elif key in _BINLOG_INDEX:  # dropped by the merge; one server shows them
                    values = [_int(part.get(key), 0) for part in parts]
                    out[key] = min(values) if key == "binlog-oldest-index" else max(values)
            merged = out
        return Ok(format_mapping(merged))

    def stats_tube(self, tube: str, local: Mapping[str, StatValue] | None = None) -> Op[Reply]:
        """``stats-tube``: summed over the shards where the tube exists, or ``NOT_FOUND``.

        With ``local`` (the proxy's own ``current-using`` and ``current-watching`` of the tube:
        its clients, not their links to every shard) those replace the shards' sums, and the
        counts every client's wait or every ``pause-tube`` adds on several shards at once are
        not summed: ``current-waiting`` is the smallest among the shards the tube's consumers
        wait on (the clients waiting on each of them), ``cmd-pause-tube`` the largest."""
        results = yield from self.broadcast(
            self.cluster.shards.values(), StatsTube(tube).encode(), 1
        )
        parts = []
        waiting: list[StatValue | None] = []  # current-waiting on the shards consumers wait on
        consumers = self.cluster.consumer_shards(tube)
        for shard, replies in self._answered(results, "stats-tube"):
            if isinstance(replies[0], Ok):
                parts.append(parse_mapping(replies[0].body))
                if shard.name in consumers:
                    waiting.append(parts[-1].get("current-waiting"))
            elif not (isinstance(replies[0], Word) and replies[0].word == "NOT_FOUND"):
                return replies[0]
        if not parts:
            return NOT_FOUND
        if local is not None:
            merged = merge_stats_tube(parts)
            pauses = [part.get("cmd-pause-tube") for part in parts]
            for key, pick, values in (
                ("current-waiting", min, waiting),
                ("cmd-pause-tube", max, pauses),
            ):
                counts = [v for v in values if isinstance(v, int)]
                if key in merged and counts:
                    merged[key] = pick(counts)
            merged.update((k, v) for k, v in local.items() if k in merged)
            return Ok(format_mapping(merged))
        if len(parts) == 1:
            return Ok(format_mapping(parts[0]))
        return Ok(format_mapping(merge_stats_tube(parts)))

    def pause_tube(self, tube: str, delay: int) -> Op[Reply]:
        """``pause-tube`` on every shard where the tube exists: ``PAUSED`` or ``NOT_FOUND``."""
        heads = self.cluster.heads
        if heads is not None:
            heads.changed_everywhere(tube)
        results = yield from self.broadcast(
            self.cluster.shards.values(), PauseTube(tube, delay).encode(), 1
        )
        if heads is not None:
            heads.changed_everywhere(tube)
        paused = False
        for _, replies in self._answered(results, "pause-tube"):
            if isinstance(replies[0], Word) and replies[0].word == "PAUSED":
                paused = True
            elif not (isinstance(replies[0], Word) and replies[0].word == "NOT_FOUND"):
                return replies[0]
        return Word("PAUSED") if paused else NOT_FOUND

    # ---- reserve (see reserve.py) ------------------------------------------------------------

    def reserve(self, timeout: float | None) -> Op[Reply]:
        """``reserve``/``reserve-with-timeout``: see ``beanrouter.core.reserve``."""
        from .reserve import reserve

        return (yield from reserve(self, timeout))

    def reserve_job(self, job_id: int) -> Op[Reply]:
        """``reserve-job``: ``RESERVED`` with the global id, or ``NOT_FOUND``."""
        from .reserve import reserve_job

        return (yield from reserve_job(self, job_id))

    def next_timer(self) -> float | None:
        """When ``maintain`` has work (a prefetched job to give back, lingering waits to cancel),
        on the core clock."""
        if not self.prefetched and not self.lingering:
            return None
        due = [h.keep_until for h in self.prefetched.values()]
        if self.lingering:
            due.append(self.linger_until)
        return min(due) if due else None

    def maintain(self) -> Op[None]:
        """Cancel lingering waits whose time is up, give back prefetched jobs whose time is up,
        and forget held jobs whose TTR ran out."""
        from .reserve import expire, expire_lingering

        yield from expire_lingering(self, self.cluster.clock())
        yield from expire(self, self.cluster.clock())


_BINLOG_INDEX = frozenset({"binlog-oldest-index", "binlog-current-index"})
"""``stats`` keys a one-server view (``local``) takes from the shards: the smallest oldest index,
the largest current one (0 without binlogs, as beanstalkd shows)."""


def _int(value: StatValue | None, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def global_stats_job(reply: Reply, shard: ShardState, cluster: Cluster, job_id: int) -> Reply:
    """The ``stats-job`` reply for global id ``job_id``: its ``id`` rewritten to the global id
    (untouched for shard 0), and without the reserves, releases and timeouts no client saw
    (``Cluster.unseen``). Parsed only when one of the two changes it."""
    if not isinstance(reply, Ok):
        return reply
    mine = cluster.unseen.get(job_id)
    if shard.id == 0 and mine is None:
        return reply
    stats = parse_mapping(reply.body)
    if not isinstance(stats.get("id"), int):
        return reply
    stats["id"] = job_id
    if mine is not None:
        shown = _count(stats.get("reserves"))
        for key, count in zip(_UNSEEN_KEYS, mine, strict=True):
            value = stats.get(key)
            if count and isinstance(value, int) and not isinstance(value, bool):
                stats[key] = max(0, value - count)
        # Every release, bury and timeout followed a reserve, and a reserved job was reserved:
        # never fewer than that (a shard restarted from its binlog counts from what it logged,
        # and a binlog does not log reserves, so unseen ones may be gone from its count), and
        # never more than the shard shows.
        floor = sum(_count(stats.get(k)) for k in ("releases", "timeouts", "buries"))
        floor += stats.get("state") == "reserved"
        if "reserves" in stats and _count(stats["reserves"]) < floor:
            stats["reserves"] = min(floor, shown)
    return Ok(format_mapping(stats))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


_UNSEEN_KEYS = ("reserves", "releases", "timeouts")
"""The ``stats-job`` counters ``Cluster.unseen`` holds, in its order."""
