"""ProxyStats: the proxy process's own counters, the part of ``stats`` one beanstalkd would show.

A client counting its own commands through the proxy must see what one server shows, so the
``cmd-*`` counters, connection counts, producers/workers/waiting, ``pid``, ``uptime``, ``id`` and
rusage are the proxy's, counted here by the frame; the routing core adds the job and tube counts
of the shards (``fields()`` gives it the proxy's part). ``ClientCounters`` applies beanstalkd's
rules of *when* something counts to one connection's events, the same rules the bundled server's
dispatcher follows (``beanrouter/server/dispatch.py``):

- a command counts when it parses, before it runs (so ``stats`` includes itself);
- a put counts at its line (``PutStarted``), once, even when its body is refused later;
  ``Rejected.counted`` names a counter bad input still bumps (garbage after a put's numbers,
  a pause-tube name too long);
- a connection is a producer from its first put line that takes a job id (a stored put, or one
  ending in EXPECTED_CRLF), a worker from its first reserve or reserve-with-timeout, or its first
  reserve-job that reserves a job; ``current-waiting`` counts connections inside a reserve.

The drain flag (SIGUSR1) lives here too: ``draining`` set means the core answers puts DRAINING.
Invariant: current-connections/producers/workers/waiting equal the number of open
``ClientCounters`` with the flag set (each is cleared exactly once, by ``disconnect``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from .. import protocol as p
from ..protocol import StatValue
from ..server.engine import OP_COUNTER_NAMES
from ..server.procinfo import ProcInfo
from .metrics import Registry

__all__ = ["COMMAND_NAMES", "ClientCounters", "ProxyStats"]

COMMAND_NAMES: Final[dict[type[p.Command], str]] = {
    cls: (cls.stat[4:] if cls.stat is not None else "")
    for cls in p.COMMAND_TYPES
    if cls.stat is not None
}
COMMAND_NAMES.update({p.ReserveJob: "reserve-job", p.KickJob: "kick-job", p.Quit: "quit"})
"""The wire verb of each command (the ``command`` label of ``beanrouter_commands_total``)."""


class ProxyStats:
    """Counters of one proxy process (shared by all its connections).

    Args:
        max_job_size: the proxy's ``-z`` (shown as ``max-job-size``).
        procinfo: pid, version, id, uname facts and rusage (``ProcInfo.current()`` by default).
        clock: monotonic seconds, for ``uptime``.
    """

    def __init__(
        self,
        *,
        max_job_size: int = p.DEFAULT_MAX_JOB_SIZE,
        procinfo: ProcInfo | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_job_size = max_job_size
        self.procinfo = procinfo if procinfo is not None else ProcInfo.current()
        self.clock = clock
        self.started_at = clock()
        self.op_counts: dict[str, int] = dict.fromkeys(OP_COUNTER_NAMES, 0)
        """``cmd-*`` counters in ``stats`` order."""
        self.current_connections = 0
        self.total_connections = 0
        self.producers = 0
        self.workers = 0
        self.waiting = 0
        self.draining = False
        """SIGUSR1: puts answer DRAINING (the core reads this); ``stats`` shows ``draining``."""
        self.commands: dict[str, int] = {}
        """Every command run, by wire verb (including reserve-job, kick-job, quit)."""
        self.rejected: dict[str, int] = {}
        """Input answered without running a command, by reply word (BAD_FORMAT…)."""
        self.metrics = Registry()
        """The process's metrics registry (``/metrics``); the core adds its own families."""
        self._register_metrics()

    def uptime(self) -> int:
        """Whole seconds since the proxy started."""
        return int(self.clock() - self.started_at)

    def fields(self) -> dict[str, StatValue]:
        """The proxy's own ``stats`` fields, by beanstalkd's names (``version`` unquoted: the
        formatter quotes it). The core adds the shards' job, tube and binlog fields and puts all
        of them in beanstalkd's order."""
        pi = self.procinfo
        utime, stime = pi.rusage()
        s: dict[str, StatValue] = dict(self.op_counts)
        s["max-job-size"] = self.max_job_size
        s["current-connections"] = self.current_connections
        s["current-producers"] = self.producers
        s["current-workers"] = self.workers
        s["current-waiting"] = self.waiting
        s["total-connections"] = self.total_connections
        s["pid"] = pi.pid
        s["version"] = pi.version
        s["rusage-utime"] = utime
        s["rusage-stime"] = stime
        s["uptime"] = self.uptime()
        s["draining"] = self.draining
        s["id"] = pi.instance_id
        s["hostname"] = pi.hostname
        s["os"] = pi.os
        s["platform"] = pi.platform
        return s

    def connect(self) -> ClientCounters:
        """A client connected: its counters."""
        self.current_connections += 1
        self.total_connections += 1
        return ClientCounters(self)

    def _register_metrics(self) -> None:
        m = self.metrics
        commands = m.counter("commands_total", "Client commands run, by command.", ["command"])
        rejected = m.counter(
            "client_errors_total",
            "Client input answered with an error without running a command, by reply.",
            ["reply"],
        )
        connections = m.counter("connections_total", "Client connections accepted.")
        current = m.gauge("connections", "Client connections open now.")
        waiting = m.gauge("clients_waiting", "Clients inside a reserve now.")
        draining = m.gauge("draining", "1 while the proxy refuses puts (SIGUSR1).")
        uptime = m.gauge("uptime_seconds", "Seconds since the proxy started.")
        self.reserve_seconds = m.histogram(
            "reserve_duration_seconds", "Time from a client's reserve to its reply."
        )

        def collect() -> None:
            for name, n in self.commands.items():
                commands.set_total((name,), n)
            for word, n in self.rejected.items():
                rejected.set_total((word,), n)
            connections.set_total((), self.total_connections)
            current.set(self.current_connections)
            waiting.set(self.waiting)
            draining.set(1 if self.draining else 0)
            uptime.set(self.clock() - self.started_at)

        m.add_collector(collect)


