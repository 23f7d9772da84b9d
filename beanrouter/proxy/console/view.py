"""The cluster as an operator sees it: shards, tubes and where they live (the console's data).

``ClusterView.overview()`` asks every shard for ``stats``, ``list-tubes`` and each tube's
``stats-tube`` (``shardio.ask``, all shards at once), and joins that with what the proxy knows:
placement (``route``: owner, failover shards, where puts go now), shard health as the routing core
sees it, and the clients watching or waiting on each tube. The same view serves the console
(``/api/overview``) and ``beanrouter status``, which builds it from a configuration file alone.

A shard is *up* when it answered this round and the routing core (when there is one) does not
mark it down; ``since`` is when the view first saw it in that state (the view's start, or the
last change). ``error`` is the last error seen on the shard, kept after it recovers, with when.
Jobs *away* are jobs of a tube found on a shard other than the tube's owner (puts that failed
over, or a tube whose owner changed with a reload).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Final

from ... import protocol as p
from ...core.cluster import Cluster
from ...core.config import ClusterConfig, ShardConfig
from .shardio import ShardError, ask, mapping, tube_list

__all__ = ["JOB_STATES", "MAX_TUBES", "ClusterView"]

JOB_STATES: Final = ("ready", "reserved", "delayed", "buried")
MAX_TUBES: Final = 1000
"""Tubes of one shard the view looks at (the rest are counted, not shown)."""
_BINLOG: Final = (
    "binlog-current-index",
    "binlog-oldest-index",
    "binlog-max-size",
    "binlog-records-written",
    "binlog-records-migrated",
)

Route = Callable[[str], Mapping[str, object]]
Health = Callable[[], list[tuple[str, bool]]]
Clients = Callable[[], Mapping[str, Mapping[str, p.StatValue]]]
Errors = Callable[[], Mapping[str, str]]


def _int(stats: Mapping[str, p.StatValue], key: str) -> int:
    value = stats.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _Probe:
    """What one round learned from one shard."""

    __slots__ = ("error", "stats", "truncated", "tubes")

    def __init__(self) -> None:
        self.stats: dict[str, p.StatValue] = {}
        self.tubes: dict[str, dict[str, p.StatValue]] = {}
        self.error: str | None = None
        self.truncated = 0


class ClusterView:
    """Builds the overview of a cluster (see the module docstring).

    Args:
        config: the cluster (shard addresses and ids).
        route: ``tube -> {"owner", "preference", "puts_go_to", "consumers_watch", ...}``.
        health: the routing core's ``(shard, up)`` (None: no core, only what the shards answer).
        clients: every tube's ``current-using/watching/waiting`` clients, by tube, counted in one
            pass over the clients (a tube left out has none; None: the shards' counts).
        errors: the routing core's last error per shard (None: only the view's own).
        timeout: seconds one shard has to answer a round.
        clock: wall-clock seconds (``since`` and error times are given in it).
        cluster: the routing core's ``Cluster`` of ``config``, whose ``shard_of`` names a job's
            shard (None: one is made from ``config``, and again on ``reconfigure``).
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        route: Route,
        health: Health | None = None,
        clients: Clients | None = None,
        errors: Errors | None = None,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
        min_age: float = 0.5,
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config
        self._cluster = cluster if cluster is not None else Cluster(config)
        self.route = route
        self.health = health
        self.clients = clients
        self.errors = errors
        self.timeout = timeout
        self.clock = clock
        self.min_age = min_age
        self.started = clock()
        self._state: dict[str, tuple[bool, float]] = {}
        self._last_error: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()
        self._cached: tuple[float, dict[str, object]] | None = None

    def shard(self, name: str) -> ShardConfig | None:
        return next((s for s in self.config.servers if s.name == name), None)

    def shard_of(self, job_id: int) -> tuple[ShardConfig, int]:
        """The shard and local id of a global job id (the core's ``Cluster.shard_of``).

        Raises:
            JobIdError: the id names no shard of the cluster.
        """
        shard, local = self._cluster.shard_of(job_id)
        return shard.config, local

    def reconfigure(self, config: ClusterConfig, cluster: Cluster | None = None) -> None:
        """Look at the shards of ``config`` from now on."""
        self.config = config
        self._cluster = cluster if cluster is not None else Cluster(config)
        self._cached = None

    def invalidate(self) -> None:
        """The next ``overview`` asks the shards again (an action changed them)."""
        self._cached = None

    async def overview(self) -> dict[str, object]:
        """The whole view (cached for ``min_age`` seconds: many pages polling cost one round)."""
        async with self._lock:
            now = self.clock()
            if self._cached is not None and now - self._cached[0] < self.min_age:
                return self._cached[1]
            probes = await asyncio.gather(*(self._probe(s) for s in self.config.servers))
            doc = self._build(dict(zip((s.name for s in self.config.servers), probes, strict=True)))
            self._cached = (self.clock(), doc)
            return doc

    async def _probe(self, shard: ShardConfig) -> _Probe:
        probe = _Probe()
        try:
            stats, tubes = await ask(
                shard.host, shard.port, [p.Stats(), p.ListTubes()], self.timeout
            )
            probe.stats = mapping(stats)
            names = tube_list(tubes)
            probe.truncated = max(0, len(names) - MAX_TUBES)
            names = names[:MAX_TUBES]
            if names:
                replies = await ask(
                    shard.host, shard.port, [p.StatsTube(t) for t in names], self.timeout
                )
                for name, reply in zip(names, replies, strict=True):
                    if isinstance(reply, p.Ok):  # (NOT_FOUND: the tube went away meanwhile)
                        probe.tubes[name] = mapping(reply)
        except ShardError as exc:
            probe.error = str(exc)
        return probe

    def _build(self, probes: dict[str, _Probe]) -> dict[str, object]:
        now = self.clock()
        core = dict(self.health()) if self.health is not None else {}
        core_errors = dict(self.errors()) if self.errors is not None else {}
        shards: list[dict[str, object]] = []
        for sc in self.config.servers:
            probe = probes[sc.name]
            core_up = core.get(sc.name)
            up = probe.error is None and core_up is not False
            was = self._state.get(sc.name)
            if was is None or was[0] != up:
                self._state[sc.name] = (up, now if was is not None else self.started)
            if probe.error is not None:
                self._last_error[sc.name] = (probe.error, now)
            elif core_errors.get(sc.name) and sc.name not in self._last_error:
                self._last_error[sc.name] = (core_errors[sc.name], now)
            shards.append(self._shard_doc(sc, probe, up, core_up))
        clients = self.clients() if self.clients is not None else None
        tubes = self._tubes(probes, clients)
        totals = {state: sum(t["jobs"][state] for t in tubes) for state in JOB_STATES}  # type: ignore[index]
        return {
            "time": now,
            "shards": shards,
            "shards_up": sum(1 for s in shards if s["up"]),
            "tubes": tubes,
            "jobs": totals,
            "away": sum(int(t["away"]) for t in tubes),  # type: ignore[call-overload]
        }

    def _shard_doc(
        self, sc: ShardConfig, probe: _Probe, up: bool, core_up: bool | None
    ) -> dict[str, object]:
        st = probe.stats
        error = self._last_error.get(sc.name)
        binlog = None
        if _int(st, "binlog-current-index") > 0 or _int(st, "binlog-records-written") > 0:
            binlog = {key[len("binlog-") :]: _int(st, key) for key in _BINLOG}
        return {
            "name": sc.name,
            "id": sc.id,
            "address": sc.address,
            "up": up,
            "since": self._state[sc.name][1],
            "answers": probe.error is None,
            "core_up": core_up,
            "error": None if error is None else {"message": error[0], "time": error[1]},
            "jobs": {state: _int(st, f"current-jobs-{state}") for state in JOB_STATES},
            "urgent": _int(st, "current-jobs-urgent"),
            "total_jobs": _int(st, "total-jobs"),
            "tubes": len(probe.tubes) + probe.truncated if probe.error is None else None,
            "tubes_not_shown": probe.truncated,
            "connections": _int(st, "current-connections"),
            "uptime": _int(st, "uptime"),
            "version": str(st.get("version", "")),
            "binlog": binlog,
        }

    def _tubes(
        self,
        probes: dict[str, _Probe],
        clients_by_tube: Mapping[str, Mapping[str, p.StatValue]] | None,
    ) -> list[dict[str, object]]:
        names = sorted({name for probe in probes.values() for name in probe.tubes})
        out: list[dict[str, object]] = []
        for name in names:
            route = self.route(name)
            pref = route.get("preference")
            preference = [str(x) for x in pref] if isinstance(pref, list | tuple) else []
            owner = str(route.get("owner", preference[0] if preference else ""))
            cons = route.get("consumers_watch")
            consumers = [str(x) for x in cons] if isinstance(cons, list | tuple) else preference
            per_shard: dict[str, dict[str, int]] = {}
            jobs = dict.fromkeys(JOB_STATES, 0)
            paused = False
            pause_left = 0
            shard_clients = {"using": 0, "watching": 0, "waiting": 0}
            away = 0
            for shard, probe in probes.items():
                st = probe.tubes.get(name)
                if st is None:
                    continue
                counts = {state: _int(st, f"current-jobs-{state}") for state in JOB_STATES}
                per_shard[shard] = counts
                for state, n in counts.items():
                    jobs[state] += n
                if shard != owner:
                    away += sum(counts.values())
                left = _int(st, "pause-time-left")
                if _int(st, "pause") > 0 and left > 0:
                    paused = True
                    pause_left = max(pause_left, left)
                for key in shard_clients:
                    shard_clients[key] += _int(st, f"current-{key}")
            if clients_by_tube is not None:
                c = clients_by_tube.get(name, {})
                clients = {key: _int(c, f"current-{key}") for key in shard_clients}
            else:
                clients = shard_clients
            out.append(
                {
                    "name": name,
                    "owner": owner,
                    "failover": preference[1:],
                    "puts_go_to": route.get("puts_go_to"),
                    "consumers": consumers,
                    "jobs": jobs,
                    "per_shard": per_shard,
                    "paused": paused,
                    "pause_left": pause_left,
                    "away": away,
                    **clients,
                }
            )
        return out
