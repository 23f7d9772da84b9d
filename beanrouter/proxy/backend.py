"""The proxy's backend: the seam's ``Backend`` and ``ClientSession`` over the routing core.

One ``CoreBackend`` per proxy process holds the shared ``Cluster`` (placement, health, metrics);
each client connection gets a ``CoreSession``: a core ``Session`` (``cancellable=False``: a
client cancels a reserve only by leaving) run by an ``AsyncDriver``. ``execute`` maps each parsed
command to the session operation and encodes the reply; it makes no routing decision itself.

Cluster trouble maps to beanstalkd words by the core's ``answer`` (``core/answer.py``,
docs/compatibility.md); this module only logs it.

``stats-tube``: the shards count the proxy's links, not its clients, so ``current-using``,
``current-watching`` and ``current-waiting`` are the proxy's own (its client sessions that use or
watch the tube, or wait in a reserve watching it), as one beanstalkd counts its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from .. import protocol as p
from ..core import Cluster, Link, Op, Session
from ..core.answer import answer
from ..core.batch import Batch, Result, command_op, extend, extendable, plan
from ..core.cluster import ShardState, UnseenLedger
from ..core.errors import RouterError
from ..core.heads import Heads
from ..core.reserve import stream_link
from ..core.scan import scan
from ..core.sentinel import sentinel
from ..router.aio_driver import AsyncDriver, Posted
from .driver import LinkPool, ProxyDriver, answers
from .unseen import UNSEEN_ENV, ledger_from_env

if TYPE_CHECKING:
    from ..core.config import ClusterConfig
    from ..protocol import StatValue
    from .metrics import Registry
    from .stats import ProxyStats

__all__ = ["RUN_REPLY_BUDGET", "STREAM_RESERVES", "CoreBackend", "CoreSession", "make_backend"]

log = logging.getLogger("beanrouter.proxy")

RUN_REPLY_BUDGET: Final = 1024 * 1024
"""Bytes of job bodies one run's reserves may bring back at most (each as big as ``-z``): what
a client that does not read its replies can make the proxy hold beyond its output high-water
mark."""
STREAM_RESERVES: Final = 256
"""Reserves a streamed run has unanswered at most: its shard link is not read while the client's
output is above its high-water mark (``pause_replies``), so what they bring back waits in the
kernel's socket buffers (and the shard), not in the proxy."""
_INTERNAL_ERROR = p.INTERNAL_ERROR.encode()
_TIMED_OUT = p.TIMED_OUT.encode()
_NO_WAIT: Final = p.ReserveWithTimeout(0)