_PUT: Final = p.Put
_RESERVES: Final = (p.Reserve, p.ReserveWithTimeout)
_RESERVED_WORD: Final = b"RESERVED "


class ClientCounters:
    """One connection's share of ``ProxyStats``: call ``event`` for every event the reader
    produces (before running it), ``replied`` after a command's reply, ``disconnect`` once."""

    __slots__ = (
        "_put_allocated",
        "_put_started",
        "_reserve_started",
        "_waiting",
        "producer",
        "stats",
        "worker",
    )

    def __init__(self, stats: ProxyStats) -> None:
        self.stats = stats
        self.producer = False
        self.worker = False
        self._put_started = False
        self._put_allocated = False
        self._waiting = 0
        """Reserves counted and not answered yet (a batch counts several before any reply);
        the connection counts once in ``current-waiting`` while there is one."""
        self._reserve_started = 0.0

    def _mark_producer(self) -> None:
        if not self.producer:
            self.producer = True
            self.stats.producers += 1

    def _mark_worker(self) -> None:
        if not self.worker:
            self.worker = True
            self.stats.workers += 1

    def command(self, cmd: p.Command) -> None:
        """``cmd`` parsed and is about to run."""
        stats = self.stats
        cls = type(cmd)
        stat = cls.stat
        if stat is not None and not self._put_started:
            stats.op_counts[stat] += 1
        self._put_started = self._put_allocated = False
        name = COMMAND_NAMES[cls]
        stats.commands[name] = stats.commands.get(name, 0) + 1
        if cls is _PUT:
            self._mark_producer()
        elif cls in _RESERVES:
            self._mark_worker()
            if not self._waiting:
                stats.waiting += 1
                self._reserve_started = stats.clock()
            self._waiting += 1

    def put_started(self, event: p.PutStarted) -> None:
        """A put line parsed; its body is still on the way."""
        self.stats.op_counts["cmd-put"] += 1
        self._put_started = True
        self._put_allocated = event.allocates_id
        if event.allocates_id:
            self._mark_producer()

    def rejected(self, event: p.Rejected) -> bool:
        """Input answered with ``event.reply`` without running a command. Returns True when
        beanstalkd used up a job id on it (a put ending in EXPECTED_CRLF, whose id was taken at
        its line, now or at the ``PutStarted`` before)."""
        stats = self.stats
        burned = self._put_allocated
        if not self._put_started:
            if event.counted is not None:
                stats.op_counts[event.counted] += 1
            if event.burns_id:
                self._mark_producer()
                burned = True
        self._put_started = self._put_allocated = False
        word = event.reply.word
        stats.rejected[word] = stats.rejected.get(word, 0) + 1
        return burned

    def abandoned(self) -> bool:
        """The connection ends in the middle of a put's body: True when beanstalkd had already
        used up a job id on it at its line (the id is gone, as for EXPECTED_CRLF)."""
        burned = self._put_allocated
        self._put_started = self._put_allocated = False
        return burned

    def replied(self, cmd: p.Command, reply: bytes | None) -> None:
        """``cmd`` finished with ``reply`` (None: it was cancelled, as a reserve at EOF). The
        commands of a batch are all counted before any is answered: only a reserve's reply ends
        its wait."""
        cls = type(cmd)
        if cls in _RESERVES:
            if self._waiting:
                self._waiting -= 1
                stats = self.stats
                if not self._waiting:
                    stats.waiting -= 1
                if reply is not None:
                    stats.reserve_seconds.observe(stats.clock() - self._reserve_started)
        elif cls is p.ReserveJob and reply is not None and reply.startswith(_RESERVED_WORD):
            self._mark_worker()

    def disconnect(self) -> None:
        """The connection is gone: leave every current-* count."""
        stats = self.stats
        stats.current_connections -= 1
        if self.producer:
            self.producer = False
            stats.producers -= 1
        if self.worker:
            self.worker = False
            stats.workers -= 1
        if self._waiting:
            self._waiting = 0
            stats.waiting -= 1
