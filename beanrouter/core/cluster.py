"""Shared cluster state: the configuration, the placement ring, the shards' health, the metrics.

One ``Cluster`` serves every session of a process (a ``Router``, an ``AsyncRouter``, or all the
proxy's clients): shard health learnt by one session protects the others. Pure: the clock and the
random source are injected.

Invariant: shards are keyed by their stable name, and ``by_id`` by their stable numeric id, so a
global job id always names the same shard (see ``beanrouter.core.ids``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import ids
from .config import ClusterConfig, ShardConfig
from .errors import JobIdError
from .heads import Heads
from .health import Health
from .ring import Placement

__all__ = ["MAX_PUT_ORDER", "BoundedUnseen", "Cluster", "Metrics", "ShardState", "UnseenLedger"]

MAX_PUT_ORDER = 1_000_000
"""Put orders remembered (see ``Cluster.put_order``)."""
MAX_PUT_ACKED = 16_384
"""Recent puts whose acknowledgement time is remembered (see ``Cluster.put_acked``)."""
MAX_PUT_META = 65_536
"""Recent puts whose priority and time are remembered (see ``Cluster.put_meta``)."""
MAX_UNSEEN = 65_536
"""Jobs whose unseen reserves are remembered (see ``Cluster.unseen``)."""


class UnseenLedger(Protocol):
    """Where ``Cluster.unseen`` keeps its counts: a ``BoundedUnseen`` of the process's own, or
    one that several processes share (``beanrouter.proxy.unseen``, for ``proxy --workers``)."""

    def get(self, job_id: int, /) -> tuple[int, int, int] | None:
        """The ``(reserves, releases, timeouts)`` recorded for ``job_id``, if any."""
        ...

    def add(self, job_id: int, reserves: int, releases: int, timeouts: int, /) -> None:
        """Add to ``job_id``'s counts (it becomes the most recent)."""
        ...


class BoundedUnseen(dict[int, tuple[int, int, int]]):
    """The process's own ledger: a dict of the ``limit`` most recently changed jobs."""

    def __init__(self, limit: int = MAX_UNSEEN) -> None:
        super().__init__()
        self.limit = limit

    def add(self, job_id: int, reserves: int, releases: int, timeouts: int, /) -> None:
        r, rel, t = self.pop(job_id, (0, 0, 0))
        self[job_id] = (r + reserves, rel + releases, t + timeouts)
        if len(self) > self.limit:
            del self[next(iter(self))]


class ShardState:
    """One shard as every session sees it: configuration and health."""

    __slots__ = ("config", "health", "id", "id_base", "name")

    def __init__(self, config: ShardConfig, health: Health) -> None:
        self.config = config
        self.name = config.name
        self.id = config.id
        self.id_base = ids.encode(config.id, 0)
        self.health = health

    def __repr__(self) -> str:
        return f"ShardState({self.name!r}, id={self.id})"


@dataclass(slots=True)
class Metrics:
    """Counters of the routing decisions (the proxy exports them; tests and benchmarks read them).

    ``give_backs`` is the phantom-reserve count: jobs reserved on a client's behalf and released
    (or dropped with their link) without ever being handed out. It stays 0 except in the blocking
    wait's race, where a second shard delivers before its wait could be cancelled.
    """

    deliveries: int = 0
    """Jobs handed out by reserve."""
    give_backs: int = 0
    """Jobs reserved on a client's behalf and given back without being handed out."""
    raced: int = 0
    """Jobs that arrived from a second shard in the blocking wait's race (kept as prefetch)."""
    prefetch_hits: int = 0
    """Raced jobs handed out by the session's next reserve."""
    wait_cancels: int = 0
    """Blocking waits cancelled by closing their link (nothing had arrived on it)."""
    unseen_reserves: int = 0
    """Reserves of jobs no client was handed (a wait's reserve that raced its cancellation, a
    give-back): kept off the jobs' ``stats-job`` (``Cluster.unseen``)."""
    strays_found: int = 0
    """Jobs a sentinel caught on a shard away from their tube's owner (``core/sentinel.py``)."""
    scans: int = 0
    """Scans for jobs away from their consumer shards (``core/scan.py``)."""
    sweep_retries: int = 0
    """Reserves on the chosen shard that found the job taken by someone else (then retried)."""
    looks: int = 0
    """Shards asked for their heads by a cross-shard choice (``stats-tube``, ``peek-ready``)."""
    looks_spared: int = 0
    """Shards a cross-shard choice did not ask: their heads were known (``core/heads.py``)."""
    failovers: int = 0
    """Puts that went to a shard other than the tube's owner."""
    put_uncertain: int = 0
    link_failures: dict[str, int] = field(default_factory=dict)
    """Link failures by shard name."""
    wakeups: int = 0
    """Blocked reserves woken by a job this process put while they waited (see
    ``reserve.observe_wakeup``)."""
    wakeup_seconds: float = 0.0
    """Their summed wake-up latency: from the put's acknowledgement (plus its delay) to the
    job's hand-out."""
    on_wakeup: Callable[[float], None] | None = field(default=None, compare=False)
    """Called with each wake-up latency (the proxy feeds its histogram)."""
    on_shard_wakeup: Callable[[str, float], None] | None = field(default=None, compare=False)
    """Called with the name of the shard that delivered the job and each wake-up latency (the
    proxy's per-shard histogram, which its console charts)."""