class CoreSession:
    """One client connection of the proxy."""

    def __init__(self, backend: CoreBackend, counters: ProxyStats) -> None:
        self.backend = backend
        self.counters = counters
        # No lingering waits (``linger=0``): one left armed after a reserve was answered would
        # catch a job put meanwhile for a client that is not reserving; one beanstalkd gives it
        # to whoever reserves (the other waits of a reserve are cancelled at once instead).
        self.session = Session(backend.cluster, cancellable=False, linger=0.0)
        self.session.posting = True  # ``use`` answered once written (``Send.posted``)
        config = backend.cluster.config
        self.driver = ProxyDriver(
            self.session,
            config.connect_timeout,
            config.timeout,
            backend.cluster.clock,
            pool=backend.pool,
            posted=backend.posted,
        )
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._closed = False
        self._max_reserves = max(1, RUN_REPLY_BUDGET // max(1, counters.max_job_size))
        """Reserves in one run: their job bodies fit ``RUN_REPLY_BUDGET`` (16 at -z 65535)."""
        self._busy = False
        """A batch ``start_batch`` began is running."""
        self._streamed: tuple[Batch, list[p.Command]] | None = None
        """While a streamed run ``start_batch`` began is out: it, and the commands it takes (the
        ones ``extend_batch`` adds included)."""
        self._paused: Link | None = None
        """The streamed run's link, while it is not read (``pause_replies``)."""
        self.backend = backend
        backend.sessions.add(self)

    def _op(self, cmd: p.Command) -> Op[p.Reply] | p.Reply:
        s = self.session
        if type(cmd) is p.Put and self.counters.draining:
            return p.DRAINING
        if type(cmd) is p.StatsTube:
            assert isinstance(cmd, p.StatsTube)
            return s.stats_tube(cmd.tube, self.backend.tube_clients(cmd.tube))
        if type(cmd) is p.Stats:
            return s.stats(self.counters.fields())
        op = command_op(s, cmd)
        return p.UNKNOWN_COMMAND if op is None else op

    async def execute(self, command: p.Command) -> bytes:
        """The reply bytes for one client command (see ``seam.ClientSession``)."""
        async with self._lock:
            try:
                await self._maybe_maintain()
                return await self._execute(command)
            finally:
                self._arm_timer()

    async def execute_batch(
        self, commands: Sequence[p.Command], counted: Callable[[p.Command], None]
    ) -> list[bytes]:
        """The replies of a leading run of ``commands`` (see ``seam.ClientSession``): the core
        decides how many go out together (``core.batch.plan``)."""
        async with self._lock:
            try:
                if self.session.prefetched or self.session.lingering:
                    await self._maybe_maintain()
                commands, last = _probing(commands)
                batch = self._plan(commands, last, counted)
                if batch is None:
                    first = commands[0]
                    counted(first if first is not _NO_WAIT else last)
                    return [await self._execute(first)]
                try:
                    results = await self.driver.run(batch.op)
                except Exception as exc:
                    return _batch_failed(batch.size, exc)
                return _encode_all(results, commands)
            finally:
                self._arm_timer()

    def start_batch(
        self,
        commands: Sequence[p.Command],
        counted: Callable[[p.Command], None],
        answer: Callable[[bytes | None], None],
        done: Callable[[bool], None],
        idle: Callable[[], None] | None = None,
    ) -> bool:
        """``execute_batch`` without a task (``ProxyDriver.start``), when nothing stands in the
        way: no other call running, no maintenance due, and the core plans a run for the first
        command (see ``seam.ClientSession.start_batch``). When the session's watched tubes all
        live on one shard whose link is connected, the client's blocking reserves join the run
        as they are (``plan(stream=...)``): the shard waits, in the client's order, and each
        reply is answered as soon as it is in."""
        if self._busy or self._lock.locked() or self._closed or self._maintenance_due():
            return False
        streaming = any(map(p.may_wait, commands)) and self._streaming()
        if streaming:
            commands = list(commands)  # (``extend_batch`` adds to it)
            last = commands[-1]
        else:
            commands, last = _probing(commands)
        taken = 0

        def sink(result: Result) -> None:
            nonlocal taken
            cmd = commands[taken]
            taken += 1
            reply = _encode(result, cmd)
            if cmd is _NO_WAIT and reply == _TIMED_OUT:
                answer(None)  # the first look of a blocking reserve: the wait is the frame's
            else:
                answer(reply)

        batch = self._plan(commands, last, counted, sink if streaming else None)
        if batch is None:
            return False
        self._busy = True
        if streaming:
            assert isinstance(commands, list)
            del commands[batch.size :]  # (what the run does not take is the frame's)
            self._streamed = (batch, commands)
        size = batch.size

        def finished(results: list[Result] | None, error: BaseException | None) -> None:
            nonlocal taken, size
            self._busy = False
            if self._streamed is not None:
                size = len(self._streamed[1])
                self._streamed = None
                self.resume_replies()
            if isinstance(error, asyncio.CancelledError):
                done(True)
                return
            if error is not None or results is None:
                for reply in _batch_failed(size - taken, error):
                    taken += 1
                    answer(reply)
            else:
                for result in results[taken:]:
                    sink(result)
            self._arm_timer()
            done(False)

        self.driver.start(batch.op, finished, idle)
        return True

    def extend_batch(
        self, commands: Sequence[p.Command], counted: Callable[[p.Command], None]
    ) -> int:
        """More commands for the streamed run ``start_batch`` began, while it is out (see
        ``seam.ClientSession.extend_batch``): as many of the leading ``commands`` as the core
        lets join it (``core.batch.extend``), sent on its link at once."""
        streamed = self._streamed
        if streamed is None or self._closed or self.counters.draining:
            return 0
        batch, taken = streamed
        link = extendable(batch)
        if link is None or not self.driver.can_extend(link) or self._maintenance_due():
            return 0
        count, data = extend(self.session, batch, commands)
        for cmd in commands[:count]:
            counted(cmd)
            taken.append(cmd)
        if data:
            self.driver.extend(link, data)
        return count

    def pause_replies(self) -> None:
        """The client's output is above its high-water mark: while a streamed run is out, its
        shard link is not read (see ``STREAM_RESERVES``; a request round, whose replies have a
        deadline, is never paused)."""
        streamed = self._streamed
        if streamed is None or self._paused is not None:
            return
        link = extendable(streamed[0])
        if link is not None and self.driver.pause_reading(link):
            self._paused = link

    def resume_replies(self) -> None:
        """The client reads again (or the run ended): its link is read again."""
        link, self._paused = self._paused, None
        if link is not None:
            self.driver.resume_reading(link)

    def _streaming(self) -> bool:
        """The core would send blocking reserves as they are (``reserve.stream_link``), and
        that link is connected and idle."""
        link = stream_link(self.session, self.session.cluster.clock())
        return link is not None and self.driver.connected(link)

    def _plan(
        self,
        commands: Sequence[p.Command],
        last: p.Command,
        counted: Callable[[p.Command], None],
        stream: Callable[[Result], None] | None = None,
    ) -> Batch | None:
        """The core's run for the leading ``commands`` (each one counted), or None."""
        if self.counters.draining:
            return None
        batch = plan(
            self.session,
            commands,
            _NO_WAIT,
            stream=stream,
            max_reserves=self._max_reserves if stream is None else STREAM_RESERVES,
        )
        if batch is not None:
            for cmd in commands[: batch.size]:
                counted(cmd if cmd is not _NO_WAIT else last)
        return batch

    def abort(self) -> None:
        """The client is gone (or the proxy stops) while a batch ``start_batch`` began is out:
        end it now (its links that owe replies close, so the shard gives back its jobs)."""
        self.driver.abort()

    def half_close(self) -> None:
        """The client half-closed while a batch ``start_batch`` began is out: mirror it on the
        shard links that owe replies (a waiting reserve is answered ``TIMED_OUT`` by the shard,
        as beanstalkd answers a half-closed client, and the rest still runs)."""
        self.driver.half_close()

    def _maintenance_due(self) -> bool:
        due = self.session.next_timer()
        return due is not None and due <= self.session.cluster.clock()

    async def _maybe_maintain(self) -> None:
        if self._maintenance_due():
            await self._quietly(self.session.maintain())

    async def _execute(self, command: p.Command) -> bytes:
        if type(command) in _OBSERVERS:  # other clients' posted ``use`` first: what tubes exist
            await self.backend.posted.drained(self.backend.cluster.config.timeout)
        op = self._op(command)
        if isinstance(op, p.Reply):
            return op.encode()
        try:
            reply = await self.driver.run(op)
        except (RouterError, p.ProtocolError) as exc:
            return _encode(exc, command)
        return reply.encode()

    def _arm_timer(self) -> None:
        """Run ``maintain`` on time (prefetched jobs to give back) while the client is away."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.session.next_timer()
        if due is None or self._closed:
            return
        delay = max(0.0, due - self.session.cluster.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed and not self._lock.locked() and not self._busy:
            self._maintenance = asyncio.ensure_future(self._maintain())

    async def _maintain(self) -> None:
        async with self._lock:
            if self._maintenance_due() and not self._closed:
                await self._quietly(self.session.maintain())
            self._arm_timer()

    async def _quietly(self, op: Op[None]) -> None:
        try:
            await self.driver.run(op)
        except (RouterError, p.ProtocolError) as exc:
            log.debug("maintenance: %s", exc)

    async def burn_id(self) -> None:
        """A put ended in EXPECTED_CRLF: use up the id on the shard too."""
        async with self._lock:
            await self._quietly(self.session.burn_id())

    async def close(self) -> None:
        """The client is gone: every link closes, so each shard gives back its jobs now."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        task = self._maintenance
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.backend.sessions.discard(self)
        self.driver.close()


_OBSERVERS: Final = frozenset({p.Stats, p.ListTubes, p.StatsTube, p.PauseTube})
"""Commands whose answer depends on which tubes exist on the shards (what ``use`` changes)."""


def _probing(commands: Sequence[p.Command]) -> tuple[Sequence[p.Command], p.Command]:
    """``commands`` up to the first blocking reserve, which runs as ``reserve-with-timeout 0``
    (the seam's probe), and the last command as the client sent it."""
    for i, cmd in enumerate(commands):
        if p.may_wait(cmd):
            return [*commands[:i], _NO_WAIT], cmd
    return commands, commands[-1]


def _batch_failed(size: int, error: BaseException | None) -> list[bytes]:
    log.error("a batch of %d commands failed; answering INTERNAL_ERROR", size, exc_info=error)
    return [_INTERNAL_ERROR] * size


def _encode_all(results: list[Result], commands: Sequence[p.Command]) -> list[bytes]:
    return [_encode(r, cmd) for r, cmd in zip(results, commands, strict=False)]


def _encode(result: Result, cmd: p.Command) -> bytes:
    if isinstance(result, RouterError):
        log.debug("%r: %s", cmd, result)
    elif not isinstance(result, p.Reply):
        log.warning("%r: %s", cmd, result)  # a shard that answers nonsense
    return answer(result).encode()


class CoreBackend:
    """The shared state of one proxy process."""

    def __init__(
        self, config: ClusterConfig, unseen: UnseenLedger | None = None, alone: bool = True
    ) -> None:
        self.cluster = Cluster(config, unseen=unseen)
        if alone:
            # Every client goes through this process's sessions: what they put, release and
            # reserve keeps the shards' heads known (``core/heads.py``). Not in a worker of
            # ``proxy --workers`` (``alone`` False): the other workers' puts are not seen.
            self.cluster.heads = Heads(self.cluster.clock)
        self.pool = LinkPool()
        """Shard connections that closed sessions left idle, for the next ones."""
        self.posted = Posted()
        """The sessions' posted ``use`` replies still to come (``Send.posted``)."""
        self.sessions: set[CoreSession] = set()
        """The open client sessions."""
        self._registry: Registry | None = None
        self._prober: asyncio.Task[None] | None = None
        """Tries the shards marked down in the background (``_probe_down_shards``)."""
        self._sentinels: dict[str, tuple[AsyncDriver, asyncio.Task[None]]] = {}
        """Per shard: the sentinel's driver and task (``core/sentinel.py``)."""
        self._scanner: tuple[AsyncDriver, asyncio.Task[None]] | None = None
        """The background scan for jobs away from their consumer shards (``core/scan.py``)."""

    def tube_clients(self, tube: str) -> dict[str, StatValue]:
        """``current-using``, ``current-watching``, ``current-waiting`` of ``tube``: clients."""
        using = watching = waiting = 0
        for cs in self.sessions:
            using += cs.session.using == tube
            if tube in cs.session.watching:
                watching += 1
                waiting += cs.session.waiting  # its reserve waits at the shards
        return {"current-using": using, "current-watching": watching, "current-waiting": waiting}

    def clients_by_tube(self) -> dict[str, dict[str, StatValue]]:
        """``tube_clients`` of every tube a client uses or watches, in one pass over the
        sessions (the console's overview: not a pass per tube)."""
        counts: dict[str, list[int]] = {}  # tube -> [using, watching, waiting]
        for cs in self.sessions:
            session = cs.session
            counts.setdefault(session.using, [0, 0, 0])[0] += 1
            for tube in session.watching:
                c = counts.setdefault(tube, [0, 0, 0])
                c[1] += 1
                c[2] += session.waiting  # its reserve waits at the shards
        return {
            tube: {"current-using": u, "current-watching": w, "current-waiting": wt}
            for tube, (u, w, wt) in counts.items()
        }

    def session(self, counters: ProxyStats) -> CoreSession:
        if counters.metrics is not self._registry:
            self._register_metrics(counters.metrics)
        if self._prober is None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_down_shards())
            self.cluster.probing = True
            self._start_sentinels()
            self._start_scanner()
        return CoreSession(self, counters)  # it joins ``sessions`` until it closes

    def _start_sentinels(self) -> None:
        """One sentinel per shard (``core/sentinel.py``): a single-tube worker then reserves
        from its tube's owner alone, and a job found on an away shard wakes it."""
        cluster = self.cluster
        cluster.sentinels = True
        loop = asyncio.get_running_loop()

        def wanted(shard: str) -> None:
            entry = self._sentinels.get(shard)
            if entry is not None:
                loop.call_soon(entry[0].nudge)

        def uncovered(shard: str, tube: str) -> None:
            for cs in self.sessions:
                s = cs.session
                if s.nudgeable and tube in s.watching:
                    loop.call_soon(cs.driver.nudge)

        cluster.on_wanted = wanted
        cluster.on_uncovered = uncovered
        for name in list(cluster.shards):
            self._start_sentinel(name)

    def _start_sentinel(self, name: str) -> None:
        cluster = self.cluster
        session = Session(cluster, linger=0.0, counted=False)
        config = cluster.config
        driver = AsyncDriver(session, config.connect_timeout, config.timeout, cluster.clock)
        task = asyncio.get_running_loop().create_task(self._run_sentinel(name, driver))
        self._sentinels[name] = (driver, task)

    async def _run_sentinel(self, name: str, driver: AsyncDriver) -> None:
        """Run the sentinel of shard ``name`` until cancelled (restarted after an error)."""
        cluster = self.cluster
        while True:
            shard = cluster.shards.get(name)
            if shard is None:
                return
            try:
                await driver.run(sentinel(driver.session, shard))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: logged, and the sentinel starts again
                log.exception("the sentinel of shard %s failed", name)
            await asyncio.sleep(max(0.05, cluster.config.server_retry_timeout))

    def _start_scanner(self) -> None:
        """Scan now (the sessions that look for jobs before it ends scan themselves), then
        every ``stray_scan_interval`` seconds, and at once when a shard comes back up or the
        configuration is reloaded (``Cluster.on_scan_due``)."""
        cluster = self.cluster
        cluster.scanner = True
        wake = asyncio.Event()
        cluster.on_scan_due = wake.set
        session = Session(cluster, counted=False)
        config = cluster.config
        driver = AsyncDriver(session, config.connect_timeout, config.timeout, cluster.clock)
        task = asyncio.get_running_loop().create_task(self._run_scanner(driver, wake))
        self._scanner = (driver, task)

    async def _run_scanner(self, driver: AsyncDriver, wake: asyncio.Event) -> None:
        cluster = self.cluster
        while True:
            wake.clear()  # (set again while it scans: it scans again)
            try:
                await driver.run(scan(driver.session))
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: logged, and the next scan is on time
                log.exception("the scan for jobs away from their shards failed")
                cluster.scan_ended()
            await asyncio.sleep(0.05)  # (a shard that flaps does not make it spin)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, cluster.scan_next - cluster.clock())):
                    await wake.wait()

    async def _stop_sentinels(self) -> None:
        for driver, task in self._sentinels.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            driver.close()
        self._sentinels.clear()

    async def _probe_down_shards(self) -> None:
        """Every ``server_retry_timeout`` seconds, try each shard marked down (connect and
        ``list-tube-used``, within ``connect_timeout``): one that answers is up again for every
        session at once (``Cluster.probed``), so the jobs of a shard that restarted are seen
        within that time, not when its backoff (up to ``server_retry_timeout_max``) ends. A
        probe that fails changes nothing: requests keep their own backoff."""
        cluster = self.cluster
        while True:
            await asyncio.sleep(max(0.05, cluster.config.server_retry_timeout))
            down = cluster.down_shards()
            if down:
                ok = await asyncio.gather(*(self._answers(s) for s in down))
                for shard, up in zip(down, ok, strict=True):
                    if up:
                        log.info("shard %s answers again", shard.name)
                        cluster.probed(shard)

    async def _answers(self, shard: ShardState) -> bool:
        """``shard`` answers within ``connect_timeout`` (``driver.answers``)."""
        try:
            async with asyncio.timeout(self.cluster.config.connect_timeout):
                return await answers(shard.config.host, shard.config.port)
        except TimeoutError:
            return False

    def _register_metrics(self, registry: Registry) -> None:
        """The routing core's counters in the proxy's ``/metrics`` (collected when scraped)."""
        self._registry = registry
        m = self.cluster.metrics
        plain = [
            ("deliveries_total", "Jobs handed out by reserve.", "deliveries"),
            (
                "phantom_releases_total",
                "Jobs reserved on a client's behalf and given back without being handed out.",
                "give_backs",
            ),
            (
                "raced_total",
                "Jobs kept from a wait's race for the session's next reserve.",
                "raced",
            ),
            ("prefetch_hits_total", "Kept jobs handed out by a later reserve.", "prefetch_hits"),
            (
                "wait_cancels_total",
                "Blocking waits cancelled by closing their link.",
                "wait_cancels",
            ),
            (
                "unseen_reserves_total",
                "Reserves of jobs no client was handed, kept off their stats-job counters.",
                "unseen_reserves",
            ),
            ("sweep_retries_total", "Chosen jobs taken by someone else first.", "sweep_retries"),
            ("looks_total", "Shards asked for their heads by a cross-shard choice.", "looks"),
            (
                "looks_spared_total",
                "Shards a cross-shard choice did not ask: their heads were known.",
                "looks_spared",
            ),
            (
                "strays_found_total",
                "Jobs a sentinel found on a shard away from their tube's owner.",
                "strays_found",
            ),
            (
                "stray_scans_total",
                "Scans of the shards for jobs away from their tube's placed shards.",
                "scans",
            ),
            ("failovers_total", "Puts stored on a shard other than the tube's owner.", "failovers"),
            ("put_uncertain_total", "Puts whose reply was lost (fate unknown).", "put_uncertain"),
        ]
        families = [(registry.counter(name, help), attr) for name, help, attr in plain]
        link_failures = registry.counter(
            "shard_link_failures_total", "Shard connections that failed, by shard.", ["shard"]
        )
        away = registry.gauge(
            "jobs_away",
            "Jobs the last scan found on a shard where no placement puts their tube, by shard"
            " (consumers look there until they are gone; beanrouter rebalance moves them home).",
            ["shard"],
        )
        cluster = self.cluster

        def collect() -> None:
            for family, attr in families:
                family.set_total((), float(getattr(m, attr)))
            for shard, count in m.link_failures.items():
                link_failures.set_total((shard,), float(count))
            away.clear()
            for sc in cluster.config.servers:
                away.set(float(sum(cluster.found.get(sc.name, {}).values())), (sc.name,))

        registry.add_collector(collect)
        wakeup = registry.histogram(
            "reserve_wakeup_seconds",
            "Blocked reserves: from the acknowledgement of the put (through this proxy) of the"
            " job they got, plus its delay, to its hand-out.",
        )
        m.on_wakeup = wakeup.observe
        by_shard = registry.histogram(
            "reserve_wakeup_shard_seconds",
            "reserve_wakeup_seconds by the shard that delivered the job.",
            ["shard"],
        )
        m.on_shard_wakeup = lambda shard, seconds: by_shard.observe(seconds, (shard,))

    async def reload(self, config: ClusterConfig) -> None:
        self.cluster.reconfigure(config)
        if self._sentinels:  # the away shards of tubes may have changed
            await self._stop_sentinels()
            for name in list(self.cluster.shards):
                self._start_sentinel(name)

    def shard_errors(self) -> dict[str, str]:
        """The last link error the routing core saw on each shard ("" for none)."""
        return {name: s.health.last_error for name, s in self.cluster.shards.items()}

    def shard_health(self) -> list[tuple[str, bool]]:
        now = self.cluster.clock()
        return [
            (s.name, s.health.available(now))
            for s in self.cluster.shards.values()
            if s.name in {c.name for c in self.cluster.config.servers}
        ]

    def route(self, tube: str) -> dict[str, object]:
        return self.cluster.route(tube)

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        await self._stop_sentinels()
        if self._scanner is not None:
            driver, task = self._scanner
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            driver.close()
            self._scanner = None
        self.pool.close()


def make_backend(config: ClusterConfig) -> CoreBackend:
    """The backend for ``config`` (``seam.BackendFactory``); a worker of ``proxy --workers``
    shares its unseen counters with the others (``unseen.ledger_from_env``)."""
    alone = UNSEEN_ENV not in os.environ  # (set for the workers of ``proxy --workers``)
    return CoreBackend(config, unseen=ledger_from_env(), alone=alone)
