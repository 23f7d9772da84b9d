"""The console's view without a proxy: job ids through the core's ``Cluster.shard_of``, placement
through ``Cluster.route`` (shared with the backend's ``/route``), the clients counted in one pass,
and ``beanrouter status --config --watch`` keeping its state across refreshes."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest

from beanrouter.core import ids
from beanrouter.core.cluster import Cluster
from beanrouter.core.config import ClusterConfig, ShardConfig
from beanrouter.core.errors import JobIdError
from beanrouter.proxy.backend import CoreBackend
from beanrouter.proxy.console import jobs
from beanrouter.proxy.console.status import ConfigStatus
from beanrouter.proxy.console.view import ClusterView, _Probe


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(*ports: int) -> ClusterConfig:
    return ClusterConfig(
        servers=tuple(
            ShardConfig(name=f"s{i}", host="127.0.0.1", port=port, id=i + 3)
            for i, port in enumerate(ports)
        ),
        timeout=0.5,
    )


def test_job_ids_name_their_shard_as_the_core_says() -> None:
    config = _config(11301, 11302)
    view = ClusterView(config, route=Cluster(config).route)
    shard, local = view.shard_of(ids.encode(4, 17))
    assert (shard.name, local) == ("s1", 17)
    with pytest.raises(JobIdError) as core_error:
        Cluster(config).shard_of(ids.encode(9, 1))
    with pytest.raises(jobs.ActionError) as console_error:
        jobs._shard_of(view, ids.encode(9, 1))
    assert console_error.value.status == 404
    assert str(console_error.value) == str(core_error.value)
    view.reconfigure(_config(11301))  # the view's core follows its configuration
    with pytest.raises(JobIdError):
        view.shard_of(ids.encode(4, 17))


def test_the_backend_and_status_share_the_cores_route() -> None:
    config = _config(11301, 11302, 11303)
    backend = CoreBackend(config)
    status = ConfigStatus(config)
    for tube in ("default", "emails", "x" * 200):
        expected = Cluster(config).route(tube)
        assert backend.route(tube) == expected
        assert status.view.route(tube) == expected
        assert set(expected) >= {"owner", "preference", "puts_go_to", "consumers_watch"}


class _Client:
    """What ``clients_by_tube`` reads of a ``CoreSession``: its core ``session``."""

    def __init__(self, using: str, watching: list[str], waiting: bool) -> None:
        self.session = SimpleNamespace(using=using, watching=watching, waiting=waiting)


def _session(using: str, watching: list[str], waiting: bool) -> Any:
    return _Client(using, watching, waiting)


def test_clients_of_every_tube_in_one_pass() -> None:
    backend = CoreBackend(_config(11301))
    backend.sessions.update(
        {
            _session("default", ["default"], False),
            _session("a", ["a", "b"], True),
            _session("a", ["b"], True),
        }
    )
    by_tube = backend.clients_by_tube()
    for tube in ("default", "a", "b", "c"):
        expected = backend.tube_clients(tube)
        got = by_tube.get(tube, dict.fromkeys(expected, 0))
        assert got == expected, tube
    assert by_tube["b"] == {"current-using": 0, "current-watching": 2, "current-waiting": 2}


def test_the_overview_counts_the_clients_once_for_all_tubes() -> None:
    config = _config(11301, 11302)
    calls: list[int] = []

    def clients() -> dict[str, dict[str, int]]:
        calls.append(1)
        return {"t1": {"current-using": 1, "current-watching": 2, "current-waiting": 1}}

    view = ClusterView(config, route=Cluster(config).route, clients=clients)
    probes = {}
    for shard in config.servers:
        probe = _Probe()
        probe.tubes = {f"t{i}": {"current-jobs-ready": 1} for i in range(50)}
        probes[shard.name] = probe
    doc = view._build(probes)
    assert len(calls) == 1
    tubes = {t["name"]: t for t in doc["tubes"]}  # type: ignore[attr-defined]
    assert len(tubes) == 50
    assert (tubes["t1"]["using"], tubes["t1"]["watching"], tubes["t1"]["waiting"]) == (1, 2, 1)
    assert (tubes["t7"]["using"], tubes["t7"]["watching"], tubes["t7"]["waiting"]) == (0, 0, 0)


def test_status_watch_keeps_since_and_last_error_across_refreshes() -> None:
    source = ConfigStatus(_config(_dead_port()))
    first = source.overview()["shards"][0]
    time.sleep(0.05)
    second = source.overview()["shards"][0]
    assert not first["up"] and not second["up"]
    assert second["since"] == first["since"]  # down since the first look, not since this one
    assert second["error"] is not None and second["error"]["time"] > first["error"]["time"]