class Cluster:
    """The shared state of one cluster.

    Args:
        config: the cluster.
        clock: monotonic clock in seconds.
        rng: random source in [0, 1) (probe jitter).
        failover: overrides ``config.failover``.
    """

    def __init__(
        self,
        config: ClusterConfig,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        failover: int | None = None,
        unseen: UnseenLedger | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.metrics = Metrics()
        self.probing = False
        """Set by a shell that tries the shards marked down in the background every
        ``server_retry_timeout`` seconds (``down_shards``, ``probed``): waits then look at them
        again at least that often, not only when their backoff ends."""
        self.shards: dict[str, ShardState] = {}
        self.by_id: dict[int, ShardState] = {}
        self.config = config
        self._failover = failover
        self.placement = Placement.from_config(config, failover)
        for sc in config.servers:
            shard = ShardState(sc, self._health())
            self.shards[sc.name] = shard
            self.by_id[sc.id] = shard
        self.put_order: dict[int, int] = {}
        """Global id → the order in which this process stored it (bounded, oldest forgotten):
        jobs of equal priority on different shards are reserved in put order, as one beanstalkd
        does by id (their ``age`` counts whole seconds only)."""
        self.put_acked: dict[int, float] = {}
        """Global id -> when the job this process put became ready: the put's acknowledgement
        plus its delay (the ``MAX_PUT_ACKED`` most recent; taken by the job's first delivery): a
        blocked reserve's wake-up latency is measured from there."""
        self.put_meta: dict[int, tuple[int, float]] = {}
        """Global id -> ``(priority, when it was put)`` of the ``MAX_PUT_META`` most recent
        puts of this process, while no client of it released or buried the job (which may
        change its priority): the cross-shard choice ranks such a job without reading its
        ``stats-job`` (``reserve._choose``)."""
        self.early: dict[int, str] = {}
        """Global id -> shard: jobs a blocked reserve handed out before this process had read
        their put's acknowledgement (the shard answered the reserve first): the wake-up is
        counted, with latency 0, when the acknowledgement is read (``note_put``). The
        ``MAX_PUT_ACKED`` most recent."""
        self.unseen: UnseenLedger = BoundedUnseen() if unseen is None else unseen
        """Global id → the ``(reserves, releases, timeouts)`` the shard counted for this
        process's own handling of the job, unseen by any client: a blocking wait's reserve that
        raced its cancellation, a prefetched job given back or dropped with its link. They are
        taken off the counters of the job's ``stats-job`` (``session.global_stats_job``), so a
        client reads what one beanstalkd would show (Laravel counts attempts with
        ``reserves``). Bounded: the ``MAX_UNSEEN`` most recent. ``proxy --workers`` shares one
        ledger between its workers (the ``unseen`` argument), since a job may be reserved
        unseen through one worker and then delivered through another."""
        self._put_seq = 0
        self.put_at: dict[tuple[str, str], float] = {}
        """(shard, tube) -> when this process last read the acknowledgement of a put stored
        there (a reserve at its deadline reads a lingering wait on that tube a moment longer)."""
        self.heads: Heads | None = None
        """The heads of the shards' tubes this process knows (``core/heads.py``): set by a shell
        whose sessions carry all the clients' traffic (the proxy), None in the library."""
        self.generation = 0
        """Raised when a tube's consumer shards may have changed (``reconfigure``, a scan that
        found jobs away or saw them gone, ``note_scan``): sessions rebuild their cached maps."""
        self._old_placements: list[Placement] = []
        # ---- jobs away from their consumer shards (``Session.scan``) -------------------------
        self.found: dict[str, dict[str, int]] = {}
        """Shard -> ``{tube: jobs}`` for tubes with jobs on a shard that is not one of their
        consumer shards by placement (``placed``): left there under an earlier configuration,
        by a process that had an older one, or before a restart that forgot a reload. As
        found by the last scan of that shard; such a shard is a consumer shard of the tube
        (``consumer_shards``) until a scan sees no job of the tube there. Nothing is stranded
        whatever the history of the processes: the shards themselves are asked."""
        self._found_by_tube: dict[str, tuple[str, ...]] = {}
        self.scanner = False
        """Set by a shell that scans in the background (the proxy): sessions then never scan
        inline, except before the first scan has ended (``scan_due``)."""
        self.scanned = False
        """A scan has ended (whatever the shards answered)."""
        self.scanning = False
        self.scan_next = 0.0
        """When the next scan is due (core clock)."""
        self.on_scan_due: Callable[[], None] | None = None
        """Shell hook: a scan is due now (a shard came back up, a reconfiguration)."""
        # ---- away coverage (``sentinel``): see the module ``core/sentinel.py`` ---------------
        self.sentinels = False
        """Set by a shell that runs a sentinel per shard (``sentinel.sentinel``): sessions then
        leave out of their watch maps the *covered* shards of each tube (``covered``)."""
        self.watchers: dict[str, int] = {}
        """Tube -> sessions of this process that watch it (kept by ``Session``)."""
        self.covered: dict[str, frozenset[str]] = {}
        """Shard -> the tubes its sentinel's armed reserve watches there: tubes for which the
        shard is away from home (not the owner) and where any job that is or becomes ready
        is caught by the sentinel (and given back, the pair then a stray)."""
        self.strays: set[tuple[str, str]] = set()
        """``(shard, tube)`` pairs where a sentinel caught a job away from its tube's owner:
        not covered again until a reserve sees no ready job of the tube there
        (``saw_empty``)."""
        self.coverage_gen = 0
        """Raised each time ``covered`` shrinks or grows, or a shard is marked down or up
        (shard health goes through ``note_failure``/``note_success`` only): sessions rebuild
        their watch maps."""
        self.on_wanted: Callable[[str], None] | None = None
        """Shell hook: what the sentinel of this shard should cover may have changed."""
        self.on_uncovered: Callable[[str, str], None] | None = None
        """Shell hook: ``(shard, tube)`` is no longer covered: sessions waiting on the tube
        without that shard look again (``reserve``)."""

    # ---- away coverage ----------------------------------------------------------------------

    def owner(self, tube: str) -> str:
        """The shard that owns ``tube`` (puts go there while it is up)."""
        return self.placement.preference(tube)[0]

    def away(self, tube: str) -> tuple[str, ...]:
        """The consumer shards of ``tube`` other than its owner (failover successors, earlier
        owners): where its jobs are only after a failover or a reconfiguration."""
        return self.consumer_shards(tube)[1:]

    def watched(self, tube: str, delta: int) -> None:
        """A session of this process started (+1) or stopped (-1) watching ``tube``."""
        count = self.watchers.get(tube, 0) + delta
        if count > 0:
            self.watchers[tube] = count
        else:
            self.watchers.pop(tube, None)
        if self.sentinels and (count == 0 or count == delta):
            self._wanted_changed(self.away(tube))

    def wanted(self, shard: str) -> frozenset[str]:
        """The tubes the sentinel of ``shard`` is to cover now: watched by a session of this
        process, ``shard`` away from their owner, and no stray found there."""
        if not self.sentinels:
            return frozenset()
        return frozenset(
            tube
            for tube in self.watchers
            if shard in self.away(tube)
            and (shard, tube) not in self.strays
            and not self.shards[self.owner(tube)].health.down  # (sessions look there then)
        )

    def cover(self, shard: str, tubes: frozenset[str]) -> None:
        """The sentinel of ``shard`` has its reserve armed on ``tubes`` (and nothing else)."""
        old = self.covered.get(shard, frozenset())
        if tubes == old:
            return
        self.covered[shard] = tubes
        self.coverage_gen += 1
        lost = old - tubes
        if lost and self.on_uncovered is not None:
            for tube in lost:
                self.on_uncovered(shard, tube)

    def stray(self, shard: str, tube: str) -> None:
        """The sentinel of ``shard`` caught a job of ``tube`` there (and gave it back): the
        pair is no longer covered, until a reserve sees no ready job of it (``saw_empty``)."""
        self.strays.add((shard, tube))
        covered = self.covered.get(shard, frozenset())
        self.cover(shard, covered - {tube})

    def saw_empty(self, shard: str, tube: str) -> None:
        """A reserve saw no ready job of ``tube`` on ``shard``: a stray pair may be covered
        again."""
        if (shard, tube) in self.strays:
            self.strays.discard((shard, tube))
            self._wanted_changed((shard,))

    def uncovered(self, shard: str, tube: str) -> bool:
        """Whether sessions watching ``tube`` must look at ``shard`` themselves: always for
        its owner, and for an away shard unless its sentinel covers the tube there while the
        owner is not marked down."""
        covered = self.covered.get(shard)
        if covered is None or tube not in covered:
            return True
        owner = self.shards.get(self.owner(tube))
        return owner is None or owner.health.down

    def _health_changed(self) -> None:
        """A shard was marked down or up: sessions rebuild their watch maps (a covered tube
        whose owner is down is looked at on its successor, where its puts go), and the
        sentinels let go of, or cover again, such tubes."""
        self.coverage_gen += 1
        if self.sentinels:
            self._wanted_changed(tuple(self.shards))

    def _wanted_changed(self, shards: tuple[str, ...]) -> None:
        if self.on_wanted is not None:
            for name in shards:
                self.on_wanted(name)

    def _health(self) -> Health:
        c = self.config
        return Health(
            failure_limit=c.server_failure_limit,
            retry=c.server_retry_timeout,
            retry_max=c.server_retry_timeout_max,
            jitter=c.server_retry_jitter,
            clock=self.clock,
            rng=self.rng,
        )

    def reconfigure(self, config: ClusterConfig) -> None:
        """Switch to a new configuration (a proxy's SIGHUP).

        Shards that stay keep their health; new ones start up; removed ones are kept for job
        commands by id and for draining until no tube names them (they take no new puts). Tubes
        whose preference changes keep their previous shards in their consumers' watch (see
        ``preference_for_consumers``), so nothing is stranded.
        """
        self._old_placements.append(self.placement)
        del self._old_placements[:-4]
        self.config = config
        self.placement = Placement.from_config(config, self._failover)
        for sc in config.servers:
            old = self.shards.get(sc.name)
            if old is not None and old.config == sc:
                continue
            shard = ShardState(sc, old.health if old is not None else self._health())
            self.shards[sc.name] = shard
            self.by_id[sc.id] = shard
        if self.heads is not None:
            self.heads = Heads(self.clock)  # (shards renamed, readdressed: start over)
        self.generation += 1
        self._scan_soon()

    def owner_before_reload(self, tube: str) -> str | None:
        """``tube``'s owner under the configuration the last reload replaced, when that reload
        moved it (None: no reload, or the same owner)."""
        if not self._old_placements:
            return None
        before = self._old_placements[-1].owner(tube)
        return None if before == self.owner(tube) else before

    def preference(self, tube: str) -> tuple[str, ...]:
        """Where puts to ``tube`` go: its owner, then its failover successors."""
        return self.placement.preference(tube)

    def put_target(self, tube: str) -> ShardState | None:
        """The shard puts to ``tube`` go to now: the first available of its preference (None:
        every one is marked down)."""
        now = self.clock()
        for name in self.placement.preference(tube):
            shard = self.shards[name]
            if shard.health.available(now):
                return shard
        return None

    def down_causes(self, tube: str) -> tuple[tuple[str, str], ...]:
        """``(shard, reason)`` for each shard of ``tube``'s preference (when none is up)."""
        return tuple(
            (n, "down: " + (self.shards[n].health.last_error or "failed"))
            for n in self.placement.preference(tube)
        )

    def consumer_shards(self, tube: str) -> tuple[str, ...]:
        """Where consumers of ``tube`` look: its placed shards (``placed``), then the shards a
        scan found its jobs on (``found``): nothing is stranded."""
        placed = self.placed(tube)
        extra = self._found_by_tube.get(tube)
        if extra is None:
            return placed
        return placed + tuple(n for n in extra if n not in placed)

    def placed(self, tube: str) -> tuple[str, ...]:
        """``tube``'s consumer shards by placement: its preference, the shards a draining shard
        took it from (``Placement.consumers``), and the same under the earlier configurations
        this process knows (a reload that moved the tube strands nothing)."""
        pref = self.placement.consumers(tube)
        if not self._old_placements:
            return pref
        names = list(pref)
        for old in self._old_placements:
            for name in old.consumers(tube):
                if name not in names and name in self.shards:
                    names.append(name)
        return tuple(names)

    # ---- jobs away from their consumer shards -------------------------------------------------

    def scan_due(self) -> bool:
        """Whether a session should scan before it looks for a tube's jobs: before the first
        scan has ended, and then when one is due, unless a shell scans in the background."""
        if not self.scanned:
            return True
        return not self.scanner and not self.scanning and self.scan_next <= self.clock()

    def scan_candidates(self, shard: str, tubes: list[str]) -> list[str]:
        """Of the tubes ``shard`` lists, those whose jobs there a scan must count: the shard is
        not one of their placed shards."""
        return [t for t in tubes if shard not in self.placed(t)]

    def note_scan(self, shard: str, jobs: dict[str, int]) -> None:
        """A scan counted ``jobs`` (tube -> jobs in any state) on ``shard`` for every tube of
        it that is not placed there. Tubes newly found make the shard one of their consumer
        shards: sessions waiting on them look again (``on_uncovered``), and the shard's
        sentinel covers them; tubes no longer found there are dropped."""
        old = self.found.get(shard, {})
        new = {tube: n for tube, n in jobs.items() if n > 0}
        if new:
            self.found[shard] = new
        else:
            self.found.pop(shard, None)
        if new.keys() == old.keys():
            return
        by_tube: dict[str, list[str]] = {}
        for name in self.shards:  # (configuration order)
            for tube in self.found.get(name, ()):
                by_tube.setdefault(tube, []).append(name)
        self._found_by_tube = {tube: tuple(names) for tube, names in by_tube.items()}
        self.generation += 1
        self.coverage_gen += 1
        self._wanted_changed((shard,))
        if self.on_uncovered is not None:
            for tube in new.keys() - old.keys():
                self.on_uncovered(shard, tube)

    def scan_ended(self) -> None:
        """A scan ended: the next is due ``stray_scan_interval`` seconds from now."""
        self.scanned = True
        self.scanning = False
        self.scan_next = self.clock() + self.config.stray_scan_interval

    def _scan_soon(self) -> None:
        """A scan is due now (a shard came back up, a reconfiguration)."""
        self.scan_next = min(self.scan_next, self.clock())
        if self.on_scan_due is not None:
            self.on_scan_due()

    def route(self, tube: str) -> dict[str, object]:
        """Where ``tube`` goes, JSON-serialisable: its ``owner`` and ``preference``, the shard
        its puts go to now (``puts_go_to``, None when every shard of its preference is down),
        the shards its consumers watch, the owner before the last reload when that moved it,
        the jobs a scan found away (``jobs_away``) and, per shard of its preference, its id,
        address and health. The proxy's ``/route`` and the console's placement
        (``beanrouter status --config`` included) are this."""
        now = self.clock()
        pref = self.preference(tube)
        target = self.put_target(tube)
        return {
            "tube": tube,
            "owner": pref[0],
            "preference": list(pref),
            "puts_go_to": None if target is None else target.name,
            "consumers_watch": list(self.consumer_shards(tube)),
            "moved_by_reload": self.owner_before_reload(tube),
            "jobs_away": {name: jobs[tube] for name, jobs in self.found.items() if tube in jobs},
            "shards": {
                n: {
                    "id": self.shards[n].id,
                    "address": self.shards[n].config.address,
                    "up": self.shards[n].health.available(now),
                }
                for n in pref
            },
        }

    def shard_of(self, job_id: int) -> tuple[ShardState, int]:
        """The shard and local id of a global job id.

        Raises:
            JobIdError: the id names no shard of this cluster.
        """
        shard_id, local = ids.decode(job_id)
        shard = self.by_id.get(shard_id)
        if shard is None:
            raise JobIdError(f"job id {job_id} names shard id {shard_id}, not in this cluster")
        return shard, local

    def note_put(
        self,
        job_id: int,
        delay: int | None = None,
        priority: int | None = None,
        tube: str | None = None,
    ) -> None:
        """A put this process stored as ``job_id`` (see ``put_order``) in ``tube``, with
        ``delay`` seconds (None: not known here; its ready time is then not kept, see
        ``put_acked``) and ``priority`` (None: not known here; see ``put_meta``)."""
        self._put_seq += 1
        order = self.put_order
        order[job_id] = self._put_seq
        if len(order) > MAX_PUT_ORDER:
            del order[next(iter(order))]
        shard_id, local = ids.decode(job_id)
        where = self.by_id.get(shard_id)
        if where is not None and tube is not None:
            put_at = self.put_at
            put_at[where.name, tube] = self.clock()
            if len(put_at) > MAX_PUT_ACKED:
                del put_at[next(iter(put_at))]
        heads = self.heads
        if heads is not None and where is not None:
            if tube is None or priority is None or delay is None:
                heads.changed(where.name, tube)
            else:
                heads.put(where.name, tube, local, priority, delay, self._put_seq)
        if priority is not None:
            meta = self.put_meta
            meta[job_id] = (priority, self.clock())
            if len(meta) > MAX_PUT_META:
                del meta[next(iter(meta))]
        if delay is not None:
            shard = self.early.pop(job_id, None) if self.early and not delay else None
            if shard is not None:  # handed out to a waiting reserve already
                self.observe_wakeup(shard, 0.0)
                return
            acked = self.put_acked
            acked[job_id] = self.clock() + delay
            if len(acked) > MAX_PUT_ACKED:
                del acked[next(iter(acked))]

    def readied(self, shard: str, tube: str | None = None) -> None:
        """Something this process sends or was answered may make a job ready on ``shard`` (in
        ``tube``; None: any) or change a pause: the heads recorded there are forgotten
        (``core/heads.py``). Called when it is sent and again when it is answered."""
        if self.heads is not None:
            self.heads.changed(shard, tube)

    def observe_wakeup(self, shard: str, latency: float) -> None:
        """A blocked reserve was handed a job that became ready while it waited, ``latency``
        seconds after the put's acknowledgement (plus its delay), from ``shard``."""
        m = self.metrics
        m.wakeups += 1
        m.wakeup_seconds += latency
        if m.on_wakeup is not None:
            m.on_wakeup(latency)
        if m.on_shard_wakeup is not None:
            m.on_shard_wakeup(shard, latency)

    def delivered_early(self, job_id: int, shard: str) -> None:
        """A blocked reserve was handed ``job_id`` while its put, if this process made it, was
        not acknowledged yet (see ``early``)."""
        early = self.early
        early[job_id] = shard
        if len(early) > MAX_PUT_ACKED:
            del early[next(iter(early))]

    def note_unseen(
        self, job_id: int, reserves: int = 1, releases: int = 0, timeouts: int = 0
    ) -> None:
        """The shard counted ``reserves``/``releases``/``timeouts`` for ``job_id`` that no
        client saw (see ``unseen``)."""
        self.unseen.add(job_id, reserves, releases, timeouts)
        self.metrics.unseen_reserves += reserves

    def down_shards(self) -> list[ShardState]:
        """The configured shards marked down (for a background prober: ``probing``)."""
        return [
            self.shards[sc.name] for sc in self.config.servers if self.shards[sc.name].health.down
        ]

    def probed(self, shard: ShardState) -> None:
        """A background probe found ``shard`` answering: it is up again for every session at
        once (a restarted shard's jobs are seen without waiting out its backoff)."""
        self.note_success(shard)

    def note_success(self, shard: ShardState) -> None:
        """``shard`` answered: it is up (again); a scan looks at it soon."""
        down = shard.health.down
        shard.health.success()
        if down:
            self._health_changed()
            self._scan_soon()

    def note_failure(self, shard: ShardState, reason: str) -> None:
        down = shard.health.down
        shard.health.failure(reason)
        if shard.health.down and not down:
            self._health_changed()
        counts = self.metrics.link_failures
        counts[shard.name] = counts.get(shard.name, 0) + 1
